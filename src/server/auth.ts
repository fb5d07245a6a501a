import { timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { verifyKey } from "../store/api-keys.ts";
import { findSession } from "../store/sessions.ts";
import type { UserRole } from "../store/users.ts";
import { type FailureCounter, MemoryFailureCounter, RedisFailureCounter } from "./auth-failures.ts";
import type { ServerContext } from "./context.ts";
import { HttpError } from "./errors.ts";

/** Paths any caller may use: liveness, readiness, the API description, and metrics unless MASKWATCH_METRICS_AUTH. */
const OPEN = [/^\/health$/, /^\/ready$/, /^\/openapi\.json$/, /^\/docs(\/|$)/];
const METRICS = /^\/metrics$/;
const FAILURE_WINDOW_MS = 60_000;

export const SESSION_COOKIE = "maskwatch_session";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const ROLE_SCOPES: Record<UserRole, string[]> = {
  admin: ["admin", "detect", "events:read"],
  viewer: ["detect", "events:read"],
};

declare module "fastify" {
  interface FastifyContextConfig {
    /** The route needs no credentials (the console's files, login, setup). */
    public?: boolean;
  }
}

/**
 * Who is calling: an `X-API-Key` (the bootstrap key from the environment, or a stored key), or a console
 * session cookie. Cookie-authenticated writes must carry the session's CSRF token in `X-CSRF-Token`, and a
 * cookie request from a foreign Origin is refused (that covers WebSocket upgrades, which browsers send
 * with cookies but without custom headers).
 */
export function registerAuth(app: FastifyInstance, ctx: ServerContext): void {
  const bootstrap = ctx.config.apiKey ? Buffer.from(ctx.config.apiKey) : undefined;
  const ttlMs = ctx.config.session.ttlHours * 3_600_000;
  const limit = ctx.config.authFailureLimit;
  const failures: FailureCounter = ctx.cluster
    ? new RedisFailureCounter(ctx.cluster.redis, limit, FAILURE_WINDOW_MS)
    : new MemoryFailureCounter(limit, FAILURE_WINDOW_MS);
  app.addHook("onRequest", async (request) => {
    const path = request.url.split("?")[0];
    if (!ctx.config.auth || request.routeOptions.config?.public || request.is404) return;
    if (OPEN.some((re) => re.test(path))) return;
    if (!ctx.config.metricsAuth && METRICS.test(path)) return;
    const header = request.headers["x-api-key"];
    // <img>, EventSource and WebSocket cannot send headers: GETs may pass ?api_key= instead.
    const query =
      request.method === "GET" ? (request.query as { api_key?: unknown } | undefined)?.api_key : undefined;
    const key =
      (Array.isArray(header) ? header[0] : header) ?? (typeof query === "string" ? query : undefined);
    if (key) {
      const wait = await failures.blockedFor(request.ip);
      if (wait > 0) {
        throw new HttpError(
          429,
          "too_many_failures",
          `too many wrong API keys from this address; retry in ${Math.ceil(wait / 1000)} s`,
          { "retry-after": String(Math.ceil(wait / 1000)) },
        );
      }
      if (bootstrap && key.length === bootstrap.length && timingSafeEqual(Buffer.from(key), bootstrap)) {
        request.apiKey = {
          id: "bootstrap",
          name: "MASKWATCH_API_KEY",
          scopes: ["admin", "detect", "events:read"],
        };
        return;
      }
      const found = await verifyKey(ctx.db, key);
      if (!found) {
        await failures.add(request.ip);
        throw new HttpError(401, "invalid_api_key", "the API key is not valid or has been revoked");
      }
      request.apiKey = { id: found.id, name: found.name, scopes: found.scopes };
      return;
    }
    const token = request.cookies[SESSION_COOKIE];
    const active = token ? await findSession(ctx.db, token, { ttlMs }) : undefined;
    if (!active) {
      throw new HttpError(
        401,
        "missing_api_key",
        "send your API key in the X-API-Key header, or sign in to the console",
      );
    }
    checkOrigin(request);
    if (!SAFE_METHODS.has(request.method)) checkCsrf(request, active.session.csrfToken);
    request.user = { id: active.user.id, username: active.user.username, role: active.user.role };
    request.session = { id: active.session.id, csrfToken: active.session.csrfToken };
    request.apiKey = {
      id: `user:${active.user.id}`,
      name: active.user.username,
      scopes: ROLE_SCOPES[active.user.role],
    };
  });
}

/** A cookie request whose Origin is another site (cross-site WebSocket hijacking, forged forms). */
function checkOrigin(request: FastifyRequest): void {
  const origin = request.headers.origin;
  if (!origin) return;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    throw new HttpError(403, "forbidden_origin", "the Origin header is not a URL");
  }
  if (host !== request.host) {
    throw new HttpError(403, "forbidden_origin", `requests from ${origin} may not use the console's session`);
  }
}

function checkCsrf(request: FastifyRequest, expected: string): void {
  const sent = request.headers["x-csrf-token"];
  const value = Array.isArray(sent) ? sent[0] : sent;
  if (
    !value ||
    value.length !== expected.length ||
    !timingSafeEqual(Buffer.from(value), Buffer.from(expected))
  ) {
    throw new HttpError(
      403,
      "csrf_failed",
      "signed-in writes need the X-CSRF-Token header from /api/v1/auth/session",
    );
  }
}

/**
 * A GET that changes server state (the old app's /start_detection and friends): with a session cookie it
 * needs the CSRF token like any write, so a link or an <img> on another page cannot trigger it.
 */
export function requireCsrfOnGet(request: FastifyRequest, auth: boolean): void {
  if (!auth || !request.session || !SAFE_METHODS.has(request.method)) return;
  checkCsrf(request, request.session.csrfToken);
}

/** The scope a route needs, for every route of a plugin (call inside the plugin's scope). */
export function scopeHook(app: FastifyInstance, scope: string, auth: boolean): void {
  app.addHook("preHandler", async (request) => requireScope(request, scope, auth));
}

export function requireScope(request: FastifyRequest, scope: string, auth: boolean): void {
  if (!auth) return;
  if (!request.apiKey?.scopes.includes(scope) && !request.apiKey?.scopes.includes("admin")) {
    const who = request.user ? `the ${request.user.role} role` : "this API key";
    throw new HttpError(403, "forbidden", `${who} lacks the "${scope}" permission`);
  }
}

/** Set the session cookie: http-only, same-site strict, Secure over HTTPS (or as configured). */
export function setSessionCookie(
  reply: FastifyReply,
  request: FastifyRequest,
  ctx: ServerContext,
  token: string,
): void {
  const mode = ctx.config.session.secureCookies;
  reply.setCookie(SESSION_COOKIE, token, {
    path: "/",
    httpOnly: true,
    sameSite: "strict",
    secure: mode === "on" || (mode === "auto" && request.protocol === "https"),
    maxAge: ctx.config.session.ttlHours * 3600,
  });
}

export function clearSessionCookie(reply: FastifyReply): void {
  reply.clearCookie(SESSION_COOKIE, { path: "/" });
}
