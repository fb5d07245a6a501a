/**
 * Running one job: images of a zip, or frames of a video sampled by ffmpeg, analysed in the inference pool a
 * few at a time (no more than the pool has workers, so live requests are never stuck behind a whole job), each
 * result written to the database with the progress. An image or frame that fails is an error of that item;
 * the job fails only when its input cannot be read at all (or the engine cannot run).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import type { Database } from "../store/db.ts";
import {
  addJobResult,
  finishJob,
  getJobInput,
  type JobRecord,
  requeueJob,
  setJobTotal,
  startJob,
} from "../store/jobs.ts";
import { ffmpegArgs, lastLine, parseOutputSize } from "../streams/ffmpeg.ts";
import type { AnalyzeOptions } from "../vision/engine.ts";
import { ImageError } from "../vision/image.ts";
import { analyzeOptions, type DetectParams } from "../vision/options.ts";
import type { PoolAnalysis, PoolInput } from "../vision/pool.ts";
import { imageEntries } from "./inputs.ts";
import { listZip, readZipEntry, ZipError } from "./zip.ts";

export interface ProcessorDeps {
  db: Database;
  /** The inference pool's analyze (decode + detect in a worker). */
  analyze(input: PoolInput, options: AnalyzeOptions): Promise<PoolAnalysis>;
  /** Items of one job analysed at once (the pool's worker count). */
  concurrency: number;
  /** The detector when a job's options name none (they normally do: resolved when it was made). */
  defaultDetector: string;
  /** Largest image of a zip that is decoded (the server's upload limit). */
  maxImageBytes: number;
  /** The ffmpeg binary (default MASKWATCH_FFMPEG or ffmpeg). */
  ffmpeg?: string;
  log?: JobLogger;
}

export interface JobLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * finished: completed or failed; gone: deleted (cancelled), or re-run elsewhere; interrupted: aborted with
 * SHUTDOWN and put back in the database's queue (state queued) for the queue to hand out again.
 */
export type JobOutcome = "finished" | "gone" | "interrupted";

/** The reason given to the AbortController when the server stops (the job is re-queued, not cancelled). */
export const SHUTDOWN = "shutdown";

/** Video jobs: frames per second taken (default) and the widest frame analysed (default). */
export const DEFAULT_VIDEO_FPS = 1;
export const MAX_VIDEO_FPS = 30;
export const DEFAULT_VIDEO_WIDTH = 1280;

/** Errors of one item: the image or frame is at fault (or crashed its worker), not the job. */
function isItemError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return (
    err instanceof ImageError ||
    err instanceof ZipError ||
    code === "worker_crashed" ||
    code === "inference_failed"
  );
}

function itemError(err: unknown): { code: string; message: string } {
  const e = err as { code?: unknown; message?: unknown };
  return {
    code: typeof e.code === "string" ? e.code : "error",
    message: typeof e.message === "string" ? e.message : String(err),
  };
}

class Stop extends Error {
  constructor(readonly outcome: JobOutcome) {
    super(outcome);
  }
}

/** Runs job `id` to its end; `signal` aborts it (reason SHUTDOWN: interrupted, else gone). */
export async function processJob(deps: ProcessorDeps, id: string, signal: AbortSignal): Promise<JobOutcome> {
  const { db } = deps;
  const job = await startJob(db, id);
  if (!job) return "gone";
  const started = performance.now();
  deps.log?.info({ job: id, kind: job.kind, attempt: job.attempts }, "job started");
  let run: Runner | undefined;
  try {
    const input = await getJobInput(db, id);
    if (!input) throw new Error("the job's input is gone");
    const { fps, max_width, ...params } = job.options as DetectParams & { fps?: number; max_width?: number };
    const options = analyzeOptions(params, deps.defaultDetector);
    run = new Runner(deps, job, options, signal);
    if (job.kind === "video")
      await run.video(input, fps ?? DEFAULT_VIDEO_FPS, max_width ?? DEFAULT_VIDEO_WIDTH);
    else await run.images(input);
    if (!(await finishJob(db, id, "completed", null, job.attempts))) return "gone";
    const final = { job: id, items: run.done, ms: Math.round(performance.now() - started) };
    deps.log?.info(final, "job completed");
    return "finished";
  } catch (err) {
    let outcome: JobOutcome | undefined;
    if (err instanceof Stop) outcome = err.outcome;
    else if (signal.aborted) outcome = signal.reason === SHUTDOWN ? "interrupted" : "gone";
    if (outcome === "interrupted") {
      await run?.settle();
      if (!(await requeueJob(db, id, job.attempts))) outcome = "gone";
    }
    if (outcome) {
      deps.log?.info({ job: id, outcome }, "job stopped");
      return outcome;
    }
    const message = err instanceof Error ? err.message : String(err);
    deps.log?.warn({ job: id, err }, "job failed");
    await finishJob(db, id, "failed", message, job.attempts);
    return "finished";
  } finally {
    // Analyses still in flight after a stop finish before the next job (or the pool's close) comes.
    await run?.settle();
  }
}

/** Retries an analysis the pool refused for being full (the pool's hint, at least 200 ms), until aborted. */
async function analyzeWithRetry(
  deps: ProcessorDeps,
  input: () => PoolInput,
  options: AnalyzeOptions,
  signal: AbortSignal,
): Promise<PoolAnalysis> {
  for (;;) {
    try {
      return await deps.analyze(input(), options);
    } catch (err) {
      const e = err as { code?: string; retryAfterSeconds?: number };
      if (e.code !== "queue_full" || signal.aborted) throw err;
      await new Promise((r) => setTimeout(r, Math.max(200, (e.retryAfterSeconds ?? 1) * 1000)));
    }
  }
}

class Runner {
  done = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown;

  constructor(
    private readonly deps: ProcessorDeps,
    private readonly job: JobRecord,
    private readonly options: AnalyzeOptions,
    private readonly signal: AbortSignal,
  ) {}

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.signal.aborted) throw new Stop(this.signal.reason === SHUTDOWN ? "interrupted" : "gone");
  }

  /** Starts `work` once fewer than `concurrency` items are in flight; its first failure stops the job. */
  private async submit(work: () => Promise<void>): Promise<void> {
    while (this.inFlight.size >= Math.max(1, this.deps.concurrency)) await Promise.race(this.inFlight);
    this.check();
    const p = work()
      .catch((err) => {
        this.failure ??= err;
      })
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /** Waits for every item in flight, whatever its outcome. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  private async drain(): Promise<void> {
    while (this.inFlight.size) await Promise.race(this.inFlight);
    this.check();
  }

  /** Writes one item; a job no longer active (deleted, taken over) stops here. */
  private async record(index: number, body: Record<string, unknown>, faces: number, failed: boolean) {
    const ok = await addJobResult(
      this.deps.db,
      this.job.id,
      this.job.attempts,
      { index, body },
      { faces, failed },
    );
    if (!ok) throw new Stop("gone");
    this.done++;
  }

  private async analyzeItem(index: number, label: Record<string, unknown>, input: () => PoolInput) {
    let result: PoolAnalysis;
    try {
      result = await analyzeWithRetry(this.deps, input, this.options, this.signal);
    } catch (err) {
      if (!isItemError(err)) throw err;
      return this.record(index, { ...label, error: itemError(err) }, 0, true);
    }
    const body = { ...label, width: result.width, height: result.height, faces: result.faces };
    return this.record(index, body, result.faces.length, false);
  }

  async images(zip: Uint8Array): Promise<void> {
    const entries = imageEntries(listZip(zip));
    if (!(await setJobTotal(this.deps.db, this.job.id, this.job.attempts, entries.length)))
      throw new Stop("gone");
    for (const [index, entry] of entries.entries()) {
      await this.submit(async () => {
        const label = { name: entry.name };
        if (entry.size > this.deps.maxImageBytes) {
          const message = `${entry.name} is ${entry.size} bytes; images over ${this.deps.maxImageBytes} bytes are refused`;
          return this.record(index, { ...label, error: { code: "image_too_large", message } }, 0, true);
        }
        let bytes: Uint8Array;
        try {
          bytes = readZipEntry(zip, entry);
        } catch (err) {
          return this.record(index, { ...label, error: itemError(err) }, 0, true);
        }
        // The pool takes the buffer over only when it accepts the job (a queue_full refusal leaves it).
        return this.analyzeItem(index, label, () => ({ bytes }));
      });
    }
    await this.drain();
  }

  async video(bytes: Uint8Array, fps: number, maxWidth: number): Promise<void> {
    const bin = this.deps.ffmpeg ?? process.env.MASKWATCH_FFMPEG ?? "ffmpeg";
    const ext = extname(this.job.inputName ?? "").toLowerCase();
    const file = join(
      tmpdir(),
      `maskwatch-${this.job.id}-${randomBytes(4).toString("hex")}${/^\.[a-z0-9]{1,6}$/.test(ext) ? ext : ""}`,
    );
    await writeFile(file, bytes, { mode: 0o600 });
    try {
      await this.runFfmpeg(bin, file, fps, maxWidth);
    } finally {
      await rm(file, { force: true });
    }
  }

  private async runFfmpeg(bin: string, file: string, fps: number, maxWidth: number): Promise<void> {
    const child = spawn(
      bin,
      ffmpegArgs({ kind: "file", url: file, fps, maxWidth, realtime: false, protocolWhitelist: "file" }),
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const onAbort = () => child.kill("SIGKILL");
    this.signal.addEventListener("abort", onAbort, { once: true });
    let stderr = "";
    let totalSet = false;
    let size: { width: number; height: number } | undefined;
    let sizeKnown!: () => void;
    const sized = new Promise<void>((r) => {
      sizeKnown = r;
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr =
        stderr.length < 65_536 ? stderr + chunk.toString() : stderr.slice(0, 32_768) + chunk.toString();
      if (!totalSet) {
        const d = /Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)/.exec(stderr);
        if (d) {
          totalSet = true;
          const seconds = Number(d[1]) * 3600 + Number(d[2]) * 60 + Number(d[3]);
          const estimate = Math.max(1, Math.round(seconds * fps));
          void setJobTotal(this.deps.db, this.job.id, this.job.attempts, estimate).catch(() => {});
        }
      }
      if (!size) {
        size = parseOutputSize(stderr);
        if (size) sizeKnown();
      }
    });
    const exited = new Promise<{ code: number | null; error?: Error }>((resolve) => {
      child.on("error", (error) => resolve({ code: null, error }));
      child.on("close", (code) => resolve({ code }));
    });
    void exited.then(() => sizeKnown());
    let index = 0;
    try {
      let frame: Uint8Array | undefined;
      let filled = 0;
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        if (!size) await sized;
        if (!size) break;
        const { width, height } = size;
        const frameBytes = width * height * 3;
        let offset = 0;
        while (offset < chunk.length) {
          frame ??= new Uint8Array(frameBytes);
          const n = Math.min(frameBytes - filled, chunk.length - offset);
          frame.set(chunk.subarray(offset, offset + n), filled);
          filled += n;
          offset += n;
          if (filled < frameBytes) continue;
          const data = frame;
          const i = index++;
          frame = undefined;
          filled = 0;
          const label = { time_s: Math.round((i / fps) * 1000) / 1000 };
          await this.submit(() => this.analyzeItem(i, label, () => ({ raw: { data, width, height } })));
        }
      }
      await this.drain();
    } finally {
      this.signal.removeEventListener("abort", onAbort);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    const { code, error } = await exited;
    this.check();
    if (error) throw new Error(`cannot run ${bin}: ${error.message}`);
    if (code !== 0) {
      // ffmpeg names the temporary file; the caller knows the upload by its name.
      const line =
        lastLine(stderr)
          .split(file)
          .join(this.job.inputName ?? "the video") || `ffmpeg exited with ${code}`;
      throw new Error(
        index ? `ffmpeg stopped after ${index} frames: ${line}` : `the video cannot be read: ${line}`,
      );
    }
    if (index === 0) throw new Error("the video has no frames");
    if (!(await setJobTotal(this.deps.db, this.job.id, this.job.attempts, index))) throw new Stop("gone");
  }
}
