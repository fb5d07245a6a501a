/**
 * API keys: generation, hashing and the `api_keys` repository.
 *
 * A key is `mw_` + 32 random bytes in base64url (46 characters). Only its SHA-256 (hex) is stored, with the
 * first 8 characters (`prefix`) kept in clear so lists can show which key is which.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Database } from "./db.ts";

export const API_KEY_PREFIX = "mw_";
/** detect: analyse images; events:read: read the violation log (events, stats, CSV, snapshots, live views); admin: all. */
export const API_KEY_SCOPES = ["detect", "events:read", "admin"] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];
/** Length of the displayed prefix (`mw_` + 5 characters). */
export const PREFIX_LENGTH = 8;
/** last_used_at is written at most this often per key. */
export const LAST_USED_RESOLUTION_MS = 60_000;
const KEY_LENGTH = API_KEY_PREFIX.length + 43; // 32 bytes → 43 base64url characters
const MAX_NAME_LENGTH = 100;

export interface ApiKeyRecord {
  id: string;
  name: string;
  prefix: string;
  scopes: ApiKeyScope[];
  /** Epoch milliseconds. */
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

/** The result of createKey: the record plus the plain key, which is never stored and cannot be shown again. */
export interface CreatedApiKey extends ApiKeyRecord {
  key: string;
}

export type ApiKeyErrorCode = "invalid_scope" | "invalid_name" | "not_found" | "ambiguous";

export class ApiKeyError extends Error {
  override name = "ApiKeyError";
  constructor(
    readonly code: ApiKeyErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function isApiKeyError(e: unknown): e is ApiKeyError {
  return e instanceof ApiKeyError;
}

/** A new random key: `mw_` + 32 bytes base64url. */
export function generateApiKey(): string {
  return API_KEY_PREFIX + randomBytes(32).toString("base64url");
}

/** SHA-256 of the full key, lowercase hex. */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/**
 * Validate scopes: each of API_KEY_SCOPES, at least one; comma-separated strings are split; duplicates
 * dropped; returned in canonical order.
 */
export function parseScopes(input: string | readonly string[]): ApiKeyScope[] {
  const parts = (typeof input === "string" ? [input] : input)
    .flatMap((s) => s.split(","))
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
  if (parts.length === 0) {
    throw new ApiKeyError(
      "invalid_scope",
      `an API key needs at least one scope (${API_KEY_SCOPES.join(", ")})`,
    );
  }
  for (const p of parts) {
    if (!(API_KEY_SCOPES as readonly string[]).includes(p)) {
      throw new ApiKeyError(
        "invalid_scope",
        `unknown scope "${p}"; valid scopes: ${API_KEY_SCOPES.join(", ")}`,
      );
    }
  }
  return API_KEY_SCOPES.filter((s) => parts.includes(s));
}

/** Whether a key grants `scope`; `admin` grants every scope. */
export function hasScope(record: Pick<ApiKeyRecord, "scopes">, scope: ApiKeyScope): boolean {
  return record.scopes.includes(scope) || record.scopes.includes("admin");
}

interface Row {
  id: string;
  name: string;
  prefix: string;
  scopes: string;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

const COLUMNS = "id, name, prefix, scopes, created_at, last_used_at, revoked_at";

function toRecord(r: Row): ApiKeyRecord {
  return {
    id: r.id,
    name: r.name,
    prefix: r.prefix,
    scopes: r.scopes
      .split(",")
      .filter((s): s is ApiKeyScope => (API_KEY_SCOPES as readonly string[]).includes(s)),
    createdAt: Number(r.created_at),
    lastUsedAt: r.last_used_at === null ? null : Number(r.last_used_at),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
  };
}

function newId(): string {
  return `key_${randomBytes(8).toString("hex")}`;
}

/** Create a key; the returned `key` is the only time the plain key exists. */
export async function createKey(
  db: Database,
  input: { name: string; scopes: string | readonly string[]; now?: number },
): Promise<CreatedApiKey> {
  const name = input.name?.trim() ?? "";
  if (!name) throw new ApiKeyError("invalid_name", "an API key needs a name");
  if (name.length > MAX_NAME_LENGTH) {
    throw new ApiKeyError("invalid_name", `an API key name is at most ${MAX_NAME_LENGTH} characters`);
  }
  const scopes = parseScopes(input.scopes);
  const key = generateApiKey();
  const record: ApiKeyRecord = {
    id: newId(),
    name,
    prefix: key.slice(0, PREFIX_LENGTH),
    scopes,
    createdAt: input.now ?? Date.now(),
    lastUsedAt: null,
    revokedAt: null,
  };
  await db.run(
    "INSERT INTO api_keys (id, name, prefix, hash, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    [record.id, record.name, record.prefix, hashApiKey(key), scopes.join(","), record.createdAt],
  );
  return { ...record, key };
}

/** All keys, revoked ones included, oldest first; never the hashes. */
export async function listKeys(db: Database): Promise<ApiKeyRecord[]> {
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM api_keys ORDER BY created_at, id`);
  return rows.map(toRecord);
}

/** One key by id or by its displayed prefix; null when absent. Throws `ambiguous` if a prefix matches several. */
export async function findKey(db: Database, idOrPrefix: string): Promise<ApiKeyRecord | null> {
  const ref = idOrPrefix.trim();
  if (!ref) return null;
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM api_keys WHERE id = ? OR prefix = ? ORDER BY id`, [
    ref,
    ref,
  ]);
  const byId = rows.find((r) => r.id === ref);
  if (byId) return toRecord(byId);
  if (rows.length > 1) {
    throw new ApiKeyError(
      "ambiguous",
      `prefix ${ref} matches ${rows.length} keys (${rows.map((r) => r.id).join(", ")}); use the id`,
    );
  }
  return rows[0] ? toRecord(rows[0]) : null;
}

/**
 * Revoke a key by id or prefix; returns the record with revokedAt set. Revoking a revoked key changes nothing
 * (revokedAt keeps its first value). Throws `not_found` / `ambiguous`.
 */
export async function revokeKey(
  db: Database,
  idOrPrefix: string,
  now: number = Date.now(),
): Promise<ApiKeyRecord> {
  const found = await findKey(db, idOrPrefix);
  if (!found) throw new ApiKeyError("not_found", `no API key with id or prefix "${idOrPrefix.trim()}"`);
  if (found.revokedAt !== null) return found;
  await db.run("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [now, found.id]);
  const after = await findKey(db, found.id);
  return after ?? { ...found, revokedAt: now };
}

/**
 * The record of a valid, unrevoked key, or null. Records use at most once per LAST_USED_RESOLUTION_MS per key
 * (so a burst of requests does not write on each one); the returned lastUsedAt reflects that write.
 */
export async function verifyKey(
  db: Database,
  key: string,
  now: number = Date.now(),
): Promise<ApiKeyRecord | null> {
  if (typeof key !== "string" || key.length !== KEY_LENGTH || !key.startsWith(API_KEY_PREFIX)) return null;
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM api_keys WHERE hash = ?`, [hashApiKey(key)]);
  const row = rows[0];
  if (!row || row.revoked_at !== null) return null;
  const record = toRecord(row);
  if (record.lastUsedAt === null || now - record.lastUsedAt >= LAST_USED_RESOLUTION_MS) {
    const { changes } = await db.run(
      "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
      [now, record.id, now - LAST_USED_RESOLUTION_MS],
    );
    if (changes > 0) record.lastUsedAt = now;
  }
  return record;
}
