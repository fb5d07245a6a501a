import type { FastifyInstance } from "fastify";
import type { ServerContext } from "../context.ts";

/** Liveness (the process answers) and readiness (models loaded, database reachable). */
export async function healthRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  app.get("/health", { schema: { summary: "Alive", tags: ["health"] } }, async () => ({ status: "ok" }));

  app.get(
    "/ready",
    { schema: { summary: "Models loaded, database (and Redis) reachable", tags: ["health"] } },
    async (_req, reply) => {
      const checks: Record<string, string> = {};
      checks.models = ctx.pool.ready ? "ok" : "loading";
      try {
        await ctx.db.query("SELECT 1 AS one", []);
        checks.database = "ok";
      } catch (err) {
        checks.database = `unreachable: ${(err as Error).message}`;
      }
      if (ctx.cluster) {
        try {
          await ctx.cluster.redis.ping();
          checks.redis = "ok";
        } catch (err) {
          checks.redis = `unreachable: ${(err as Error).message}`;
        }
      }
      // Redis is reported, not required: without it detection still works (limits fail open, sources
      // pause at their lease deadline), and taking every replica out of service would be worse.
      const ready = checks.models === "ok" && checks.database === "ok";
      reply.status(ready ? 200 : 503);
      return { status: ready ? "ok" : "error", code: ready ? undefined : "not_ready", checks };
    },
  );
}
