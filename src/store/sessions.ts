/**
 * Console login sessions, the `sessions` repository. The cookie carries a random token; the table keeps its
 * sha256 only, so a leaked database cannot be replayed as logins. Each session has its own CSRF token.
 * Sessions slide: each use moves the expiry to `ttlMs` from then (written at most once a minute).
 */
import { createHash, randomBytes } from "node:crypto";
import type { Database } from "./db.ts";
import type { UserRecord, UserRole } from "./users.ts";

export interface SessionRecord {
  id: string;
  userId: string;
  csrfToken: string;
  createdAt: number;
  lastSeenAt: number;
  expiresAt: number;
}

export interface ActiveSession {
  session: SessionRecord;
  user: UserRecord;
}

interface Row {
  id: string;
  user_id: string;
  csrf_token: string;
  created_at: number;
  last_seen_at: number;
  expires_at: number;
  username: string;
  role: string;
  user_created_at: number;
  last_login_at: number | null;
}

/** How often a session's expiry is written back (saves a write per request). */
const TOUCH_EVERY_MS = 60_000;

const hashToken = (token: string) => createHash("sha256").update(token).digest("hex");

/** A new session for `userId`: the token (for the cookie, never stored) and the record. */
export async function createSession(
  db: Database,
  userId: string,
  opts: { ttlMs: number; now?: number },
): Promise<{ token: string; session: SessionRecord }> {
  const now = opts.now ?? Date.now();
  const token = randomBytes(32).toString("base64url");
  const session: SessionRecord = {
    id: `ses_${randomBytes(8).toString("hex")}`,
    userId,
    csrfToken: randomBytes(24).toString("base64url"),
    createdAt: now,
    lastSeenAt: now,
    expiresAt: now + opts.ttlMs,
  };
  await db.run(
    `INSERT INTO sessions (id, token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)`,
    [session.id, hashToken(token), userId, session.csrfToken, now, now, session.expiresAt],
  );
  return { token, session };
}

/** The live session for a cookie token with its user; undefined when unknown or expired. Slides the expiry. */
export async function findSession(
  db: Database,
  token: string,
  opts: { ttlMs: number; now?: number },
): Promise<ActiveSession | undefined> {
  if (typeof token !== "string" || token.length < 20 || token.length > 200) return undefined;
  const now = opts.now ?? Date.now();
  const rows = await db.query<Row>(
    `SELECT s.id, s.user_id, s.csrf_token, s.created_at, s.last_seen_at, s.expires_at,
            u.username, u.role, u.created_at AS user_created_at, u.last_login_at
     FROM sessions s JOIN users u ON u.id = s.user_id
     WHERE s.token_hash = ?`,
    [hashToken(token)],
  );
  const r = rows[0];
  if (!r || Number(r.expires_at) <= now) return undefined;
  const session: SessionRecord = {
    id: r.id,
    userId: r.user_id,
    csrfToken: r.csrf_token,
    createdAt: Number(r.created_at),
    lastSeenAt: Number(r.last_seen_at),
    expiresAt: Number(r.expires_at),
  };
  if (now - session.lastSeenAt >= TOUCH_EVERY_MS) {
    session.lastSeenAt = now;
    session.expiresAt = now + opts.ttlMs;
    await db.run("UPDATE sessions SET last_seen_at = ?, expires_at = ? WHERE id = ?", [
      now,
      session.expiresAt,
      session.id,
    ]);
  }
  const user: UserRecord = {
    id: r.user_id,
    username: r.username,
    role: r.role as UserRole,
    createdAt: Number(r.user_created_at),
    lastLoginAt: r.last_login_at === null ? null : Number(r.last_login_at),
  };
  return { session, user };
}

/** End the session a cookie token names (no-op when unknown). */
export async function deleteSession(db: Database, token: string): Promise<void> {
  await db.run("DELETE FROM sessions WHERE token_hash = ?", [hashToken(token)]);
}

/** End every session of a user, except `keepId` (after a password change, the session that made it). */
export async function deleteUserSessions(db: Database, userId: string, keepId?: string): Promise<number> {
  const { changes } = keepId
    ? await db.run("DELETE FROM sessions WHERE user_id = ? AND id <> ?", [userId, keepId])
    : await db.run("DELETE FROM sessions WHERE user_id = ?", [userId]);
  return changes;
}

/** Remove expired sessions; how many. */
export async function deleteExpiredSessions(db: Database, now: number = Date.now()): Promise<number> {
  const { changes } = await db.run("DELETE FROM sessions WHERE expires_at <= ?", [now]);
  return changes;
}
