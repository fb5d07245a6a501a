/**
 * Console users and the `users` repository. Passwords are hashed with scrypt (node:crypto), stored as
 * `scrypt$N$r$p$<salt base64url>$<hash base64url>` with a random 16-byte salt; records never carry the hash.
 * Usernames are case-insensitive: stored and looked up in lower case.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { type Database, isUniqueViolation } from "./db.ts";
import { StoreError } from "./sources.ts";

export const USER_ROLES = ["admin", "viewer"] as const;
export type UserRole = (typeof USER_ROLES)[number];
export const USERNAME_PATTERN = /^[a-z0-9._-]{1,64}$/i;
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 1024;

/** scrypt cost: N = 2^15, r = 8, p = 1 (32 MiB, tens of ms); stored per hash so it can be raised later. */
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, keyLength: 32, saltLength: 16 };

export interface UserRecord {
  id: string;
  username: string;
  role: UserRole;
  /** Epoch milliseconds. */
  createdAt: number;
  lastLoginAt: number | null;
}

interface Row {
  id: string;
  username: string;
  role: string;
  created_at: number;
  last_login_at: number | null;
}

const COLUMNS = "id, username, role, created_at, last_login_at";

function toRecord(r: Row): UserRecord {
  return {
    id: r.id,
    username: r.username,
    role: r.role as UserRole,
    createdAt: Number(r.created_at),
    lastLoginAt: r.last_login_at === null ? null : Number(r.last_login_at),
  };
}

function scryptAsync(password: string, salt: Buffer, keyLength: number, N: number, r: number, p: number) {
  return new Promise<Buffer>((resolve, reject) => {
    scrypt(password, salt, keyLength, { N, r, p, maxmem: 128 * r * (N + 2 + p) + 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

/** Hash a password: `scrypt$N$r$p$salt$hash`. */
export async function hashPassword(password: string): Promise<string> {
  const { N, r, p, keyLength, saltLength } = SCRYPT;
  const salt = randomBytes(saltLength);
  const hash = await scryptAsync(password, salt, keyLength, N, r, p);
  return `scrypt$${N}$${r}$${p}$${salt.toString("base64url")}$${hash.toString("base64url")}`;
}

/** Whether `password` matches a hashPassword result (constant-time compare; false for a malformed hash). */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(stored);
  if (!m || typeof password !== "string") return false;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const salt = Buffer.from(m[4]!, "base64url");
  const expected = Buffer.from(m[5]!, "base64url");
  // bounds keep a tampered row from costing unbounded time or memory
  const powerOfTwo = N >= 2 && (N & (N - 1)) === 0;
  if (!powerOfTwo || r < 1 || r > 32 || p < 1 || p > 16 || 128 * N * r > 256 * 1024 * 1024) return false;
  if (expected.length < 16 || expected.length > 128 || salt.length < 8) return false;
  const actual = await scryptAsync(password, salt, expected.length, N, r, p);
  return timingSafeEqual(actual, expected);
}

let dummyHash: Promise<string> | undefined;

function normaliseUsername(username: unknown): string {
  const u = typeof username === "string" ? username.trim().toLowerCase() : "";
  if (!USERNAME_PATTERN.test(u)) {
    throw new StoreError("invalid_username", "a username is 1-64 letters, digits, '.', '_' or '-'");
  }
  return u;
}

function checkPassword(password: unknown): string {
  if (typeof password !== "string" || password.length < MIN_PASSWORD_LENGTH) {
    throw new StoreError("invalid_password", `a password is at least ${MIN_PASSWORD_LENGTH} characters`);
  }
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new StoreError("invalid_password", `a password is at most ${MAX_PASSWORD_LENGTH} characters`);
  }
  return password;
}

function checkRole(role: unknown): UserRole {
  if (typeof role !== "string" || !(USER_ROLES as readonly string[]).includes(role)) {
    throw new StoreError(
      "invalid_role",
      `unknown role ${JSON.stringify(role)}; valid roles: ${USER_ROLES.join(", ")}`,
    );
  }
  return role as UserRole;
}

/** Create a user. Throws `invalid_username`, `invalid_password`, `invalid_role`, `conflict` (name taken). */
export async function createUser(
  db: Database,
  input: { username: string; password: string; role: UserRole; now?: number },
): Promise<UserRecord> {
  const username = normaliseUsername(input.username);
  const password = checkPassword(input.password);
  const role = checkRole(input.role);
  const record: UserRecord = {
    id: `usr_${randomBytes(8).toString("hex")}`,
    username,
    role,
    createdAt: input.now ?? Date.now(),
    lastLoginAt: null,
  };
  const hash = await hashPassword(password);
  try {
    await db.run("INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)", [
      record.id,
      username,
      hash,
      role,
      record.createdAt,
    ]);
  } catch (e) {
    if (isUniqueViolation(e)) throw new StoreError("conflict", `the username "${username}" is taken`);
    throw e;
  }
  return record;
}

/** One user by id, else by username (case-insensitive); undefined when neither matches. */
export async function getUser(db: Database, idOrUsername: string): Promise<UserRecord | undefined> {
  const ref = typeof idOrUsername === "string" ? idOrUsername.trim() : "";
  if (!ref) return undefined;
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM users WHERE id = ? OR username = ?`, [
    ref,
    ref.toLowerCase(),
  ]);
  const row = rows.find((r) => r.id === ref) ?? rows[0];
  return row ? toRecord(row) : undefined;
}

/** Record a sign-in that did not go through verifyUser (the first admin, made on the setup screen). */
export async function recordSignIn(db: Database, id: string, now: number = Date.now()): Promise<void> {
  await db.run("UPDATE users SET last_login_at = ? WHERE id = ?", [now, id]);
}

/**
 * The user whose username and password match, with lastLoginAt set to `now`; undefined otherwise. An unknown
 * username costs the same scrypt work as a wrong password, so timing does not tell which it was.
 */
export async function verifyUser(
  db: Database,
  username: string,
  password: string,
  now: number = Date.now(),
): Promise<UserRecord | undefined> {
  const name = typeof username === "string" ? username.trim().toLowerCase() : "";
  if (!USERNAME_PATTERN.test(name) || typeof password !== "string" || password.length > MAX_PASSWORD_LENGTH) {
    return undefined;
  }
  const rows = await db.query<Row & { password_hash: string }>(
    `SELECT ${COLUMNS}, password_hash FROM users WHERE username = ?`,
    [name],
  );
  const row = rows[0];
  if (!row) {
    dummyHash ??= hashPassword(randomBytes(16).toString("hex"));
    await verifyPassword(password, await dummyHash);
    return undefined;
  }
  if (!(await verifyPassword(password, row.password_hash))) return undefined;
  await db.run("UPDATE users SET last_login_at = ? WHERE id = ?", [now, row.id]);
  return { ...toRecord(row), lastLoginAt: now };
}

/** All users, oldest first. */
export async function listUsers(db: Database): Promise<UserRecord[]> {
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM users ORDER BY created_at, id`);
  return rows.map(toRecord);
}

/** Delete a user by id or username; whether one was deleted. */
export async function deleteUser(db: Database, idOrUsername: string): Promise<boolean> {
  const user = await getUser(db, idOrUsername);
  if (!user) return false;
  const { changes } = await db.run("DELETE FROM users WHERE id = ?", [user.id]);
  return changes > 0;
}

/** Replace a user's password (by id or username). Throws `invalid_password`, `not_found`. */
export async function setPassword(db: Database, idOrUsername: string, password: string): Promise<UserRecord> {
  const checked = checkPassword(password);
  const user = await getUser(db, idOrUsername);
  if (!user) throw new StoreError("not_found", `no user "${String(idOrUsername).trim()}"`);
  const hash = await hashPassword(checked);
  const { changes } = await db.run("UPDATE users SET password_hash = ? WHERE id = ?", [hash, user.id]);
  if (changes === 0) throw new StoreError("not_found", `no user "${String(idOrUsername).trim()}"`);
  return user;
}

/** How many users there are (with `role`, when given). */
export async function countUsers(db: Database, role?: UserRole): Promise<number> {
  const rows = role
    ? await db.query<{ n: number }>("SELECT COUNT(*) AS n FROM users WHERE role = ?", [role])
    : await db.query<{ n: number }>("SELECT COUNT(*) AS n FROM users");
  return Number(rows[0]?.n ?? 0);
}
