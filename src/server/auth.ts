import { timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { verifyKey } from "../store/api-keys.ts";
import type { ServerContext } from "./context.ts";
import { HttpError } from "./errors.ts";

/** Paths any caller may use: liveness, readiness, metrics, the API description. */
const OPEN = [/^\/health$/, /^\/ready$/, /^\/metrics$/, /^\/openapi\.json$/, /^\/docs(\/|$)/];

/**
 * `X-API-Key` on every other request, as the replaced service did: the bootstrap key from the
 * environment (admin), or a key created with `maskwatch keys create` (stored as a sha256 hash).
 */
export function registerAuth(app: FastifyInstance, ctx: ServerContext): void {
  const bootstrap = ctx.config.apiKey ? Buffer.from(ctx.config.apiKey) : undefined;
  app.addHook("onRequest", async (request) => {
    const path = request.url.split("?")[0];
    if (!ctx.config.auth || OPEN.some((re) => re.test(path))) return;
    const header = request.headers["x-api-key"];
    // <img>, EventSource and WebSocket cannot send headers: GETs may pass ?api_key= instead.
    const query =
      request.method === "GET" ? (request.query as { api_key?: unknown } | undefined)?.api_key : undefined;
    const key =
      (Array.isArray(header) ? header[0] : header) ?? (typeof query === "string" ? query : undefined);
    if (!key) throw new HttpError(401, "missing_api_key", "send your API key in the X-API-Key header");
    if (bootstrap && key.length === bootstrap.length && timingSafeEqual(Buffer.from(key), bootstrap)) {
      request.apiKey = { id: "bootstrap", name: "MASKWATCH_API_KEY", scopes: ["admin", "detect"] };
      return;
    }
    const found = await verifyKey(ctx.db, key);
    if (!found) throw new HttpError(401, "invalid_api_key", "the API key is not valid or has been revoked");
    request.apiKey = { id: found.id, name: found.name, scopes: found.scopes };
  });
}

export function requireScope(request: FastifyRequest, scope: string, auth: boolean): void {
  if (!auth) return;
  if (!request.apiKey?.scopes.includes(scope) && !request.apiKey?.scopes.includes("admin")) {
    throw new HttpError(403, "forbidden", `this API key lacks the "${scope}" scope`);
  }
}
