/**
 * Running the service as an operator does: configuration, the `serve` process and its
 * shutdown, the bounded queue, CORS, log rotation.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { ConfigError, describeConfig, loadConfig } from "../src/server/config.ts";
import { RotatingFile } from "../src/server/log-file.ts";
import { type RunningServer, startServer } from "../src/server/main.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { REPO, sharedPath } from "./support/paths.ts";

let dir = "";
let big: Uint8Array<ArrayBuffer>;
let skip: string | null = null;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-ops-"));
  const file = sharedPath("datasets/dlib-faces/2008_002506.jpg");
  skip = file ? await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]) : "dlib-faces is absent";
  if (file) big = new Uint8Array(await sharp(file).resize(1920, 1080, { fit: "cover" }).jpeg().toBuffer());
});
after(() => rm(dir, { recursive: true, force: true }));

test("configuration: defaults, every bad variable named, secrets hidden", () => {
  const c = loadConfig({});
  assert.equal(c.port, 8080);
  assert.equal(c.auth, true);
  assert.equal(
    c.sourcePolicy.fileRoot,
    join(c.dataDir, "media"),
    "file sources under the data folder by default",
  );
  assert.throws(
    () =>
      loadConfig({
        PORT: "99999",
        LOG_LEVEL: "loud",
        DATABASE_URL: "mysql://x",
        MASKWATCH_AUTH: "maybe",
        APP_TOKEN: "short",
        MASKWATCH_DETECTOR: "toString",
        MASKWATCH_INPUT_SIZE: "5",
        MASKWATCH_REQUEST_TIMEOUT_MS: "0",
        MASKWATCH_BROWSER_SOURCES: "0",
      }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      for (const name of [
        "PORT",
        "LOG_LEVEL",
        "DATABASE_URL",
        "MASKWATCH_AUTH",
        "APP_TOKEN",
        "MASKWATCH_DETECTOR",
        "MASKWATCH_INPUT_SIZE",
        "MASKWATCH_REQUEST_TIMEOUT_MS",
        "MASKWATCH_BROWSER_SOURCES",
      ]) {
        assert.ok(
          e.problems.some((p) => p.startsWith(name)),
          `${name} named in ${e.message}`,
        );
      }
      return true;
    },
  );
  const shown = JSON.stringify(
    describeConfig(
      loadConfig({
        MASKWATCH_API_KEY: "secret-secret-secret-1",
        DATABASE_URL: "postgres://u:hunter2@db:5432/mw",
      }),
    ),
  );
  assert.ok(!shown.includes("secret-secret") && !shown.includes("hunter2"), shown);
  assert.equal(loadConfig({ APP_TOKEN: "old-service-token-123" }).apiKey, "old-service-token-123");
});

test("`maskwatch serve` reads .env, finishes a request in flight on SIGTERM, exits 0", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const work = await mkdtemp(join(dir, "serve-"));
  await writeFile(
    join(work, ".env"),
    "PORT=18931\nHOST=127.0.0.1\nMASKWATCH_API_KEY=dotenv-key-0123456789\nLOG_LEVEL=warn\n",
  );
  const child = spawn(process.execPath, [join(REPO, "bin/maskwatch.js"), "serve"], {
    cwd: work,
    env: { ...process.env, MASKWATCH_DATA_DIR: join(work, "data"), MASKWATCH_WORKERS: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c) => {
    stderr += c;
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const base = "http://127.0.0.1:18931";
  for (let i = 0; i < 150; i++) {
    const r = await fetch(`${base}/ready`).catch(() => null);
    if (r?.status === 200) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const inFlight = fetch(`${base}/api/v1/detect`, {
    method: "POST",
    headers: { "content-type": "image/jpeg", "x-api-key": "dotenv-key-0123456789" },
    body: big,
  });
  await new Promise((r) => setTimeout(r, 150));
  child.kill("SIGTERM");
  const res = await inFlight;
  assert.equal(res.status, 200, stderr);
  assert.equal(((await res.json()) as { faces: unknown[] }).faces.length, 3);
  assert.equal(await exited, 0, stderr);
  assert.ok(
    existsSync(join(work, "data", "maskwatch.db")),
    "the SQLite file is where MASKWATCH_DATA_DIR says",
  );
});

test("a full queue answers 503 with Retry-After; CORS only for listed origins", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  let server: RunningServer | undefined;
  try {
    server = await startServer(
      loadConfig({
        PORT: "0",
        HOST: "127.0.0.1",
        MASKWATCH_DATA_DIR: join(dir, "queue"),
        MASKWATCH_AUTH: "off",
        MASKWATCH_WORKERS: "1",
        MASKWATCH_QUEUE: "1",
        MASKWATCH_CORS_ORIGINS: "https://console.example.com",
        LOG_LEVEL: "silent",
      }),
    );
    for (let i = 0; i < 150; i++) {
      if ((await fetch(`${server.url}/ready`)).status === 200) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        fetch(`${server!.url}/api/v1/detect`, {
          method: "POST",
          headers: { "content-type": "image/jpeg" },
          body: big,
        }),
      ),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses.filter((s) => s === 200).length, 2, `statuses ${statuses}`);
    const busy = results.filter((r) => r.status === 503);
    assert.equal(busy.length, 4);
    assert.ok(Number(busy[0].headers.get("retry-after")) >= 1);
    assert.equal(((await busy[0].json()) as { code: string }).code, "queue_full");

    const allowed = await fetch(`${server.url}/health`, {
      headers: { origin: "https://console.example.com" },
    });
    assert.equal(allowed.headers.get("access-control-allow-origin"), "https://console.example.com");
    const other = await fetch(`${server.url}/health`, { headers: { origin: "https://evil.example.com" } });
    assert.equal(other.headers.get("access-control-allow-origin"), null);
  } finally {
    await server?.close();
  }
});

test("the log file rotates by size and keeps the newest lines", async () => {
  const file = join(dir, "app.log");
  const log = new RotatingFile(file, 100, 2);
  for (let i = 0; i < 12; i++) log.write(`${JSON.stringify({ line: i, pad: "x".repeat(20) })}\n`);
  await new Promise<void>((resolve) => log.end(resolve));
  assert.ok(existsSync(`${file}.1`) && existsSync(`${file}.2`) && !existsSync(`${file}.3`));
  const current = (await readFile(file, "utf8")).trim().split("\n");
  assert.equal(JSON.parse(current[current.length - 1]).line, 11);
  for (const f of [file, `${file}.1`, `${file}.2`]) assert.ok((await readFile(f)).length <= 100);
});
