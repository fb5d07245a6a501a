/**
 * Camera and video input through ffmpeg: a V4L2 device, an RTSP/HTTP stream or a video file,
 * decoded to raw RGB frames on ffmpeg's stdout. ffmpeg is Debian's (or MASKWATCH_FFMPEG).
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import type { RgbImage } from "../vision/types.ts";

export type CaptureKind = "device" | "stream" | "file";

export interface CaptureOptions {
  kind: CaptureKind;
  /** /dev/videoN, rtsp://…, http(s)://…, or a file path. */
  url: string;
  /** Frames per second taken from the source (ffmpeg's fps filter); default 15. */
  fps?: number;
  /** Frames wider than this are scaled down, keeping the aspect ratio; default 640. */
  maxWidth?: number;
  /** Files: start again at the end. */
  loop?: boolean;
  /**
   * Files: read at the video's own pace, as a camera would deliver it (default true). false
   * reads as fast as frames are consumed and never drops one (analysing a recording).
   */
  realtime?: boolean;
  /** The ffmpeg binary (default: MASKWATCH_FFMPEG or `ffmpeg` on PATH). */
  ffmpeg?: string;
  /** Files: the only protocols ffmpeg may open (uploads: "file", so nothing inside can reach further). */
  protocolWhitelist?: string;
}

export interface Frame {
  image: RgbImage;
  /** Epoch ms when the frame arrived. */
  at: number;
  /** 0, 1, 2 … per capture. */
  seq: number;
}

export type CaptureState = "starting" | "running" | "reconnecting" | "ended" | "stopped";

export interface CaptureHandlers {
  /**
   * Called for every frame. A returned promise holds the next frame back (backpressure) when
   * the capture is not realtime; realtime captures never wait (the consumer drops frames).
   */
  frame(frame: Frame): void | Promise<void>;
  state?(state: CaptureState, error?: string): void;
}

/** The ffmpeg command line for a capture (exported for tests and `--dry-run` style logging). */
export function ffmpegArgs(o: CaptureOptions): string[] {
  const fps = o.fps ?? 15;
  const maxWidth = o.maxWidth ?? 640;
  const input: string[] = [];
  if (o.kind === "device") input.push("-f", "v4l2", "-i", o.url);
  else if (o.kind === "stream") {
    // A stalled network read must end the process so the reconnect loop can take over. The RTSP
    // demuxer rejects -rw_timeout and has its own -timeout (µs); other protocols take -rw_timeout.
    if (/^rtsps?:/i.test(o.url)) input.push("-rtsp_transport", "tcp", "-timeout", "10000000");
    else input.push("-rw_timeout", "10000000");
    input.push("-i", o.url);
  } else {
    if (o.realtime !== false) input.push("-re");
    if (o.loop) input.push("-stream_loop", "-1");
    if (o.protocolWhitelist) input.push("-protocol_whitelist", o.protocolWhitelist);
    input.push("-i", o.url);
  }
  return [
    "-hide_banner",
    "-nostdin",
    "-loglevel",
    "info",
    ...input,
    "-an",
    "-vf",
    `fps=${fps},scale='min(${maxWidth},iw)':-2`,
    "-f",
    "rawvideo",
    "-pix_fmt",
    "rgb24",
    "pipe:1",
  ];
}

/** The output size ffmpeg reports for its first output stream, once that line has arrived. */
export function parseOutputSize(stderr: string): { width: number; height: number } | undefined {
  const out = stderr.indexOf("Output #0");
  if (out < 0) return undefined;
  const line = stderr.slice(out).match(/Stream #0:0[^\n]*?Video:[^\n]*?\b(\d{1,5})x(\d{1,5})\b[^\n]*\n/);
  return line ? { width: Number(line[1]), height: Number(line[2]) } : undefined;
}

const MAX_BACKOFF_MS = 30_000;

/**
 * One ffmpeg-fed source: runs ffmpeg, cuts stdout into frames, and restarts ffmpeg with
 * exponential backoff when a device or stream drops. A file that ends (without loop) ends the
 * capture. Never throws after start(); failures arrive through `state`.
 */
export class FfmpegCapture {
  private child: ChildProcessWithoutNullStreams | undefined;
  private stopped = false;
  private seq = 0;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private lastError: string | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    private readonly options: CaptureOptions,
    private readonly handlers: CaptureHandlers,
  ) {}

  start(): void {
    this.stopped = false;
    this.spawnOnce();
  }

  /** Ends ffmpeg and the reconnect loop; resolves when the process has exited. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.child?.kill("SIGTERM");
    const killer = setTimeout(() => this.child?.kill("SIGKILL"), 3000);
    await this.exited;
    clearTimeout(killer);
    this.handlers.state?.("stopped");
  }

  private spawnOnce(): void {
    const o = this.options;
    const bin = o.ffmpeg ?? process.env.MASKWATCH_FFMPEG ?? "ffmpeg";
    this.handlers.state?.(this.failures ? "reconnecting" : "starting", this.lastError);
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(bin, ffmpegArgs(o), { stdio: ["pipe", "pipe", "pipe"] });
    } catch (err) {
      this.retry(`cannot run ${bin}: ${(err as Error).message}`);
      return;
    }
    this.child = child;
    let stderr = "";
    let size: { width: number; height: number } | undefined;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let gotFrame = false;
    const realtime = o.kind !== "file" || o.realtime !== false;

    const drain = async (): Promise<void> => {
      if (!size) return;
      const frameBytes = size.width * size.height * 3;
      while (pendingBytes >= frameBytes) {
        const all = Buffer.concat(pending, pendingBytes);
        const data = new Uint8Array(frameBytes);
        data.set(all.subarray(0, frameBytes));
        const rest = all.subarray(frameBytes);
        pending = rest.length ? [Buffer.from(rest)] : [];
        pendingBytes = rest.length;
        if (!gotFrame) {
          gotFrame = true;
          this.failures = 0;
          this.lastError = undefined;
          this.handlers.state?.("running");
        }
        const result = this.handlers.frame({
          image: { data, width: size.width, height: size.height },
          at: Date.now(),
          seq: this.seq++,
        });
        if (!realtime && result) {
          child.stdout.pause();
          try {
            await result;
          } finally {
            child.stdout.resume();
          }
        }
      }
    };
    let draining = Promise.resolve();
    child.stdout.on("data", (chunk: Buffer) => {
      pending.push(chunk);
      pendingBytes += chunk.length;
      draining = draining.then(drain, drain);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      // Keep the head (stream description) and a tail (the last error).
      stderr = stderr.length < 16_384 ? stderr + chunk.toString() : stderr.slice(0, 8192) + chunk.toString();
      if (!size) {
        size = parseOutputSize(stderr);
        if (size) draining = draining.then(drain, drain);
      }
    });
    this.exited = new Promise<void>((resolve) => {
      child.on("error", (err) => {
        this.child = undefined;
        if (!this.stopped) this.retry(`cannot run ${bin}: ${err.message}`);
        resolve();
      });
      child.on("close", async (code, signal) => {
        await draining;
        this.child = undefined;
        resolve();
        if (this.stopped) return;
        const reason = lastLine(stderr) || `ffmpeg exited with ${signal ?? code}`;
        if (o.kind === "file" && !o.loop && code === 0 && gotFrame) {
          this.handlers.state?.("ended");
          return;
        }
        this.retry(code === 0 && !gotFrame ? "the source gave no frames" : reason);
      });
    });
  }

  private retry(error: string): void {
    this.lastError = error;
    // A file that cannot be read will not start working: report it once and stop.
    if (this.options.kind === "file" && this.failures >= 2) {
      this.handlers.state?.("ended", error);
      return;
    }
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** this.failures);
    this.failures++;
    this.handlers.state?.("reconnecting", error);
    this.timer = setTimeout(() => {
      if (!this.stopped) this.spawnOnce();
    }, delay);
  }
}

/** The last non-empty line of ffmpeg's stderr (its reason for failing), at most 300 characters. */
export function lastLine(text: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.at(-1)?.slice(0, 300) ?? "";
}
