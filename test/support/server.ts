/**
 * A real server on loopback for a test file: port 0, a fresh data folder, quiet logs, the given
 * environment on top; resolves once /ready says the models are loaded.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/server/config.ts";
import { type RunningServer, startServer } from "../../src/server/main.ts";

export interface TestServer {
  server: RunningServer;
  url: string;
  dataDir: string;
  close(): Promise<void>;
}

export async function startTestServer(env: Record<string, string>): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "maskwatch-test-server-"));
  const server = await startServer(
    loadConfig({ PORT: "0", HOST: "127.0.0.1", MASKWATCH_DATA_DIR: dataDir, LOG_LEVEL: "silent", ...env }),
  );
  for (let i = 0; i < 100; i++) {
    if ((await fetch(`${server.url}/ready`)).status === 200) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    server,
    url: server.url,
    dataDir,
    async close() {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
