import { mkdir } from "node:fs/promises";
import { hostname } from "node:os";
import type { FastifyInstance } from "fastify";
import { AlertService } from "../alerts/service.ts";
import { joinCluster } from "../cluster/index.ts";
import { DEFAULT_MAX_IMAGES, uncompressedLimit } from "../jobs/inputs.ts";
import { JobService } from "../jobs/service.ts";
import { openDatabase } from "../store/db.ts";
import { pruneEvents } from "../store/retention.ts";
import { deleteExpiredSessions } from "../store/sessions.ts";
import { StreamManager } from "../streams/manager.ts";
import { InferencePool } from "../vision/pool.ts";
import { ensureAdmin } from "./accounts.ts";
import { buildApp } from "./app.ts";
import { type Config, describeConfig } from "./config.ts";
import type { ServerContext } from "./context.ts";
import { Metrics } from "./metrics.ts";
import { applySettings, loadSettings } from "./settings.ts";

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
  // With REDIS_URL this process is one replica of several: fail now if Redis cannot be reached.
  const cluster = config.redisUrl
    ? await joinCluster(config.redisUrl, { leaseMs: config.leaseMs }).catch(async (err) => {
        await db.close();
        throw err;
      })
    : undefined;
  const pool = new InferencePool({
    size: config.workers || undefined,
    threadsPerWorker: config.threadsPerWorker,
    inputSize: config.inputSize,
    maxQueue: config.maxQueue,
    limits: { maxBytes: config.maxUploadBytes, maxPixels: config.maxPixels },
    preload: [config.detector],
  });
  const streams = new StreamManager({
    db,
    analyze: (image, options) => pool.analyze({ raw: image }, options),
    settings: {
      detector: config.stream.detector,
      window: config.stream.window,
      cooldownMs: config.stream.cooldownSeconds * 1000,
      snapshots: config.stream.snapshots,
      blur: config.stream.blur,
      blurOthers: config.stream.blurOthers,
      dataDir: config.dataDir,
      fps: config.stream.fps,
      maxWidth: config.stream.maxWidth,
    },
    defaultSource: config.source,
    defaultSourceLoop: config.sourceLoop,
    policy: config.sourcePolicy,
    leases: cluster?.leases,
  });
  await cluster?.attach(streams.bus);
  const alerts = new AlertService(db, streams.bus, config.alerts, () => cluster?.relaying() ?? false);
  const metrics = new Metrics();
  metrics.observeStreams(streams.bus, () => cluster?.relaying() ?? false);
  const settings = await loadSettings(db, config);
  applySettings(settings, streams);
  // A change saved on any replica reaches the monitors of every one.
  await cluster?.onSettingsChanged(() => {
    loadSettings(db, config).then(
      (fresh) => applySettings(Object.assign(settings, fresh), streams),
      () => {},
    );
  });
  const admin = await ensureAdmin(db, config);
  const jobs = new JobService({
    db,
    pool,
    redisUrl: config.redisUrl,
    defaultDetector: config.detector,
    limits: {
      maxBytes: config.jobs.maxBytes,
      maxImages: DEFAULT_MAX_IMAGES,
      maxUncompressedBytes: uncompressedLimit(config.jobs.maxBytes),
      maxImageBytes: config.maxUploadBytes,
    },
  });
  const ctx: ServerContext = {
    config,
    pool,
    db,
    metrics,
    streams,
    settings,
    jobs,
    alerts,
    cluster,
  };
  const app = await buildApp(ctx);
  app.log.info({ config: describeConfig(config) }, "starting");
  if (admin.created)
    app.log.info({ user: admin.created }, "console admin made from MASKWATCH_ADMIN_PASSWORD");
  if (admin.setupCode)
    app.log.warn(
      { setupCode: admin.setupCode },
      `no console users yet: open the console and make the admin with setup code ${admin.setupCode}`,
    );
  let closing: Promise<void> | undefined;
  // Listen first: /health answers while the models load; /ready says when they have.
  const url = await app.listen({ port: config.port, host: config.host });
  // The code is what a new user looks for first: a plain line, not only inside a JSON log line.
  if (admin.setupCode && config.logLevel !== "silent")
    process.stderr.write(
      `\n  Maskwatch setup code: ${admin.setupCode}\n  Open ${url.replace("0.0.0.0", "localhost")}/ and enter it to make the first admin.\n\n`,
    );
  if (cluster)
    cluster.leases.address = (config.advertiseUrl ?? advertisedUrl(config, url)).replace(/\/+$/, "");
  pool.start().then(
    () => app.log.info("models loaded"),
    // Closing while the workers load ends them on purpose.
    (err) => closing || app.log.error({ err }, "the inference workers failed to start"),
  );
  // Sources left running resume; a bad one reports in its status and never stops the server.
  await streams.init().catch((err) => app.log.error({ err }, "sources could not be resumed"));
  await jobs.start(app.log).catch((err) => app.log.error({ err }, "the batch job worker failed to start"));
  alerts.start(app.log);
  const prune = async () => {
    await deleteExpiredSessions(db).catch((err) => app.log.error({ err }, "expired sessions not removed"));
    if (!settings.retention_days) return;
    try {
      const r = await pruneEvents(db, config.dataDir, settings.retention_days);
      if (r.deleted) app.log.info(r, "retention: old events deleted");
    } catch (err) {
      app.log.error({ err }, "retention failed");
    }
  };
  void prune();
  const retention = setInterval(prune, 3_600_000);
  retention.unref();
  const close = () => {
    closing ??= (async () => {
      clearInterval(retention);
      await streams.close();
      await alerts.close();
      await app.close();
      await jobs.close();
      await cluster?.close();
      await pool.close({ timeoutMs: config.requestTimeoutMs });
      await db.close();
    })();
    return closing;
  };
  return { app, url, close };
}

/** How other replicas reach this one: the listening URL, or the host name when bound to every interface. */
function advertisedUrl(config: Config, url: string): string {
  if (!["0.0.0.0", "::", ""].includes(config.host)) return url;
  return `http://${hostname()}:${new URL(url).port}`;
}
