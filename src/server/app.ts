import { randomUUID } from "node:crypto";
import cookie from "@fastify/cookie";
import cors from "@fastify/cors";
import helmet from "@fastify/helmet";
import multipart from "@fastify/multipart";
import rateLimit from "@fastify/rate-limit";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import websocket from "@fastify/websocket";
import Fastify, { type FastifyInstance } from "fastify";
import { registerAuth } from "./auth.ts";
import type { ServerContext } from "./context.ts";
import { redactSecrets, registerErrorHandler } from "./errors.ts";
import "./multipart-fix.ts";
import { registerAudit } from "./audit.ts";
import { RotatingFile, tee } from "./log-file.ts";
import { alertRoutes } from "./routes/alerts.ts";
import { authRoutes } from "./routes/auth.ts";
import { compatRoutes } from "./routes/compat.ts";
import { consoleRoutes } from "./routes/console.ts";
import { detectRoutes } from "./routes/detect.ts";
import { eventRoutes } from "./routes/events.ts";
import { healthRoutes } from "./routes/health.ts";
import { jobRoutes } from "./routes/jobs.ts";
import { keyRoutes } from "./routes/keys.ts";
import { modelRoutes } from "./routes/models.ts";
import { monitorCompatRoutes } from "./routes/monitor-compat.ts";
import { settingsRoutes } from "./routes/settings.ts";
import { sourceRoutes } from "./routes/sources.ts";

/** The HTTP application: plugins, hooks and routes; listening is left to the caller. */
export async function buildApp(ctx: ServerContext): Promise<FastifyInstance> {
  const { config } = ctx;
  const stream = config.logFile ? tee(process.stdout, new RotatingFile(config.logFile)) : undefined;
  const app = Fastify({
    logger: {
      level: config.logLevel,
      ...(stream ? { stream } : {}),
      serializers: {
        // GETs may carry ?api_key= (EventSource, <img>, WebSocket): never write it to the log.
        req: (req: { method: string; url: string; host?: string; ip?: string }) => ({
          method: req.method,
          url: redactSecrets(req.url),
          host: req.host,
          remoteAddress: req.ip,
        }),
      },
    },
    genReqId: (req) => (req.headers["x-request-id"] as string | undefined)?.slice(0, 100) || randomUUID(),
    requestIdHeader: false,
    trustProxy: config.trustProxy,
    // JSON bodies carry base64 images (a third larger than the bytes).
    bodyLimit: Math.ceil(config.maxUploadBytes * 1.4) + 4096,
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, useDefaults: true } },
  });
  // Once closing, answers end their connection: a keep-alive client would otherwise hold the
  // shutdown until its idle timeout.
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
    app.server.closeIdleConnections();
  });
  app.addHook("onSend", async (request, reply) => {
    reply.header("x-request-id", request.id);
    if (closing) reply.header("connection", "close");
  });
  registerErrorHandler(app);

  await app.register(helmet, {
    // Swagger UI at /docs needs inline styles and scripts of its own; the console draws into blob: images.
    // No upgrade-insecure-requests: plain HTTP on a LAN or behind a TLS proxy must keep working.
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        imgSrc: ["'self'", "data:", "blob:"],
        mediaSrc: ["'self'", "blob:"],
        connectSrc: ["'self'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
        scriptSrc: ["'self'", "'unsafe-inline'"],
        upgradeInsecureRequests: null,
      },
    },
  });
  await app.register(cors, {
    origin: config.corsOrigins.includes("*") ? true : config.corsOrigins,
    credentials: false,
  });
  await app.register(cookie);
  await app.register(multipart, {
    limits: { fileSize: config.maxUploadBytes, files: 16, fields: 20, parts: 40 },
    throwFileSizeLimit: true,
  });
  app.addContentTypeParser(
    /^image\//,
    { parseAs: "buffer", bodyLimit: config.maxUploadBytes },
    (_req, body, done) => done(null, body),
  );

  await app.register(websocket, { options: { maxPayload: config.maxUploadBytes } });

  await app.register(swagger, {
    openapi: {
      info: {
        title: "Maskwatch API",
        version: "0.1.0",
        description: "Face and face-mask detection. Send your key in X-API-Key.",
      },
      components: { securitySchemes: { apiKey: { type: "apiKey", name: "X-API-Key", in: "header" } } },
      security: [{ apiKey: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  registerAuth(app, ctx);
  registerAudit(app, ctx);
  await app.register(rateLimit, {
    hook: "preHandler",
    global: true,
    timeWindow: 60_000,
    // With REDIS_URL the counters are shared by every replica; if Redis fails, requests pass.
    ...(ctx.cluster
      ? { redis: ctx.cluster.redis, nameSpace: "maskwatch:ratelimit:", skipOnError: true }
      : {}),
    keyGenerator: (request) => (request.apiKey ? `key:${request.apiKey.id}` : `ip:${request.ip}`),
    max: (request) => (request.apiKey ? config.rateLimitPerKey : config.rateLimitPerIp),
    allowList: (request) => ["/health", "/ready", "/metrics"].includes(request.url.split("?")[0]),
    errorResponseBuilder: (_request, context) => ({
      statusCode: 429,
      status: "error",
      code: "rate_limited",
      message: `rate limit of ${context.max} requests per minute reached; retry in ${context.after}`,
    }),
  });

  ctx.metrics.register(
    app,
    () => ctx.pool.stats(),
    () => ctx.streams.statuses(),
  );
  await app.register(async (scope) => healthRoutes(scope, ctx));
  await app.register(async (scope) => compatRoutes(scope, ctx));
  await app.register(async (scope) => detectRoutes(scope, ctx));
  await app.register(async (scope) => modelRoutes(scope, ctx));
  await app.register(async (scope) => keyRoutes(scope, ctx));
  await app.register(async (scope) => monitorCompatRoutes(scope, ctx));
  await app.register(async (scope) => sourceRoutes(scope, ctx));
  await app.register(async (scope) => eventRoutes(scope, ctx));
  await app.register(async (scope) => jobRoutes(scope, ctx));
  await app.register(async (scope) => authRoutes(scope, ctx));
  await app.register(async (scope) => settingsRoutes(scope, ctx));
  await app.register(async (scope) => alertRoutes(scope, ctx));
  await app.register(async (scope) => consoleRoutes(scope, ctx));
  return app;
}
