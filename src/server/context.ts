import type { Database } from "../store/db.ts";
import type { StreamManager } from "../streams/manager.ts";
import type { InferencePool } from "../vision/pool.ts";
import type { Config } from "./config.ts";
import type { Metrics } from "./metrics.ts";

/** What the routes share: built once in main.ts, passed to each plugin. */
export interface ServerContext {
  config: Config;
  pool: InferencePool;
  db: Database;
  metrics: Metrics;
  streams: StreamManager;
}

declare module "fastify" {
  interface FastifyRequest {
    /** The caller's key, once authenticated (undefined with auth off). */
    apiKey?: { id: string; name: string; scopes: string[] };
  }
}
