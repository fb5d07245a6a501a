/**
 * Batch jobs (a zip of images or a video, analysed in the background) and the `jobs` / `job_results`
 * repository. The input bytes live in the row until the job ends, so any replica can process it; every state
 * change is conditional on the state it leaves, so a job deleted (cancelled) or taken over meanwhile is noticed
 * by the processor at its next write.
 */
import { randomBytes } from "node:crypto";
import type { Database, Param } from "./db.ts";
import { StoreError } from "./sources.ts";

export const JOB_KINDS = ["images", "video"] as const;
export type JobKind = (typeof JOB_KINDS)[number];
export const JOB_STATES = ["queued", "active", "completed", "failed", "cancelled"] as const;
export type JobState = (typeof JOB_STATES)[number];
/** States a job never leaves. */
export const FINISHED_JOB_STATES: readonly JobState[] = ["completed", "failed", "cancelled"];

export interface JobRecord {
  id: string;
  kind: JobKind;
  state: JobState;
  /** The detection options as the caller gave them (snake_case), detector resolved. */
  options: Record<string, unknown>;
  inputName: string | null;
  inputSize: number;
  progressDone: number;
  /** null until the processor knows (entries of the zip, frames of the video). */
  progressTotal: number | null;
  /** Faces found so far, and items (images, frames) that failed. */
  faces: number;
  errors: number;
  /** Times a processor has started it (more than 1 after a replica died or stopped mid-way). */
  attempts: number;
  error: string | null;
  createdBy: string | null;
  /** Epoch ms. */
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

export interface NewJob {
  /** Default: `job_` + 16 random hex characters. */
  id?: string;
  kind: JobKind;
  options: Record<string, unknown>;
  input: Uint8Array;
  inputName?: string | null;
  createdBy?: string | null;
  now?: number;
}

/** One result: an image of a zip (by name) or a frame of a video (by time). */
export interface JobResult {
  index: number;
  /** The item without its index: {name | time_s, width, height, faces} or {name | time_s, error}. */
  body: Record<string, unknown>;
}

export const DEFAULT_JOB_LIMIT = 50;
export const MAX_JOB_LIMIT = 500;
export const DEFAULT_RESULT_LIMIT = 1000;
export const MAX_RESULT_LIMIT = 10_000;
const MAX_OPTIONS_LENGTH = 16_384;

interface Row {
  id: string;
  kind: string;
  state: string;
  options: string;
  input_name: string | null;
  input_size: number;
  progress_done: number;
  progress_total: number | null;
  faces: number;
  errors: number;
  attempts: number;
  error: string | null;
  created_by: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

const COLUMNS =
  "id, kind, state, options, input_name, input_size, progress_done, progress_total, faces, errors, attempts, error, created_by, created_at, started_at, finished_at";

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toRecord(r: Row): JobRecord {
  let options: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(r.options);
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed))
      options = parsed as Record<string, unknown>;
  } catch {
    // a hand-edited row: no options
  }
  return {
    id: r.id,
    kind: r.kind as JobKind,
    state: r.state as JobState,
    options,
    inputName: r.input_name,
    inputSize: Number(r.input_size),
    progressDone: Number(r.progress_done),
    progressTotal: num(r.progress_total),
    faces: Number(r.faces),
    errors: Number(r.errors),
    attempts: Number(r.attempts),
    error: r.error,
    createdBy: r.created_by,
    createdAt: Number(r.created_at),
    startedAt: num(r.started_at),
    finishedAt: num(r.finished_at),
  };
}

export function newJobId(): string {
  return `job_${randomBytes(8).toString("hex")}`;
}

/** Insert a queued job; throws StoreError invalid_kind / invalid_options / invalid_id. */
export async function createJob(db: Database, job: NewJob): Promise<JobRecord> {
  const id = job.id ?? newJobId();
  if (typeof id !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(id))
    throw new StoreError("invalid_id", "a job id is 1-64 letters, digits, '_' or '-'");
  if (!(JOB_KINDS as readonly string[]).includes(job.kind))
    throw new StoreError("invalid_kind", `a job's kind is one of ${JOB_KINDS.join(", ")}`);
  if (!job.options || typeof job.options !== "object" || Array.isArray(job.options))
    throw new StoreError("invalid_options", "a job's options are a JSON object");
  const options = JSON.stringify(job.options);
  if (options.length > MAX_OPTIONS_LENGTH)
    throw new StoreError("invalid_options", "the job's options are too long");
  if (!(job.input instanceof Uint8Array)) throw new StoreError("invalid_options", "a job's input is bytes");
  const now = job.now ?? Date.now();
  const inputName = job.inputName ? job.inputName.slice(0, 1024) : null;
  await db.run(
    `INSERT INTO jobs (id, kind, state, options, input, input_name, input_size, progress_done, progress_total,
       faces, errors, attempts, error, created_by, created_at, started_at, finished_at)
     VALUES (?, ?, 'queued', ?, ?, ?, ?, 0, NULL, 0, 0, 0, NULL, ?, ?, NULL, NULL)`,
    [id, job.kind, options, job.input, inputName, job.input.byteLength, job.createdBy ?? null, now],
  );
  return {
    id,
    kind: job.kind,
    state: "queued",
    options: JSON.parse(options),
    inputName,
    inputSize: job.input.byteLength,
    progressDone: 0,
    progressTotal: null,
    faces: 0,
    errors: 0,
    attempts: 0,
    error: null,
    createdBy: job.createdBy ?? null,
    createdAt: now,
    startedAt: null,
    finishedAt: null,
  };
}

/** One job (without its input), or undefined. */
export async function getJob(db: Database, id: string): Promise<JobRecord | undefined> {
  const rows = await db.query<Row>(`SELECT ${COLUMNS} FROM jobs WHERE id = ?`, [id]);
  return rows[0] ? toRecord(rows[0]) : undefined;
}

/** The job's input bytes; undefined when the job is gone or has ended (the input is dropped then). */
export async function getJobInput(db: Database, id: string): Promise<Uint8Array | undefined> {
  const rows = await db.query<{ input: Uint8Array | null }>("SELECT input FROM jobs WHERE id = ?", [id]);
  return rows[0]?.input ?? undefined;
}

export interface ListJobsOptions {
  /** 1..MAX_JOB_LIMIT, default DEFAULT_JOB_LIMIT. */
  limit?: number;
  cursor?: string | null;
  /** Only the jobs this caller created. */
  createdBy?: string;
  state?: JobState;
}

function encodeJobCursor(createdAt: number, id: string): string {
  return Buffer.from(`${createdAt}.${id}`, "utf8").toString("base64url");
}

function decodeJobCursor(cursor: string): { createdAt: number; id: string } {
  const bad = () => new StoreError("invalid_cursor", "malformed pagination cursor");
  if (typeof cursor !== "string" || cursor.length > 200 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  const m = /^(\d{1,16})\.([A-Za-z0-9_-]{1,64})$/.exec(Buffer.from(cursor, "base64url").toString("utf8"));
  if (!m) throw bad();
  return { createdAt: Number(m[1]), id: m[2] };
}

/** Jobs newest first (keyset pagination on created_at, id). */
export async function listJobs(
  db: Database,
  opts: ListJobsOptions = {},
): Promise<{ jobs: JobRecord[]; nextCursor: string | null }> {
  const limit = opts.limit ?? DEFAULT_JOB_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_JOB_LIMIT)
    throw new StoreError("invalid_limit", `limit is an integer from 1 to ${MAX_JOB_LIMIT}`);
  const where: string[] = [];
  const params: Param[] = [];
  if (opts.createdBy !== undefined) {
    where.push("created_by = ?");
    params.push(opts.createdBy);
  }
  if (opts.state !== undefined) {
    if (!(JOB_STATES as readonly string[]).includes(opts.state))
      throw new StoreError("invalid_filter", `state is one of ${JOB_STATES.join(", ")}`);
    where.push("state = ?");
    params.push(opts.state);
  }
  if (opts.cursor) {
    const c = decodeJobCursor(opts.cursor);
    where.push("(created_at < ? OR (created_at = ? AND id < ?))");
    params.push(c.createdAt, c.createdAt, c.id);
  }
  const rows = await db.query<Row>(
    `SELECT ${COLUMNS} FROM jobs ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY created_at DESC, id DESC LIMIT ?`,
    [...params, limit + 1],
  );
  const jobs = rows.slice(0, limit).map(toRecord);
  const last = jobs[jobs.length - 1];
  return { jobs, nextCursor: rows.length > limit && last ? encodeJobCursor(last.createdAt, last.id) : null };
}

/** Ids of the jobs not yet finished (queued or active), oldest first. */
export async function listUnfinishedJobIds(db: Database): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    "SELECT id FROM jobs WHERE state IN ('queued', 'active') ORDER BY created_at, id",
  );
  return rows.map((r) => r.id);
}

/**
 * A processor takes the job: state active, progress and counters reset, earlier partial results deleted (a job
 * re-run after its replica died starts clean). Returns the job, or undefined when it is gone or finished.
 */
export async function startJob(db: Database, id: string, now = Date.now()): Promise<JobRecord | undefined> {
  return db.transaction(async (tx) => {
    const { changes } = await tx.run(
      `UPDATE jobs SET state = 'active', started_at = ?, finished_at = NULL, progress_done = 0,
         progress_total = NULL, faces = 0, errors = 0, error = NULL, attempts = attempts + 1
       WHERE id = ? AND state IN ('queued', 'active')`,
      [now, id],
    );
    if (!changes) return undefined;
    await tx.run("DELETE FROM job_results WHERE job_id = ?", [id]);
    return getJob(tx, id);
  });
}

/**
 * Sets how many items the active job has; false when it is no longer active, or no longer this `attempt`'s
 * (deleted; re-run by another replica after this one lost its lock).
 */
export async function setJobTotal(
  db: Database,
  id: string,
  attempt: number,
  total: number,
): Promise<boolean> {
  const { changes } = await db.run(
    "UPDATE jobs SET progress_total = ? WHERE id = ? AND state = 'active' AND attempts = ?",
    [total, id, attempt],
  );
  return changes > 0;
}

/**
 * Records one item's result and counts it in the progress, in one transaction; false (nothing written) when
 * the job is no longer active or no longer this `attempt`'s.
 */
export async function addJobResult(
  db: Database,
  id: string,
  attempt: number,
  result: JobResult,
  counts: { faces: number; failed: boolean },
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { changes } = await tx.run(
      `UPDATE jobs SET progress_done = progress_done + 1, faces = faces + ?, errors = errors + ?
       WHERE id = ? AND state = 'active' AND attempts = ?`,
      [counts.faces, counts.failed ? 1 : 0, id, attempt],
    );
    if (!changes) return false;
    await tx.run("INSERT INTO job_results (job_id, idx, body) VALUES (?, ?, ?)", [
      id,
      result.index,
      JSON.stringify(result.body),
    ]);
    return true;
  });
}

/**
 * Ends the job (completed or failed, with the job-level error) and drops its input. Only a queued or active
 * job ends, and with `attempt`, only while it is that attempt's; returns false otherwise.
 */
export async function finishJob(
  db: Database,
  id: string,
  state: "completed" | "failed" | "cancelled",
  error: string | null = null,
  attempt?: number,
  now = Date.now(),
): Promise<boolean> {
  const { changes } = await db.run(
    `UPDATE jobs SET state = ?, error = ?, finished_at = ?, input = NULL
     WHERE id = ? AND state IN ('queued', 'active')${attempt === undefined ? "" : " AND attempts = ?"}`,
    [state, error ? error.slice(0, 2000) : null, now, id, ...(attempt === undefined ? [] : [attempt])],
  );
  return changes > 0;
}

/** This attempt of an active job goes back to the queue (its server stopped); false when it is not that. */
export async function requeueJob(db: Database, id: string, attempt: number): Promise<boolean> {
  const { changes } = await db.run(
    "UPDATE jobs SET state = 'queued', started_at = NULL WHERE id = ? AND state = 'active' AND attempts = ?",
    [id, attempt],
  );
  return changes > 0;
}

/** Deletes the job and its results; the state it had, or undefined when there was none. */
export async function deleteJob(db: Database, id: string): Promise<JobState | undefined> {
  const rows = await db.query<{ state: string }>("DELETE FROM jobs WHERE id = ? RETURNING state", [id]);
  return rows[0]?.state as JobState | undefined;
}

/** Results in index order, a page at a time (`after`: the last index of the previous page). */
export async function listJobResults(
  db: Database,
  id: string,
  opts: { after?: number; limit?: number } = {},
): Promise<{ results: JobResult[]; nextCursor: number | null }> {
  const limit = opts.limit ?? DEFAULT_RESULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_RESULT_LIMIT)
    throw new StoreError("invalid_limit", `limit is an integer from 1 to ${MAX_RESULT_LIMIT}`);
  const after = opts.after ?? -1;
  if (!Number.isInteger(after)) throw new StoreError("invalid_cursor", "the cursor is an item index");
  const rows = await db.query<{ idx: number; body: string }>(
    "SELECT idx, body FROM job_results WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?",
    [id, after, limit + 1],
  );
  const results = rows.slice(0, limit).map((r) => {
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(r.body);
    } catch {
      // a hand-edited row
    }
    return { index: Number(r.idx), body };
  });
  const last = results[results.length - 1];
  return { results, nextCursor: rows.length > limit && last ? last.index : null };
}
