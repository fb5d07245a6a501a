import { mkdir } from "node:fs/promises";
import type { FastifyInstance } from "fastify";
import { openDatabase } from "../store/db.ts";
import { InferencePool } from "../vision/pool.ts";
import { buildApp } from "./app.ts";
import { type Config, describeConfig } from "./config.ts";
import type { ServerContext } from "./context.ts";
import { Metrics } from "./metrics.ts";

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  /** In-flight requests finish, then the pool and the database close. */
  close(): Promise<void>;
}

/** Opens the database, starts the inference workers, and listens. */
export async function startServer(config: Config): Promise<RunningServer> {
  await mkdir(config.dataDir, { recursive: true });
  const db = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
  const pool = new InferencePool({
    size: config.workers || undefined,
    threadsPerWorker: config.threadsPerWorker,
    maxQueue: config.maxQueue,
    limits: { maxBytes: config.maxUploadBytes, maxPixels: config.maxPixels },
    preload: [config.detector],
  });
  const ctx: ServerContext = { config, pool, db, metrics: new Metrics() };
  const app = await buildApp(ctx);
  app.log.info({ config: describeConfig(config) }, "starting");
  // Listen first: /health answers while the models load; /ready says when they have.
  const url = await app.listen({ port: config.port, host: config.host });
  pool.start().then(
    () => app.log.info("models loaded"),
    (err) => app.log.error({ err }, "the inference workers failed to start"),
  );
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      await app.close();
      await pool.close();
      await db.close();
    })();
    return closing;
  };
  return { app, url, close };
}
