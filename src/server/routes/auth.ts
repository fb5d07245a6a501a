import { timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { createSession, deleteSession, deleteUserSessions, findSession } from "../../store/sessions.ts";
import {
  countUsers,
  createUser,
  deleteUser,
  getUser,
  listUsers,
  recordSignIn,
  setPassword,
  type UserRecord,
  verifyUser,
} from "../../store/users.ts";
import { currentSetupCode, spendSetupCode } from "../accounts.ts";
import { clearSessionCookie, requireScope, SESSION_COOKIE, setSessionCookie } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";

const credentials = {
  type: "object",
  required: ["username", "password"],
  properties: {
    username: { type: "string", minLength: 1, maxLength: 64 },
    password: { type: "string", minLength: 1, maxLength: 1024 },
  },
  additionalProperties: false,
} as const;

const presentUser = (u: UserRecord) => ({
  id: u.id,
  username: u.username,
  role: u.role,
  created_at: new Date(u.createdAt).toISOString(),
  last_login_at: u.lastLoginAt === null ? null : new Date(u.lastLoginAt).toISOString(),
});

/** Console sign-in: first-run setup, login/logout, the session, password change; users for admins. */
export async function authRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const ttlMs = ctx.config.session.ttlHours * 3_600_000;
  // Guessing passwords is slow: few tries per client address a minute.
  const LOGIN_LIMIT = { rateLimit: { max: ctx.config.session.loginAttempts, timeWindow: 60_000 } };
  const signedIn = (request: FastifyRequest) => {
    if (!request.user || !request.session)
      throw new HttpError(401, "not_logged_in", "sign in to the console first");
    return { user: request.user, session: request.session };
  };

  app.get(
    "/api/v1/auth/session",
    {
      config: { public: true },
      schema: { summary: "The signed-in user and the CSRF token for writes", tags: ["auth"] },
    },
    async (request) => {
      if (!ctx.config.auth) return { auth: false, user: null, csrf_token: null };
      // Public so that it can answer "not signed in" itself; an API key is not a console session.
      const token = request.cookies[SESSION_COOKIE];
      const active = token ? await findSession(ctx.db, token, { ttlMs }) : undefined;
      // Signed out is an answer, not an error: browsers log every 4xx in the console.
      if (!active) return { auth: true, user: null, csrf_token: null };
      const { id, username, role } = active.user;
      return { auth: true, user: { id, username, role }, csrf_token: active.session.csrfToken };
    },
  );

  app.get(
    "/api/v1/auth/setup",
    {
      config: { public: true },
      schema: { summary: "Whether the first admin is still to be made", tags: ["auth"] },
    },
    async () => ({ needed: ctx.config.auth && (await countUsers(ctx.db)) === 0 }),
  );

  app.post<{ Body: { setup_code: string; username: string; password: string } }>(
    "/api/v1/auth/setup",
    {
      config: { public: true, ...LOGIN_LIMIT },
      schema: {
        summary: "Make the first admin with the one-time code from the server log",
        tags: ["auth"],
        body: {
          type: "object",
          required: ["setup_code", "username", "password"],
          properties: { setup_code: { type: "string", maxLength: 200 }, ...credentials.properties },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const current = await currentSetupCode(ctx.db);
      if (!current) throw new HttpError(409, "setup_done", "the console already has users: sign in instead");
      const sent = Buffer.from(request.body.setup_code.trim().toUpperCase());
      const code = Buffer.from(current);
      if (sent.length !== code.length || !timingSafeEqual(sent, code))
        throw new HttpError(
          403,
          "invalid_setup_code",
          "the setup code does not match the one in the server log",
        );
      const created = await createUser(ctx.db, { ...request.body, role: "admin" });
      await spendSetupCode(ctx.db);
      // Setting up signs the admin in: that is their first sign-in.
      const now = Date.now();
      await recordSignIn(ctx.db, created.id, now);
      const user = { ...created, lastLoginAt: now };
      request.log.info({ user: user.username }, "first admin made through the setup screen");
      const { token, session } = await createSession(ctx.db, user.id, { ttlMs });
      setSessionCookie(reply, request, ctx, token);
      reply.status(201);
      return { user: presentUser(user), csrf_token: session.csrfToken };
    },
  );

  app.post<{ Body: { username: string; password: string } }>(
    "/api/v1/auth/login",
    {
      config: { public: true, ...LOGIN_LIMIT },
      schema: { summary: "Sign in: sets the session cookie", tags: ["auth"], body: credentials },
    },
    async (request, reply) => {
      const user = await verifyUser(ctx.db, request.body.username, request.body.password);
      if (!user) {
        request.log.warn({ username: request.body.username.slice(0, 64) }, "failed console sign-in");
        throw new HttpError(401, "invalid_credentials", "wrong username or password");
      }
      const { token, session } = await createSession(ctx.db, user.id, { ttlMs });
      setSessionCookie(reply, request, ctx, token);
      return { user: presentUser(user), csrf_token: session.csrfToken };
    },
  );

  app.post(
    "/api/v1/auth/logout",
    { config: { public: true }, schema: { summary: "Sign out: ends the session", tags: ["auth"] } },
    async (request, reply) => {
      const token = request.cookies[SESSION_COOKIE];
      if (token) await deleteSession(ctx.db, token);
      clearSessionCookie(reply);
      return { status: "ok" };
    },
  );

  app.post<{ Body: { current_password: string; new_password: string } }>(
    "/api/v1/auth/password",
    {
      config: LOGIN_LIMIT,
      schema: {
        summary: "Change your own password (your other sessions end)",
        tags: ["auth"],
        body: {
          type: "object",
          required: ["current_password", "new_password"],
          properties: {
            current_password: { type: "string", maxLength: 1024 },
            new_password: { type: "string", maxLength: 1024 },
          },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      const { user, session } = signedIn(request);
      if (!(await verifyUser(ctx.db, user.username, request.body.current_password)))
        throw new HttpError(403, "invalid_credentials", "the current password is wrong");
      await setPassword(ctx.db, user.id, request.body.new_password);
      await deleteUserSessions(ctx.db, user.id, session.id);
      return { status: "ok" };
    },
  );

  app.get("/api/v1/users", { schema: { summary: "Console users", tags: ["users"] } }, async (request) => {
    requireScope(request, "admin", ctx.config.auth);
    return { users: (await listUsers(ctx.db)).map(presentUser) };
  });

  app.post<{ Body: { username: string; password: string; role: "admin" | "viewer" } }>(
    "/api/v1/users",
    {
      config: { audit: "user.create" },
      schema: {
        summary: "Add a console user",
        tags: ["users"],
        body: {
          type: "object",
          required: ["username", "password", "role"],
          properties: { ...credentials.properties, role: { type: "string", enum: ["admin", "viewer"] } },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      requireScope(request, "admin", ctx.config.auth);
      reply.status(201);
      return presentUser(await createUser(ctx.db, request.body));
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/api/v1/users/:id",
    {
      config: { audit: "user.delete" },
      schema: { summary: "Remove a console user (their sessions end)", tags: ["users"] },
    },
    async (request) => {
      requireScope(request, "admin", ctx.config.auth);
      const user = await getUser(ctx.db, request.params.id);
      if (!user) throw new HttpError(404, "not_found", `no user "${request.params.id}"`);
      if (user.id === request.user?.id) throw new HttpError(409, "conflict", "you cannot remove yourself");
      if (user.role === "admin" && (await countUsers(ctx.db, "admin")) <= 1)
        throw new HttpError(409, "conflict", "the last admin cannot be removed");
      await deleteUser(ctx.db, user.id);
      return { status: "ok" };
    },
  );
}
