/**
 * Detection events (violations and observations of tracked faces) and the `events` repository: insert, keyset
 * pagination, time-bucketed statistics and retention.
 */
import type { Database, Param } from "./db.ts";
import { StoreError } from "./sources.ts";

export const EVENT_KINDS = ["violation", "observation"] as const;
export type EventKind = (typeof EVENT_KINDS)[number];
export const EVENT_LABELS = ["mask", "no_mask", "incorrect"] as const;
export type EventLabel = (typeof EVENT_LABELS)[number];
export type Box = [number, number, number, number];

export interface NewEvent {
  /** Epoch milliseconds (a non-negative integer). */
  at: number;
  sourceId: string;
  /** A 32-bit integer. */
  trackId: number;
  kind: EventKind;
  label: EventLabel;
  /** 0..1. */
  confidence: number;
  /** [x1, y1, x2, y2]. */
  box: Box;
  /** A path relative to the data dir (no `..`, not absolute), or null. */
  snapshot: string | null;
  /** The name of the source's zone the face was in; left out (null) where the source has no zones. */
  zone?: string | null;
}

export interface EventRecord extends NewEvent {
  id: number;
  /** Epoch ms when someone acknowledged it; null until then. */
  acknowledgedAt: number | null;
  /** Who acknowledged it (a user name or an API key's name). */
  acknowledgedBy: string | null;
  /** Whether the whole frame is stored with it (GET …/frame). */
  hasFrame: boolean;
}

export const DEFAULT_EVENT_LIMIT = 100;
export const MAX_EVENT_LIMIT = 1000;
const MAX_SOURCE_ID_LENGTH = 128;
const MAX_SNAPSHOT_LENGTH = 1024;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

export type EventOrder = "desc" | "asc";

export interface EventFilter {
  /** Inclusive, epoch ms. */
  from?: number;
  /** Exclusive, epoch ms. */
  to?: number;
  sourceId?: string;
  /** Only events in this zone. */
  zone?: string;
}

export interface ListEventsOptions extends EventFilter {
  label?: EventLabel;
  kind?: EventKind;
  /** 1..MAX_EVENT_LIMIT, default DEFAULT_EVENT_LIMIT. */
  limit?: number;
  /** The nextCursor of the previous page; it carries its order, so `order` may be left out with it. */
  cursor?: string | null;
  /** By (at, id); default "desc" (newest first). */
  order?: EventOrder;
}

export interface EventPage {
  events: EventRecord[];
  /** Pass as `cursor` for the next page; null when this page is the last. */
  nextCursor: string | null;
}

export type StatsBucket = "hour" | "day";
export const BUCKET_MS: Readonly<Record<StatsBucket, number>> = { hour: 3_600_000, day: 86_400_000 };

export interface EventCounts {
  events: number;
  violations: number;
  observations: number;
  mask: number;
  noMask: number;
  incorrect: number;
}

export interface EventBucket extends EventCounts {
  /** Bucket start, epoch ms (UTC hours/days). */
  start: number;
  /** mask / (mask + noMask + incorrect); null when there are none. */
  complianceRate: number | null;
}

interface Row {
  id: number;
  at: number;
  source_id: string;
  track_id: number;
  kind: string;
  label: string;
  confidence: number;
  box: string;
  snapshot: string | null;
  acknowledged_at: number | null;
  acknowledged_by: string | null;
  has_frame: number | boolean | null;
  zone: string | null;
}

const COLUMNS =
  "id, at, source_id, track_id, kind, label, confidence, box, snapshot, acknowledged_at, acknowledged_by, zone, " +
  "(SELECT COUNT(*) FROM snapshots s WHERE s.event_id = events.id AND s.frame IS NOT NULL) AS has_frame";

function toRecord(r: Row): EventRecord {
  let box: Box = [0, 0, 0, 0];
  try {
    const parsed: unknown = JSON.parse(r.box);
    if (Array.isArray(parsed) && parsed.length === 4) box = parsed.map(Number) as Box;
  } catch {
    // a hand-edited row: keep the zero box
  }
  return {
    id: Number(r.id),
    at: Number(r.at),
    sourceId: r.source_id,
    trackId: Number(r.track_id),
    kind: r.kind as EventKind,
    label: r.label as EventLabel,
    confidence: Number(r.confidence),
    box,
    snapshot: r.snapshot,
    acknowledgedAt: r.acknowledged_at === null ? null : Number(r.acknowledged_at),
    acknowledgedBy: r.acknowledged_by,
    hasFrame: Number(r.has_frame ?? 0) > 0,
    ...(r.zone ? { zone: r.zone } : {}),
  };
}

function invalid(message: string): never {
  throw new StoreError("invalid_event", message);
}

/** A validated copy of `e`; throws StoreError `invalid_event`. */
export function checkEvent(e: NewEvent): NewEvent {
  if (typeof e !== "object" || e === null) invalid("an event is an object");
  if (!Number.isSafeInteger(e.at) || e.at < 0) invalid("event.at is a non-negative integer (epoch ms)");
  if (typeof e.sourceId !== "string" || !e.sourceId || e.sourceId.length > MAX_SOURCE_ID_LENGTH) {
    invalid(`event.sourceId is a string of 1-${MAX_SOURCE_ID_LENGTH} characters`);
  }
  if (!Number.isInteger(e.trackId) || e.trackId < INT32_MIN || e.trackId > INT32_MAX) {
    invalid("event.trackId is a 32-bit integer");
  }
  if (!(EVENT_KINDS as readonly string[]).includes(e.kind)) {
    invalid(`event.kind is one of ${EVENT_KINDS.join(", ")}`);
  }
  if (!(EVENT_LABELS as readonly string[]).includes(e.label)) {
    invalid(`event.label is one of ${EVENT_LABELS.join(", ")}`);
  }
  if (typeof e.confidence !== "number" || !(e.confidence >= 0 && e.confidence <= 1)) {
    invalid("event.confidence is a number in [0, 1]");
  }
  if (
    !Array.isArray(e.box) ||
    e.box.length !== 4 ||
    !e.box.every((v) => typeof v === "number" && Number.isFinite(v))
  ) {
    invalid("event.box is [x1, y1, x2, y2], four finite numbers");
  }
  const snapshot = e.snapshot ?? null;
  if (snapshot !== null) checkSnapshotPath(snapshot);
  const zone = e.zone ?? null;
  if (zone !== null && (typeof zone !== "string" || !zone || zone.length > 100))
    invalid("event.zone is null or a zone name of 1-100 characters");
  return {
    at: e.at,
    sourceId: e.sourceId,
    trackId: e.trackId,
    kind: e.kind,
    label: e.label,
    confidence: e.confidence,
    box: [e.box[0], e.box[1], e.box[2], e.box[3]],
    snapshot,
    ...(zone !== null ? { zone } : {}),
  };
}

/** A snapshot is a relative path inside the data dir: no absolute paths, drive letters, `..` or NUL. */
function checkSnapshotPath(p: unknown): void {
  if (
    typeof p !== "string" ||
    !p ||
    p.length > MAX_SNAPSHOT_LENGTH ||
    p.includes("\0") ||
    /^[/\\]/.test(p) ||
    /^[a-z]:/i.test(p) ||
    p.split(/[/\\]/).some((seg) => seg === "..")
  ) {
    invalid("event.snapshot is null or a path relative to the data dir (no '..', not absolute)");
  }
}

/**
 * Insert one event, with its face JPEG and the whole frame as JPEG when given; committed when the promise
 * resolves.
 */
export async function insertEvent(
  db: Database,
  e: NewEvent,
  jpeg?: Uint8Array,
  frame?: Uint8Array,
): Promise<EventRecord> {
  const ev = checkEvent(jpeg ? { ...e, snapshot: SNAPSHOT_IN_DATABASE } : e);
  const insert = async (tx: Database) => {
    const rows = await tx.query<{ id: number }>(
      `INSERT INTO events (at, source_id, track_id, kind, label, confidence, box, snapshot, zone)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
      [
        ev.at,
        ev.sourceId,
        ev.trackId,
        ev.kind,
        ev.label,
        ev.confidence,
        JSON.stringify(ev.box),
        ev.snapshot,
        ev.zone ?? null,
      ],
    );
    const id = rows[0]?.id;
    if (id === undefined) throw new Error("INSERT … RETURNING id returned no row");
    if (jpeg)
      await tx.run("INSERT INTO snapshots (event_id, jpeg, frame) VALUES (?, ?, ?)", [
        Number(id),
        jpeg,
        frame ?? null,
      ]);
    return {
      id: Number(id),
      ...ev,
      acknowledgedAt: null,
      acknowledgedBy: null,
      hasFrame: Boolean(jpeg && frame),
    };
  };
  // The event and its image are one commit: never an event whose snapshot is missing.
  return jpeg ? db.transaction(insert) : insert(db);
}

/**
 * `events.snapshot` of an event whose JPEG is in the `snapshots` table (any other value is a file path under
 * the data dir, as written before the images moved into the database).
 */
export const SNAPSHOT_IN_DATABASE = "db:snapshots";

/** The JPEG stored with an event, or undefined. */
export async function getSnapshot(db: Database, eventId: number): Promise<Uint8Array | undefined> {
  if (!Number.isSafeInteger(eventId)) return undefined;
  const rows = await db.query<{ jpeg: Uint8Array }>("SELECT jpeg FROM snapshots WHERE event_id = ?", [
    eventId,
  ]);
  return rows[0]?.jpeg;
}

/** The whole frame stored with an event, or undefined. */
export async function getFrame(db: Database, eventId: number): Promise<Uint8Array | undefined> {
  if (!Number.isSafeInteger(eventId)) return undefined;
  const rows = await db.query<{ frame: Uint8Array | null }>(
    "SELECT frame FROM snapshots WHERE event_id = ?",
    [eventId],
  );
  return rows[0]?.frame ?? undefined;
}

/**
 * Mark an event acknowledged by `by` (kept as it was when already acknowledged: the first word stands).
 * Returns the event, or undefined when there is none.
 */
export async function acknowledgeEvent(
  db: Database,
  id: number,
  by: string,
  at = Date.now(),
): Promise<EventRecord | undefined> {
  if (!Number.isSafeInteger(id)) return undefined;
  await db.run(
    "UPDATE events SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ? AND acknowledged_at IS NULL",
    [at, by.slice(0, 200), id],
  );
  return getEvent(db, id);
}

/** One event by id, or undefined. */
export async function getEvent(db: Database, id: number): Promise<EventRecord | undefined> {
  if (!Number.isSafeInteger(id)) return undefined;
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM events WHERE id = ?`, [id]);
  return rows[0] ? toRecord(rows[0]) : undefined;
}

function checkTime(name: string, v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    throw new StoreError("invalid_filter", `${name} is an integer (epoch ms)`);
  }
  return v;
}

/** WHERE clauses (joined with AND) and their parameters for the time range and source. */
function filterClauses(f: EventFilter): { where: string[]; params: Param[] } {
  const where: string[] = [];
  const params: Param[] = [];
  const from = checkTime("from", f.from);
  const to = checkTime("to", f.to);
  if (from !== undefined) {
    where.push("at >= ?");
    params.push(from);
  }
  if (to !== undefined) {
    where.push("at < ?");
    params.push(to);
  }
  if (f.sourceId !== undefined && f.sourceId !== null) {
    if (typeof f.sourceId !== "string") throw new StoreError("invalid_filter", "sourceId is a string");
    where.push("source_id = ?");
    params.push(f.sourceId);
  }
  if (f.zone !== undefined && f.zone !== null) {
    if (typeof f.zone !== "string") throw new StoreError("invalid_filter", "zone is a string");
    where.push("zone = ?");
    params.push(f.zone);
  }
  return { where, params };
}

const whereSql = (where: string[]) => (where.length ? `WHERE ${where.join(" AND ")}` : "");

interface Cursor {
  order: EventOrder;
  at: number;
  id: number;
}

export function encodeCursor(c: Cursor): string {
  return Buffer.from(`${c.order === "asc" ? "a" : "d"}.${c.at}.${c.id}`, "utf8").toString("base64url");
}

/** Decode a cursor; throws StoreError `invalid_cursor` for anything encodeCursor did not make. */
export function decodeCursor(cursor: string): Cursor {
  const bad = () => new StoreError("invalid_cursor", "malformed pagination cursor");
  if (typeof cursor !== "string" || cursor.length > 64 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  const m = /^([ad])\.(\d{1,16})\.(\d{1,16})$/.exec(Buffer.from(cursor, "base64url").toString("utf8"));
  if (!m) throw bad();
  const c: Cursor = { order: m[1] === "a" ? "asc" : "desc", at: Number(m[2]), id: Number(m[3]) };
  if (!Number.isSafeInteger(c.at) || !Number.isSafeInteger(c.id) || encodeCursor(c) !== cursor) throw bad();
  return c;
}

/**
 * Events matching the filters, ordered by (at, id), a page at a time (keyset pagination: no row is skipped or
 * repeated between pages, however many share an `at`, and rows inserted meanwhile never shift a page).
 * Throws StoreError `invalid_limit`, `invalid_cursor` (malformed, or its order differs from `order`),
 * `invalid_filter`.
 */
export async function listEvents(db: Database, opts: ListEventsOptions = {}): Promise<EventPage> {
  const limit = opts.limit ?? DEFAULT_EVENT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_EVENT_LIMIT) {
    throw new StoreError("invalid_limit", `limit is an integer from 1 to ${MAX_EVENT_LIMIT}`);
  }
  if (opts.order !== undefined && opts.order !== "asc" && opts.order !== "desc") {
    throw new StoreError("invalid_filter", 'order is "asc" or "desc"');
  }
  const cursor = opts.cursor ? decodeCursor(opts.cursor) : undefined;
  if (cursor && opts.order !== undefined && cursor.order !== opts.order) {
    throw new StoreError("invalid_cursor", `the cursor is for ${cursor.order} order, not ${opts.order}`);
  }
  const order: EventOrder = cursor?.order ?? opts.order ?? "desc";
  const { where, params } = filterClauses(opts);
  if (opts.label !== undefined) {
    if (!(EVENT_LABELS as readonly string[]).includes(opts.label)) {
      throw new StoreError("invalid_filter", `label is one of ${EVENT_LABELS.join(", ")}`);
    }
    where.push("label = ?");
    params.push(opts.label);
  }
  if (opts.kind !== undefined) {
    if (!(EVENT_KINDS as readonly string[]).includes(opts.kind)) {
      throw new StoreError("invalid_filter", `kind is one of ${EVENT_KINDS.join(", ")}`);
    }
    where.push("kind = ?");
    params.push(opts.kind);
  }
  const cmp = order === "desc" ? "<" : ">";
  if (cursor) {
    where.push(`(at ${cmp} ? OR (at = ? AND id ${cmp} ?))`);
    params.push(cursor.at, cursor.at, cursor.id);
  }
  const dir = order === "desc" ? "DESC" : "ASC";
  const rows = await db.query<Row>(
    `SELECT ${COLUMNS} FROM events ${whereSql(where)} ORDER BY at ${dir}, id ${dir} LIMIT ?`,
    [...params, limit + 1],
  );
  const events = rows.slice(0, limit).map(toRecord);
  const last = events[events.length - 1];
  return {
    events,
    nextCursor: rows.length > limit && last ? encodeCursor({ order, at: last.at, id: last.id }) : null,
  };
}

const COUNTS_SQL = `COUNT(*) AS events,
  COALESCE(SUM(CASE WHEN kind = 'violation' THEN 1 ELSE 0 END), 0) AS violations,
  COALESCE(SUM(CASE WHEN kind = 'observation' THEN 1 ELSE 0 END), 0) AS observations,
  COALESCE(SUM(CASE WHEN label = 'mask' THEN 1 ELSE 0 END), 0) AS mask,
  COALESCE(SUM(CASE WHEN label = 'no_mask' THEN 1 ELSE 0 END), 0) AS no_mask,
  COALESCE(SUM(CASE WHEN label = 'incorrect' THEN 1 ELSE 0 END), 0) AS incorrect`;

interface CountsRow {
  events: number;
  violations: number;
  observations: number;
  mask: number;
  no_mask: number;
  incorrect: number;
}

function toCounts(r: CountsRow | undefined): EventCounts {
  return {
    events: Number(r?.events ?? 0),
    violations: Number(r?.violations ?? 0),
    observations: Number(r?.observations ?? 0),
    mask: Number(r?.mask ?? 0),
    noMask: Number(r?.no_mask ?? 0),
    incorrect: Number(r?.incorrect ?? 0),
  };
}

/**
 * Counts per UTC hour or day (integer division of `at`, done in SQL on BIGINT), ascending, non-empty buckets
 * only. mask/noMask/incorrect count events by label (both kinds). Throws `invalid_bucket`, `invalid_filter`.
 */
export async function eventStats(
  db: Database,
  opts: EventFilter & { bucket: StatsBucket },
): Promise<EventBucket[]> {
  if (opts.bucket !== "hour" && opts.bucket !== "day") {
    throw new StoreError("invalid_bucket", 'bucket is "hour" or "day"');
  }
  const size = BUCKET_MS[opts.bucket];
  const { where, params } = filterClauses(opts);
  // `size` is one of two integer constants, inlined so that both engines divide BIGINT by an integer.
  const rows = await db.query<CountsRow & { bucket: number }>(
    `SELECT at / ${size} AS bucket, ${COUNTS_SQL} FROM events ${whereSql(where)}
     GROUP BY at / ${size} ORDER BY bucket`,
    params,
  );
  return rows.map((r) => {
    const counts = toCounts(r);
    const labelled = counts.mask + counts.noMask + counts.incorrect;
    return {
      start: Number(r.bucket) * size,
      ...counts,
      complianceRate: labelled === 0 ? null : counts.mask / labelled,
    };
  });
}

/** Counts over the whole filtered range (zeros when empty). */
export async function eventTotals(db: Database, opts: EventFilter = {}): Promise<EventCounts> {
  const { where, params } = filterClauses(opts);
  const rows = await db.query<CountsRow>(`SELECT ${COUNTS_SQL} FROM events ${whereSql(where)}`, params);
  return toCounts(rows[0]);
}

/** Counts per UTC hour of the day (0–23) over the filtered range; hours without events are left out. */
export async function eventsByHourOfDay(
  db: Database,
  opts: EventFilter = {},
): Promise<(EventCounts & { hour: number })[]> {
  const { where, params } = filterClauses(opts);
  const rows = await db.query<CountsRow & { hour: number }>(
    `SELECT (at / 3600000) % 24 AS hour, ${COUNTS_SQL} FROM events ${whereSql(where)}
     GROUP BY (at / 3600000) % 24 ORDER BY hour`,
    params,
  );
  return rows.map((r) => ({ hour: Number(r.hour), ...toCounts(r) }));
}

/** Counts per source over the filtered range. */
export async function eventsBySource(
  db: Database,
  opts: EventFilter = {},
): Promise<(EventCounts & { sourceId: string })[]> {
  const { where, params } = filterClauses(opts);
  const rows = await db.query<CountsRow & { source_id: string }>(
    `SELECT source_id, ${COUNTS_SQL} FROM events ${whereSql(where)} GROUP BY source_id ORDER BY source_id`,
    params,
  );
  return rows.map((r) => ({ sourceId: r.source_id, ...toCounts(r) }));
}

/**
 * Delete the events with at < `at` in one transaction; returns how many and the snapshot paths they had (for
 * the caller to remove the files). Throws `invalid_filter`.
 */
export async function deleteEventsBefore(
  db: Database,
  at: number,
): Promise<{ deleted: number; snapshots: string[] }> {
  const before = checkTime("at", at);
  if (before === undefined) throw new StoreError("invalid_filter", "at is an integer (epoch ms)");
  return deleteEvents(db, { to: before });
}

/**
 * Delete one event (`id`) or those in a range (and of a source), in one transaction; returns how many and
 * the snapshot paths they had. An empty filter is refused (`invalid_filter`): erasing everything is a
 * range from 0. Throws `invalid_filter`.
 */
export async function deleteEvents(
  db: Database,
  opts: EventFilter & { id?: number },
): Promise<{ deleted: number; snapshots: string[] }> {
  const { where, params } = filterClauses(opts);
  if (opts.id !== undefined) {
    if (!Number.isSafeInteger(opts.id)) throw new StoreError("invalid_filter", "id is an integer");
    where.push("id = ?");
    params.push(opts.id);
  }
  if (!where.length) throw new StoreError("invalid_filter", "say which events: an id, from/to, or a source");
  return db.transaction(async (tx) => {
    const rows = await tx.query<{ snapshot: string | null }>(
      `DELETE FROM events ${whereSql(where)} RETURNING snapshot`,
      params,
    );
    return {
      deleted: rows.length,
      // Images in the database went with their rows (ON DELETE CASCADE); files are the caller's to remove.
      snapshots: rows
        .map((r) => r.snapshot)
        .filter((s): s is string => typeof s === "string" && s !== SNAPSHOT_IN_DATABASE),
    };
  });
}

/** An event as the API, the live views and webhooks show it (snake_case, ISO time, image URLs). */
export function eventJson(e: EventRecord) {
  return {
    id: e.id,
    time: new Date(e.at).toISOString(),
    source_id: e.sourceId,
    track_id: e.trackId,
    kind: e.kind,
    label: e.label,
    confidence: e.confidence,
    box: e.box,
    zone: e.zone ?? null,
    snapshot_url: e.snapshot ? `/api/v1/events/${e.id}/snapshot` : null,
    has_frame: e.hasFrame,
    frame_url: e.hasFrame ? `/api/v1/events/${e.id}/frame` : null,
    acknowledged_at: e.acknowledgedAt === null ? null : new Date(e.acknowledgedAt).toISOString(),
    acknowledged_by: e.acknowledgedBy,
  };
}
