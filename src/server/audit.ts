/**
 * The audit log of admin actions: a route names its action in `config.audit`, and each such request
 * that succeeds is recorded with who made it and what it touched.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { recordAudit } from "../store/alerts.ts";
import type { ServerContext } from "./context.ts";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Record a successful request in the audit log under this action (e.g. "webhook.create"). */
    audit?: string;
  }
}

/** `user:<name>`, `key:<name>` or `anonymous` (auth off). */
export function actorOf(request: FastifyRequest): string {
  if (request.user) return `user:${request.user.username}`;
  if (request.apiKey) return `key:${request.apiKey.name}`;
  return "anonymous";
}

export function registerAudit(app: FastifyInstance, ctx: ServerContext): void {
  app.addHook("onResponse", async (request, reply) => {
    const action = request.routeOptions.config?.audit;
    if (!action || reply.statusCode >= 400) return;
    const params = (request.params ?? {}) as Record<string, unknown>;
    const target = Object.values(params).map(String).join("/") || null;
    const body =
      request.body && typeof request.body === "object" ? (request.body as Record<string, unknown>) : {};
    // What was asked for, without secrets or passwords.
    const detail = Object.fromEntries(
      Object.entries(body).filter(([k]) => !/secret|password|token|key$/i.test(k)),
    );
    await recordAudit(ctx.db, { actor: actorOf(request), action, target, detail }).catch((err) =>
      request.log.error({ err, action }, "audit log entry not written"),
    );
  });
}
