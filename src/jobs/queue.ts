/**
 * Which replica runs which job. With Redis (REDIS_URL), a BullMQ queue shared by every replica: the job's data
 * is its id (the rest is in the database), one job at a time per replica, one attempt; a replica that dies
 * mid-job loses its lock and BullMQ's stalled-job check hands the job to another replica, which starts it
 * over. Without Redis, an in-process queue with the same semantics. Either way, a replica that stops puts its
 * running job back in the queue.
 */
import { Queue, WaitingError, Worker } from "bullmq";
import { Redis } from "ioredis";
import type { JobLogger, JobOutcome } from "./process.ts";
import { SHUTDOWN } from "./process.ts";

/** Runs one job to its end; aborted with reason SHUTDOWN when the replica stops. */
export type JobProcessor = (id: string, signal: AbortSignal) => Promise<JobOutcome>;

export interface JobQueue {
  readonly kind: "bullmq" | "in-process";
  /** Queue job `id` (already in the database). */
  add(id: string): Promise<void>;
  /** Start taking jobs, one at a time. */
  start(processor: JobProcessor): Promise<void>;
  /** Drop a job that has not started (best effort; a running one notices its row is gone). */
  remove(id: string): Promise<void>;
  /** Stop taking jobs; the running one is aborted with SHUTDOWN and waited for. */
  close(): Promise<void>;
  /** Abort the job if this replica is running it (it was deleted). */
  abortLocal(id: string): void;
}

export const QUEUE_NAME = "maskwatch-jobs";

/** Jobs of this process, in order. */
export class InProcessQueue implements JobQueue {
  readonly kind = "in-process" as const;
  private readonly waiting: string[] = [];
  private processor: JobProcessor | undefined;
  private current: { id: string; abort: AbortController } | undefined;
  private loop: Promise<void> | undefined;
  private closed = false;

  async add(id: string): Promise<void> {
    if (this.closed) throw new Error("the job queue is closed");
    if (!this.waiting.includes(id) && this.current?.id !== id) this.waiting.push(id);
    this.kick();
  }

  async start(processor: JobProcessor): Promise<void> {
    this.processor = processor;
    this.kick();
  }

  async remove(id: string): Promise<void> {
    const at = this.waiting.indexOf(id);
    if (at >= 0) this.waiting.splice(at, 1);
  }

  abortLocal(id: string): void {
    if (this.current?.id === id) this.current.abort.abort("cancelled");
  }

  async close(): Promise<void> {
    this.closed = true;
    this.waiting.length = 0;
    this.current?.abort.abort(SHUTDOWN);
    await this.loop;
  }

  private kick(): void {
    if (this.loop || !this.processor || this.closed || !this.waiting.length) return;
    const processor = this.processor;
    this.loop = (async () => {
      await Promise.resolve(); // `this.loop` is set before the loop can end
      for (let id = this.waiting.shift(); id !== undefined && !this.closed; id = this.waiting.shift()) {
        const abort = new AbortController();
        this.current = { id, abort };
        try {
          await processor(id, abort.signal);
        } catch {
          // the processor reports its own failures
        } finally {
          this.current = undefined;
        }
      }
      this.loop = undefined;
    })();
  }
}

export interface BullQueueOptions {
  /** How long a replica's lock on its job lasts unrenewed (BullMQ lockDuration; default 30 s). */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for (default 30 s). */
  stalledIntervalMs?: number;
  log?: JobLogger;
  /** A job BullMQ failed on its own (stalled too often, or the processor threw): record it. */
  onFailed?(id: string, message: string): Promise<void>;
}

/** The BullMQ queue "maskwatch-jobs" on REDIS_URL. */
export class BullQueue implements JobQueue {
  readonly kind = "bullmq" as const;
  private readonly connection: Redis;
  private readonly queue: Queue<{ id: string }>;
  private worker: Worker<{ id: string }> | undefined;
  private workerConnection: Redis | undefined;
  private readonly running = new Map<string, AbortController>();

  constructor(
    private readonly url: string,
    private readonly options: BullQueueOptions = {},
  ) {
    // Adding a job must fail fast when Redis is down (the request answers 503); the worker's blocking
    // connection retries for ever, as BullMQ requires.
    this.connection = new Redis(url, { maxRetriesPerRequest: 2, connectTimeout: 5000 });
    this.connection.on("error", (err) => options.log?.warn({ err }, "redis (job queue)"));
    this.queue = new Queue(QUEUE_NAME, { connection: this.connection });
    this.queue.on("error", (err) => options.log?.warn({ err }, "job queue"));
  }

  async add(id: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("Redis did not answer within 10 s")), 10_000);
    });
    try {
      await Promise.race([
        this.queue.add(
          "job",
          { id },
          { jobId: id, attempts: 1, removeOnComplete: true, removeOnFail: { age: 7 * 86_400, count: 1000 } },
        ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async start(processor: JobProcessor): Promise<void> {
    this.workerConnection = new Redis(this.url, { maxRetriesPerRequest: null });
    this.workerConnection.on("error", (err) => this.options.log?.warn({ err }, "redis (job worker)"));
    this.worker = new Worker<{ id: string }>(
      QUEUE_NAME,
      async (job, token) => {
        const id = job.data.id;
        const abort = new AbortController();
        this.running.set(id, abort);
        try {
          const outcome = await processor(id, abort.signal);
          if (outcome === "interrupted") {
            // Back to the queue for any replica (this one is stopping), not failed.
            await job.moveToWait(token);
            throw new WaitingError();
          }
        } finally {
          this.running.delete(id);
        }
      },
      {
        connection: this.workerConnection,
        concurrency: 1,
        lockDuration: this.options.lockDurationMs ?? 30_000,
        stalledInterval: this.options.stalledIntervalMs ?? 30_000,
        maxStalledCount: 1,
      },
    );
    this.worker.on("error", (err) => this.options.log?.warn({ err }, "job worker"));
    this.worker.on("failed", (job, err) => {
      if (!job || err instanceof WaitingError || err?.name === "WaitingError") return;
      void this.options.onFailed?.(job.data.id, err?.message ?? "the job failed");
    });
  }

  async remove(id: string): Promise<void> {
    // Refused (quietly) when a worker holds the job's lock: that worker notices the deletion itself.
    await this.queue.remove(id).catch(() => undefined);
  }

  abortLocal(id: string): void {
    this.running.get(id)?.abort("cancelled");
  }

  async close(): Promise<void> {
    for (const abort of this.running.values()) abort.abort(SHUTDOWN);
    await this.worker?.close().catch((err) => this.options.log?.warn({ err }, "closing the job worker"));
    await this.queue.close().catch(() => undefined);
    for (const c of [this.workerConnection, this.connection]) {
      if (!c) continue;
      await c.quit().catch(() => c.disconnect());
    }
  }
}
