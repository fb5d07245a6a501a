/**
 * Video sources (cameras, browser tabs, streams, files) and the `sources` repository. Also home of StoreError,
 * the error of the monitoring repositories (sources, events, users, settings).
 */
import { randomBytes } from "node:crypto";
import { type Database, isUniqueViolation } from "./db.ts";

export type StoreErrorCode =
  | "not_found"
  | "conflict"
  | "invalid_id"
  | "invalid_name"
  | "invalid_kind"
  | "invalid_url"
  | "invalid_options"
  | "invalid_event"
  | "invalid_filter"
  | "invalid_limit"
  | "invalid_cursor"
  | "invalid_bucket"
  | "invalid_username"
  | "invalid_password"
  | "invalid_role"
  | "invalid_key"
  | "invalid_value";

/** A rejected input or a missing/duplicate record in the monitoring repositories. */
export class StoreError extends Error {
  override name = "StoreError";
  constructor(
    readonly code: StoreErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function isStoreError(e: unknown): e is StoreError {
  return e instanceof StoreError;
}

export const SOURCE_KINDS = ["browser", "device", "stream", "file"] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];
export const SOURCE_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/i;
const MAX_NAME_LENGTH = 100;
const MAX_URL_LENGTH = 2048;
const MAX_OPTIONS_LENGTH = 65_536;

export interface SourceRecord {
  id: string;
  name: string;
  kind: SourceKind;
  url: string | null;
  options: Record<string, unknown>;
  enabled: boolean;
  /** Who added it (`user:<id>`, an API key's id), for browser sources; null when not recorded. */
  owner: string | null;
  /** Epoch milliseconds. */
  createdAt: number;
  updatedAt: number;
}

export interface NewSource {
  /** Default: `src_` + 10 random hex characters. */
  id?: string;
  name: string;
  kind: SourceKind;
  url?: string | null;
  /** A JSON object (default {}). */
  options?: Record<string, unknown>;
  /** Default true. */
  enabled?: boolean;
  owner?: string | null;
  now?: number;
}

export interface SourcePatch {
  name?: string;
  kind?: SourceKind;
  url?: string | null;
  options?: Record<string, unknown>;
  enabled?: boolean;
  now?: number;
}

export interface UpsertSource extends Omit<NewSource, "id"> {
  id: string;
}

interface Row {
  id: string;
  name: string;
  kind: string;
  url: string | null;
  options: string;
  enabled: number | boolean;
  owner: string | null;
  created_at: number;
  updated_at: number;
}

const COLUMNS = "id, name, kind, url, options, enabled, owner, created_at, updated_at";

function toRecord(r: Row): SourceRecord {
  let options: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(r.options);
    if (isPlainObject(parsed)) options = parsed;
  } catch {
    // a hand-edited row: treat as no options
  }
  return {
    id: r.id,
    name: r.name,
    kind: r.kind as SourceKind,
    url: r.url,
    options,
    enabled: Number(r.enabled) !== 0,
    owner: r.owner ?? null,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function newId(): string {
  return `src_${randomBytes(5).toString("hex")}`;
}

export function checkSourceId(id: unknown): string {
  if (typeof id !== "string" || !SOURCE_ID_PATTERN.test(id)) {
    throw new StoreError(
      "invalid_id",
      "a source id is 1-64 letters, digits, _ or -, starting with a letter or digit",
    );
  }
  return id;
}

function checkName(name: unknown): string {
  const n = typeof name === "string" ? name.trim() : "";
  if (!n) throw new StoreError("invalid_name", "a source needs a name");
  if (n.length > MAX_NAME_LENGTH) {
    throw new StoreError("invalid_name", `a source name is at most ${MAX_NAME_LENGTH} characters`);
  }
  return n;
}

function checkKind(kind: unknown): SourceKind {
  if (typeof kind !== "string" || !(SOURCE_KINDS as readonly string[]).includes(kind)) {
    throw new StoreError(
      "invalid_kind",
      `unknown source kind ${JSON.stringify(kind)}; valid kinds: ${SOURCE_KINDS.join(", ")}`,
    );
  }
  return kind as SourceKind;
}

function checkUrl(url: unknown): string | null {
  if (url === undefined || url === null) return null;
  if (typeof url !== "string") throw new StoreError("invalid_url", "a source url is a string or null");
  const u = url.trim();
  if (!u) return null;
  if (u.length > MAX_URL_LENGTH) {
    throw new StoreError("invalid_url", `a source url is at most ${MAX_URL_LENGTH} characters`);
  }
  return u;
}

function checkOptions(options: unknown): string {
  if (options === undefined) return "{}";
  if (!isPlainObject(options))
    throw new StoreError("invalid_options", "source options must be a JSON object");
  let json: string;
  try {
    json = JSON.stringify(options);
  } catch (e) {
    throw new StoreError(
      "invalid_options",
      `source options are not JSON: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (json.length > MAX_OPTIONS_LENGTH) {
    throw new StoreError("invalid_options", `source options are at most ${MAX_OPTIONS_LENGTH} bytes of JSON`);
  }
  return json;
}

function checkEnabled(enabled: unknown): boolean {
  if (enabled === undefined) return true;
  if (typeof enabled !== "boolean") throw new StoreError("invalid_options", "enabled must be true or false");
  return enabled;
}

/** Create a source; throws `conflict` when the id is taken, `invalid_*` on bad input. */
export async function createSource(db: Database, input: NewSource): Promise<SourceRecord> {
  const id = input.id === undefined ? newId() : checkSourceId(input.id);
  const now = input.now ?? Date.now();
  const record: SourceRecord = {
    id,
    name: checkName(input.name),
    kind: checkKind(input.kind),
    url: checkUrl(input.url),
    options: {},
    enabled: checkEnabled(input.enabled),
    owner: input.owner ?? null,
    createdAt: now,
    updatedAt: now,
  };
  const options = checkOptions(input.options);
  record.options = JSON.parse(options) as Record<string, unknown>;
  try {
    await db.run(`INSERT INTO sources (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
      record.id,
      record.name,
      record.kind,
      record.url,
      options,
      record.enabled,
      record.owner,
      now,
      now,
    ]);
  } catch (e) {
    if (isUniqueViolation(e)) throw new StoreError("conflict", `a source with id "${id}" already exists`);
    throw e;
  }
  return record;
}

/** One source, or undefined. */
export async function getSource(db: Database, id: string): Promise<SourceRecord | undefined> {
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM sources WHERE id = ?`, [id]);
  return rows[0] ? toRecord(rows[0]) : undefined;
}

/** All sources, oldest first. */
export async function listSources(db: Database): Promise<SourceRecord[]> {
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM sources ORDER BY created_at, id`);
  return rows.map(toRecord);
}

/**
 * Change the given fields of a source (absent fields keep their value; `url: null` clears the url; `options`
 * replaces the whole object). Returns the updated record; throws `not_found`.
 */
export async function updateSource(db: Database, id: string, patch: SourcePatch): Promise<SourceRecord> {
  const sets: string[] = [];
  const params: (string | number | boolean | null)[] = [];
  if (patch.name !== undefined) {
    sets.push("name = ?");
    params.push(checkName(patch.name));
  }
  if (patch.kind !== undefined) {
    sets.push("kind = ?");
    params.push(checkKind(patch.kind));
  }
  if (patch.url !== undefined) {
    sets.push("url = ?");
    params.push(checkUrl(patch.url));
  }
  if (patch.options !== undefined) {
    sets.push("options = ?");
    params.push(checkOptions(patch.options));
  }
  if (patch.enabled !== undefined) {
    sets.push("enabled = ?");
    params.push(checkEnabled(patch.enabled));
  }
  sets.push("updated_at = ?");
  params.push(patch.now ?? Date.now());
  return db.transaction(async (tx) => {
    const { changes } = await tx.run(`UPDATE sources SET ${sets.join(", ")} WHERE id = ?`, [...params, id]);
    const after = changes > 0 ? await getSource(tx, id) : undefined;
    if (!after) throw new StoreError("not_found", `no source with id "${id}"`);
    return after;
  });
}

/** How many sources of `kind` `owner` has added. */
export async function countOwnedSources(db: Database, owner: string, kind: SourceKind): Promise<number> {
  const rows = await db.query<{ n: number | string }>(
    "SELECT COUNT(*) AS n FROM sources WHERE owner = ? AND kind = ?",
    [owner, kind],
  );
  return Number(rows[0]?.n ?? 0);
}

/** Delete a source (its events stay); whether it existed. */
export async function deleteSource(db: Database, id: string): Promise<boolean> {
  const { changes } = await db.run("DELETE FROM sources WHERE id = ?", [id]);
  return changes > 0;
}

/**
 * Create the source `input.id`, or replace its name, kind, url and options (and `enabled` when given) if it
 * exists; createdAt is kept. Safe under concurrent calls (one INSERT … ON CONFLICT statement).
 */
export async function upsertSource(db: Database, input: UpsertSource): Promise<SourceRecord> {
  const id = checkSourceId(input.id);
  const name = checkName(input.name);
  const kind = checkKind(input.kind);
  const url = checkUrl(input.url);
  const options = checkOptions(input.options);
  const enabled = checkEnabled(input.enabled);
  const now = input.now ?? Date.now();
  const setEnabled = input.enabled === undefined ? "" : ", enabled = excluded.enabled";
  return db.transaction(async (tx) => {
    await tx.run(
      `INSERT INTO sources (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, url = excluded.url,
         options = excluded.options, updated_at = excluded.updated_at${setEnabled}`,
      [id, name, kind, url, options, enabled, input.owner ?? null, now, now],
    );
    const after = await getSource(tx, id);
    if (!after) throw new Error(`source ${id} vanished during upsert`);
    return after;
  });
}
