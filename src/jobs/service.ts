/**
 * Batch jobs as the server uses them: submit (row in the database, then the queue), cancel (the row goes; the
 * replica running it stops at its next write), and the worker's life with the server's.
 */
import type { Database } from "../store/db.ts";
import {
  createJob,
  deleteJob,
  finishJob,
  type JobKind,
  type JobRecord,
  type JobState,
  listUnfinishedJobIds,
} from "../store/jobs.ts";
import type { AnalyzeOptions } from "../vision/engine.ts";
import type { PoolAnalysis, PoolInput } from "../vision/pool.ts";
import type { JobLimits } from "./inputs.ts";
import { type JobLogger, processJob } from "./process.ts";
import { BullQueue, InProcessQueue, type JobQueue } from "./queue.ts";

export interface JobServiceOptions {
  db: Database;
  pool: { analyze(input: PoolInput, options: AnalyzeOptions): Promise<PoolAnalysis>; size: number };
  /** BullMQ on this Redis; absent: the in-process queue. */
  redisUrl?: string;
  defaultDetector: string;
  limits: JobLimits;
  /** BullMQ lock and stalled-check periods (tests shorten them). */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
}

export interface NewJobInput {
  kind: JobKind;
  bytes: Uint8Array;
  name?: string | null;
  options: Record<string, unknown>;
  createdBy?: string | null;
}

/** The queue could not take the job (Redis unreachable); the server answers 503. */
export class JobQueueError extends Error {
  readonly code = "queue_unavailable";
  readonly statusCode = 503;
  constructor(message: string) {
    super(message);
    this.name = "JobQueueError";
  }
}

export class JobService {
  readonly queue: JobQueue;
  readonly limits: JobLimits;
  private log: JobLogger | undefined;
  private started = false;

  constructor(private readonly options: JobServiceOptions) {
    this.limits = options.limits;
    this.queue = options.redisUrl
      ? new BullQueue(options.redisUrl, {
          lockDurationMs: options.lockDurationMs,
          stalledIntervalMs: options.stalledIntervalMs,
          log: {
            info: (o, m) => this.log?.info(o, m),
            warn: (o, m) => this.log?.warn(o, m),
            error: (o, m) => this.log?.error(o, m),
          },
          onFailed: async (id, message) => {
            await finishJob(options.db, id, "failed", message).catch(() => {});
          },
        })
      : new InProcessQueue();
  }

  /** Stores the job and queues it; a queue that cannot take it leaves no row behind (JobQueueError). */
  async submit(input: NewJobInput): Promise<JobRecord> {
    const job = await createJob(this.options.db, {
      kind: input.kind,
      options: input.options,
      input: input.bytes,
      inputName: input.name,
      createdBy: input.createdBy,
    });
    try {
      await this.queue.add(job.id);
    } catch (err) {
      await deleteJob(this.options.db, job.id).catch(() => {});
      throw new JobQueueError(`the job queue is unavailable: ${(err as Error).message}`);
    }
    return job;
  }

  /** Deletes the job (cancelling it when queued or running); the state it had, or undefined. */
  async cancel(id: string): Promise<JobState | undefined> {
    const state = await deleteJob(this.options.db, id);
    if (state === "queued" || state === "active") {
      this.queue.abortLocal(id);
      await this.queue.remove(id);
    }
    return state;
  }

  /**
   * Starts taking jobs, after queueing again every job the database has unfinished: with BullMQ that is a no-op
   * for the jobs Redis holds (same job id) and recovers any Redis lost; the in-process queue takes back the
   * jobs queued or interrupted before a restart (without Redis there is one replica).
   */
  async start(log?: JobLogger): Promise<void> {
    this.log = log;
    if (this.started) return;
    this.started = true;
    const { db, pool, defaultDetector, limits } = this.options;
    const deps = {
      db,
      analyze: (input: PoolInput, options: AnalyzeOptions) => pool.analyze(input, options),
      concurrency: pool.size,
      defaultDetector,
      maxImageBytes: limits.maxImageBytes,
      log,
    };
    const unfinished = await listUnfinishedJobIds(db);
    for (const id of unfinished) await this.queue.add(id);
    await this.queue.start((id, signal) => processJob(deps, id, signal));
    log?.info({ queue: this.queue.kind, requeued: unfinished.length }, "batch jobs: worker started");
  }

  /** Stops taking jobs; a running one goes back to the queue. */
  async close(): Promise<void> {
    await this.queue.close();
  }
}
