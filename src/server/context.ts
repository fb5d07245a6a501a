import type { AlertService } from "../alerts/service.ts";
import type { Cluster } from "../cluster/index.ts";
import type { JobService } from "../jobs/service.ts";
import type { Database } from "../store/db.ts";
import type { UserRole } from "../store/users.ts";
import type { StreamManager } from "../streams/manager.ts";
import type { InferencePool } from "../vision/pool.ts";
import type { Config } from "./config.ts";
import type { Metrics } from "./metrics.ts";
import type { RuntimeSettings } from "./settings.ts";

/** What the routes share: built once in main.ts, passed to each plugin. */
export interface ServerContext {
  config: Config;
  pool: InferencePool;
  db: Database;
  metrics: Metrics;
  streams: StreamManager;
  /** Monitoring and retention settings as changed from the console (see settings.ts). */
  settings: RuntimeSettings;
  /** Batch jobs: submit, cancel, and the queue worker (BullMQ with REDIS_URL, else in-process). */
  jobs: JobService;
  /** Webhooks, compliance rules and the daily summary. */
  alerts: AlertService;
  /** Set when REDIS_URL makes this process one replica of several. */
  cluster?: Cluster;
}

declare module "fastify" {
  interface FastifyRequest {
    /** The caller's key, once authenticated (undefined with auth off). */
    apiKey?: { id: string; name: string; scopes: string[] };
    /** The console user, when the request came with a session cookie. */
    user?: { id: string; username: string; role: UserRole };
    session?: { id: string; csrfToken: string };
  }
}
