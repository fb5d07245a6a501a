/**
 * A pool of worker threads, each with its own Engine, so that decoding and inference never run
 * on the caller's event loop (the HTTP server keeps answering /health while images are analysed).
 * Jobs wait in a bounded queue; a crashed worker fails only its own job and is replaced.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { ModelError, type ModelErrorCode } from "../models/errors.ts";
import { DEFAULT_DETECTOR, UnknownDetectorError } from "./catalog.ts";
import type { AnalyzeOptions } from "./engine.ts";
import { type DecodeLimits, ImageError, type ImageErrorCode } from "./image.ts";
import type { FromWorker, SerializedError, ToWorker, WorkerInit, WorkerResult } from "./pool-worker.ts";
import type { RgbImage } from "./types.ts";

export interface InferencePoolOptions {
  /** Worker threads (default: os.availableParallelism()). */
  size?: number;
  /** ONNX Runtime intra-op threads per worker (default 1). */
  threadsPerWorker?: number;
  /** Jobs allowed to wait when every worker is busy; more are refused with QueueFullError (default 64). */
  maxQueue?: number;
  /** Decode limits applied in the workers (default: image.ts DEFAULT_LIMITS). */
  limits?: DecodeLimits;
  /** Model cache folder (default: the registry's). */
  modelDir?: string;
  /** Long side the maskwatch detector works at (default: the engine's, MASKWATCH_INPUT_SIZE or 640). */
  inputSize?: number;
  /** Detector ids each worker loads before it counts as ready (default ["mtcnn"]). */
  preload?: string[];
  /** Also load the mask classifier before ready (default false). */
  preloadMask?: boolean;
}

/**
 * An encoded image (decoded in the worker) or raw RGB pixels. The ArrayBuffer behind `bytes` /
 * `raw.data` is transferred to the worker when the view covers all of it (the caller's view is
 * then detached, length 0); otherwise, e.g. for a slice of Node's Buffer pool, it is copied.
 */
export type PoolInput = { bytes: Uint8Array } | { raw: RgbImage };

export type PoolAnalysis = WorkerResult;

export interface PoolStats {
  size: number;
  busy: number;
  queued: number;
  completed: number;
  failed: number;
}

export type InferenceErrorCode = "worker_crashed" | "pool_closed" | "inference_failed" | (string & {});

/** A failure of the pool itself, or a worker error with no more specific class; `status` is an HTTP hint. */
export class InferenceError extends Error {
  constructor(
    readonly code: InferenceErrorCode,
    message: string,
    readonly status: number = 500,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "InferenceError";
  }
}

/** Every worker busy and `maxQueue` jobs already waiting. */
export class QueueFullError extends InferenceError {
  constructor(
    readonly retryAfterSeconds: number,
    maxQueue: number,
  ) {
    super(
      "queue_full",
      `the server is busy (${maxQueue} images waiting); retry in ${retryAfterSeconds} s`,
      503,
    );
    this.name = "QueueFullError";
  }
}

/** The job's deadline passed (queued or running): a running one stops at its worker's next checkpoint. */
export class DeadlineError extends InferenceError {
  constructor(ms: number) {
    super(
      "deadline_exceeded",
      `the image was not analysed within ${ms} ms (MASKWATCH_REQUEST_TIMEOUT_MS)`,
      504,
    );
    this.name = "DeadlineError";
  }
}

/** The caller gave up (the client left): nobody waits for the answer. */
export class AbandonedError extends InferenceError {
  constructor() {
    super("abandoned", "the request was abandoned before its image was analysed", 499);
    this.name = "AbandonedError";
  }
}

/** How long a job may take, and a signal that ends it early. */
export interface JobControl {
  /** Milliseconds from now; past it the job fails with DeadlineError. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Re-creates, on this side, the error a worker serialised: same class where we know it, same code and message. */
export function deserializeError(e: SerializedError): Error {
  let err: Error;
  switch (e.name) {
    case "ImageError":
      err = new ImageError(e.code as ImageErrorCode, e.message);
      break;
    case "UnknownDetectorError":
      err = new UnknownDetectorError("");
      err.message = e.message;
      break;
    case "ModelError":
      err = new ModelError(e.code as ModelErrorCode, e.message, { modelId: e.modelId });
      break;
    case "RangeError":
      err = new RangeError(e.message);
      break;
    case "TypeError":
      err = new TypeError(e.message);
      break;
    default:
      err = new InferenceError(e.code ?? "inference_failed", e.message, 500);
  }
  if (e.stack) err.stack = `${err.stack}\n    --- in the worker:\n${e.stack}`;
  return err;
}

interface Job {
  id: number;
  input: PoolInput;
  options: AnalyzeOptions;
  resolve(result: PoolAnalysis): void;
  reject(err: Error): void;
  started?: number;
  /** Clears the deadline timer and the abort listener. */
  cleanup?: () => void;
  /** Epoch ms the worker stops the job at (its next checkpoint). */
  deadline?: number;
  /** Answered already (deadline or abort): the worker's late answer only frees its slot. */
  settled?: boolean;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  job: Job | undefined;
  /** Error reported by the worker ('error' event or init failure), used when it exits. */
  error: Error | undefined;
  exited: boolean;
}

export class InferencePool {
  readonly size: number;
  private readonly threadsPerWorker: number;
  private readonly maxQueue: number;
  private readonly init: WorkerInit;
  private readonly slots = new Set<Slot>();
  private readonly queue: Job[] = [];
  private nextId = 1;
  private completed = 0;
  private failed = 0;
  /** Running mean of a job's wall time in a worker, ms (for retryAfterSeconds). */
  private meanJobMs = 1000;
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private respawnDelayMs = 0;
  private respawnTimer: NodeJS.Timeout | undefined;
  private drained: (() => void) | undefined;

  constructor(options: InferencePoolOptions = {}) {
    this.size = options.size ?? availableParallelism();
    this.threadsPerWorker = options.threadsPerWorker ?? 1;
    this.maxQueue = options.maxQueue ?? 64;
    if (!(Number.isInteger(this.size) && this.size >= 1))
      throw new RangeError("pool size must be at least 1");
    if (!(Number.isInteger(this.threadsPerWorker) && this.threadsPerWorker >= 1))
      throw new RangeError("threadsPerWorker must be at least 1");
    if (!(Number.isInteger(this.maxQueue) && this.maxQueue >= 0))
      throw new RangeError("maxQueue must be a whole number ≥ 0");
    this.init = {
      threads: this.threadsPerWorker,
      modelDir: options.modelDir,
      inputSize: options.inputSize,
      limits: options.limits,
      preload: options.preload ?? [DEFAULT_DETECTOR],
      preloadMask: options.preloadMask ?? false,
    };
  }

  /** True once every worker has loaded its preloaded models (false again while a replacement loads). */
  get ready(): boolean {
    if (this.closing || this.slots.size < this.size) return false;
    for (const s of this.slots) if (!s.ready) return false;
    return true;
  }

  /**
   * Starts the workers and waits until each has loaded its models. Rejects with the first
   * worker's load error (e.g. ModelError "not_pulled"), after stopping the others.
   */
  start(): Promise<void> {
    if (this.closing) return Promise.reject(this.closedError());
    this.starting ??= (async () => {
      const slots = Array.from({ length: this.size }, () => this.spawn());
      try {
        await Promise.all(slots.map((s) => this.whenReady(s)));
      } catch (err) {
        this.starting = undefined;
        for (const s of slots) {
          this.slots.delete(s);
          void s.worker.terminate();
        }
        this.rejectQueued(err as Error);
        throw err;
      }
    })();
    return this.starting;
  }

  /** Decodes (for `bytes`) and analyses one image in a worker. */
  analyze(input: PoolInput, options: AnalyzeOptions = {}, control: JobControl = {}): Promise<PoolAnalysis> {
    if (this.closing) return Promise.reject(this.closedError());
    if (control.signal?.aborted) return Promise.reject(new AbandonedError());
    if (!this.starting) this.start().catch(() => {});
    const idle = this.idleSlot();
    if (!idle && this.queue.length >= this.maxQueue) {
      this.failed++;
      return Promise.reject(new QueueFullError(this.retryAfter(), this.maxQueue));
    }
    return new Promise<PoolAnalysis>((resolve, reject) => {
      const job: Job = { id: this.nextId++, input, options, resolve, reject };
      this.watch(job, control);
      if (idle) this.dispatch(idle, job);
      else this.queue.push(job);
    });
  }

  /**
   * Ends `job` at its deadline or when its signal fires: a queued job leaves the queue; a running one is
   * answered now and its worker told to stop at its next checkpoint (between network runs), its slot
   * staying busy until it has. (Terminating a worker inside ONNX Runtime can abort the process.)
   */
  private watch(job: Job, control: JobControl): void {
    const { timeoutMs, signal } = control;
    if (timeoutMs === undefined && !signal) return;
    if (timeoutMs !== undefined) job.deadline = Date.now() + timeoutMs;
    const end = (err: Error): void => {
      if (job.settled) return;
      const queued = this.queue.indexOf(job);
      if (queued >= 0) {
        this.queue.splice(queued, 1);
        this.fail(job, err);
        this.checkDrained();
        return;
      }
      for (const slot of this.slots) {
        if (slot.job !== job) continue;
        slot.worker.postMessage({ type: "cancel", id: job.id } satisfies ToWorker);
        this.fail(job, err);
        job.settled = true;
        return;
      }
    };
    const timer =
      timeoutMs === undefined ? undefined : setTimeout(() => end(new DeadlineError(timeoutMs)), timeoutMs);
    timer?.unref();
    const onAbort = (): void => end(new AbandonedError());
    signal?.addEventListener("abort", onAbort, { once: true });
    job.cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const { resolve, reject } = job;
    job.resolve = (r) => {
      job.cleanup?.();
      resolve(r);
    };
    job.reject = (e) => {
      job.cleanup?.();
      reject(e);
    };
  }

  stats(): PoolStats {
    let busy = 0;
    for (const s of this.slots) if (s.job) busy++;
    return {
      size: this.size,
      busy,
      queued: this.queue.length,
      completed: this.completed,
      failed: this.failed,
    };
  }

  /**
   * Graceful shutdown: refuses new jobs (InferenceError "pool_closed"), lets the running and
   * queued ones finish, then terminates the workers. After `timeoutMs` (default: no limit) the
   * remaining jobs are rejected and the workers terminated anyway.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.respawnTimer);
      if (this.busyOrQueued()) {
        const drained = new Promise<void>((resolve) => {
          this.drained = resolve;
        });
        let timer: NodeJS.Timeout | undefined;
        const timeout =
          options.timeoutMs === undefined
            ? new Promise<void>(() => {})
            : new Promise<void>((resolve) => {
                timer = setTimeout(resolve, options.timeoutMs);
              });
        await Promise.race([drained, timeout]);
        clearTimeout(timer);
      }
      const err = this.closedError();
      this.rejectQueued(err);
      const slots = [...this.slots];
      this.slots.clear();
      for (const s of slots) {
        s.exited = true;
        if (s.job && !s.job.settled) this.fail(s.job, err);
        s.job = undefined;
      }
      await Promise.all(slots.map((s) => s.worker.terminate()));
    })();
    return this.closing;
  }

  /**
   * Test hook: makes one worker exit as if it had crashed (the busy one with the oldest job,
   * else any). Returns false when there is no worker.
   */
  crashWorkerForTesting(exitCode = 1): boolean {
    let target: Slot | undefined;
    for (const s of this.slots) {
      if (s.exited) continue;
      if (!target || (s.job && (!target.job || s.job.id < target.job.id))) target = s;
    }
    if (!target) return false;
    target.worker.postMessage({ type: "exit", code: exitCode } satisfies ToWorker);
    return true;
  }

  // ---------------------------------------------------------------------------------------

  private spawn(): Slot {
    const worker = createWorker(this.init);
    const slot: Slot = { worker, ready: false, job: undefined, error: undefined, exited: false };
    this.slots.add(slot);
    worker.on("message", (msg: FromWorker) => this.onMessage(slot, msg));
    worker.on("error", (err) => {
      slot.error ??= err;
    });
    worker.on("messageerror", (err) => {
      slot.error ??= err;
    });
    worker.on("exit", (code) => this.onExit(slot, code));
    return slot;
  }

  private whenReady(slot: Slot): Promise<void> {
    return new Promise((resolve, reject) => {
      const onMessage = (msg: FromWorker): void => {
        if (msg.type === "ready") done();
        else if (msg.type === "init_error") done(deserializeError(msg.error));
      };
      const onExit = (code: number): void =>
        done(
          slot.error ?? new InferenceError("worker_crashed", `a worker exited (code ${code}) while loading`),
        );
      const done = (err?: Error): void => {
        slot.worker.off("message", onMessage);
        slot.worker.off("exit", onExit);
        if (err) reject(err);
        else resolve();
      };
      if (slot.ready) return resolve();
      slot.worker.on("message", onMessage);
      slot.worker.on("exit", onExit);
    });
  }

  private onMessage(slot: Slot, msg: FromWorker): void {
    switch (msg.type) {
      case "ready":
        slot.ready = true;
        this.respawnDelayMs = 0;
        this.pump(slot);
        return;
      case "init_error":
        slot.error = deserializeError(msg.error);
        void slot.worker.terminate();
        return;
      case "result":
      case "error": {
        const job = slot.job;
        if (!job || job.id !== msg.id) return;
        slot.job = undefined;
        if (job.settled) {
          this.pump(slot);
          return;
        }
        if (job.started !== undefined) {
          this.meanJobMs = 0.8 * this.meanJobMs + 0.2 * (performance.now() - job.started);
        }
        if (msg.type === "result") {
          this.completed++;
          job.resolve(msg.result);
        } else {
          this.fail(job, deserializeError(msg.error));
        }
        this.pump(slot);
        return;
      }
    }
  }

  private onExit(slot: Slot, code: number): void {
    if (slot.exited) return;
    slot.exited = true;
    const wasReady = slot.ready;
    slot.ready = false;
    this.slots.delete(slot);
    const job = slot.job;
    slot.job = undefined;
    if (job && !job.settled) {
      const reason = slot.error ? `: ${slot.error.message}` : "";
      this.fail(
        job,
        new InferenceError(
          "worker_crashed",
          `the inference worker stopped (exit code ${code}${reason}) while analysing this image`,
          500,
          { cause: slot.error },
        ),
      );
    }
    if (this.closing || !this.starting) {
      this.checkDrained();
      return;
    }
    if (wasReady) {
      this.spawn();
    } else {
      // Died while loading: retry later with backoff, so a broken setup does not spin.
      if (![...this.slots].some((s) => s.ready))
        this.rejectQueued(
          slot.error ?? new InferenceError("worker_crashed", `a worker exited (code ${code}) while loading`),
        );
      this.respawnDelayMs = Math.min(30_000, Math.max(1000, this.respawnDelayMs * 2));
      clearTimeout(this.respawnTimer);
      this.respawnTimer = setTimeout(() => {
        if (this.closing || !this.starting) return;
        while (this.slots.size < this.size) this.spawn();
      }, this.respawnDelayMs);
      this.respawnTimer.unref();
    }
    this.checkDrained();
  }

  private idleSlot(): Slot | undefined {
    for (const s of this.slots) if (s.ready && !s.job && !s.exited) return s;
    return undefined;
  }

  /** Gives `slot` the next queued job, if it is free. */
  private pump(slot: Slot): void {
    if (slot.ready && !slot.job && !slot.exited) {
      const next = this.queue.shift();
      if (next) this.dispatch(slot, next);
    }
    this.checkDrained();
  }

  private dispatch(slot: Slot, job: Job): void {
    slot.job = job;
    job.started = performance.now();
    const { message, transfer } = jobMessage(job);
    try {
      slot.worker.postMessage(message, transfer);
    } catch {
      // An untransferable buffer (or one detached meanwhile): try once more with copies.
      try {
        slot.worker.postMessage(jobMessage(job, true).message);
      } catch (err) {
        slot.job = undefined;
        this.fail(job, new TypeError(`the job could not be sent to a worker: ${(err as Error).message}`));
        this.pump(slot);
      }
    }
  }

  private fail(job: Job, err: Error): void {
    this.failed++;
    job.reject(err);
  }

  private rejectQueued(err: Error): void {
    for (const job of this.queue.splice(0)) this.fail(job, err);
  }

  private busyOrQueued(): boolean {
    if (this.queue.length) return true;
    for (const s of this.slots) if (s.job) return true;
    return false;
  }

  private checkDrained(): void {
    if (this.drained && !this.busyOrQueued()) {
      this.drained();
      this.drained = undefined;
    }
  }

  private retryAfter(): number {
    const waiting = this.queue.length + this.stats().busy;
    return Math.max(1, Math.ceil((waiting * this.meanJobMs) / Math.max(1, this.size) / 1000));
  }

  private closedError(): InferenceError {
    return new InferenceError("pool_closed", "the inference pool is shutting down", 503);
  }
}

/** The message for a job, transferring whole ArrayBuffers and copying views of shared or pooled ones. */
function jobMessage(job: Job, copyAll = false): { message: ToWorker; transfer: ArrayBuffer[] } {
  const transfer: ArrayBuffer[] = [];
  const take = (view: Uint8Array): Uint8Array => {
    const buf = view.buffer;
    if (
      !copyAll &&
      buf instanceof ArrayBuffer &&
      view.byteOffset === 0 &&
      view.byteLength === buf.byteLength &&
      !transfer.includes(buf)
    ) {
      transfer.push(buf);
      return view;
    }
    return new Uint8Array(view); // plain copy: never a view of Buffer's shared pool
  };
  const input =
    "bytes" in job.input
      ? { bytes: take(job.input.bytes) }
      : { raw: { data: take(job.input.raw.data), width: job.input.raw.width, height: job.input.raw.height } };
  return {
    message: { type: "job", id: job.id, input, options: job.options, deadline: job.deadline },
    transfer,
  };
}

const WORKER_URL = new URL("./pool-worker.ts", import.meta.url);

/**
 * Starts pool-worker.ts. On Node 20 a worker does not get `--import tsx` hooks in time for its
 * entry module, so a small bootstrap registers tsx in the worker, then imports the .ts entry;
 * this works alike under `node --import tsx`, the test runner, and bin/maskwatch.js (tsx
 * registered from code). The parent's other execArgv are kept; its tsx ones are dropped so
 * tsx is not registered twice.
 */
function createWorker(init: WorkerInit): Worker {
  const tsxApi = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(bootstrap, {
    eval: true,
    workerData: init,
    name: "maskwatch-inference",
    execArgv: withoutTsx(process.execArgv),
  });
}

function withoutTsx(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--(import|loader|experimental-loader|require)(=(.*))?$/.exec(a);
    if (!m) {
      out.push(a);
      continue;
    }
    const value = m[2] === undefined ? argv[i + 1] : m[3];
    if (m[2] === undefined) i++;
    if (!/(^|[/\\])tsx([/\\]|$)/.test(value ?? "")) out.push(m[2] === undefined ? `${a}=${value}` : a);
  }
  return out;
}
