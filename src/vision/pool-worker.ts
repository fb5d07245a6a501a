/**
 * Worker-thread entry of InferencePool (pool.ts): one Engine per worker. Decodes and analyses
 * the images the pool sends, one at a time, and answers with the result or a serialised error.
 */
import { parentPort, workerData } from "node:worker_threads";
import sharp from "sharp";
import { isModelError } from "../models/errors.ts";
import { type AnalyzeOptions, Engine, UnknownDetectorError } from "./engine.ts";
import { DEFAULT_LIMITS, type DecodeLimits, decodeImage, ImageError, rawImage } from "./image.ts";
import { scaleFaces } from "./nms.ts";
import type { Face, RgbImage } from "./types.ts";

/**
 * Uploaded images are decoded straight to at most this long side (faces are reported in the
 * original's pixels): memory per request stays bounded whatever the input's size, and no
 * detector here gains from more (MTCNN works on ≤ 2.56 MP, maskwatch at 640 by default).
 */
export const WORKING_MAX_SIDE = 2048;

export interface WorkerInit {
  threads: number;
  modelDir?: string;
  inputSize?: number;
  limits?: DecodeLimits;
  preload: string[];
  preloadMask: boolean;
}

export type WorkerInput = { bytes: Uint8Array } | { raw: RgbImage };

export interface SerializedError {
  name: string;
  code?: string;
  message: string;
  modelId?: string;
  stack?: string;
}

export type ToWorker =
  /** `deadline`: epoch ms after which the job stops at its next checkpoint. */
  | { type: "job"; id: number; input: WorkerInput; options: AnalyzeOptions; deadline?: number }
  /** Nobody waits for job `id` any more: stop it at its next checkpoint. */
  | { type: "cancel"; id: number }
  /** Test hook: the worker exits at once with this code, as a crash would. */
  | { type: "exit"; code: number };

export interface WorkerResult {
  width: number;
  height: number;
  detector: string;
  models: string[];
  faces: Face[];
  timings: { decode: number; preprocess: number; inference: number; postprocess: number; classify?: number };
}

export type FromWorker =
  | { type: "ready" }
  | { type: "init_error"; error: SerializedError }
  | { type: "result"; id: number; result: WorkerResult }
  | { type: "error"; id: number; error: SerializedError };

export function serializeError(err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: "Error", message: String(err) };
  const out: SerializedError = { name: err.name, message: err.message, stack: err.stack };
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") out.code = code;
  if (isModelError(err) && err.modelId !== undefined) out.modelId = err.modelId;
  if (err instanceof ImageError) out.name = "ImageError";
  if (err instanceof UnknownDetectorError) out.name = "UnknownDetectorError";
  return out;
}

// libvips is shared by the process: no operation cache (uploads are never decoded twice) and one
// thread per operation (the pool's workers are the parallelism), which keeps resident memory flat.
sharp.cache(false);
sharp.concurrency(1);

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error("pool-worker.ts must run in a worker thread");
  const init = workerData as WorkerInit;
  const limits = init.limits ?? DEFAULT_LIMITS;
  const engine = new Engine({ threads: init.threads, modelDir: init.modelDir, inputSize: init.inputSize });
  const post = (msg: FromWorker): void => port.postMessage(msg);

  // One job at a time; a cancel can arrive while it awaits the network, and stops it at a checkpoint.
  let current: { id: number; controller: AbortController } | undefined;
  port.on("message", async (msg: ToWorker) => {
    if (msg.type === "exit") process.exit(msg.code);
    if (msg.type === "cancel") {
      if (current?.id === msg.id) current.controller.abort();
      return;
    }
    if (msg.type !== "job") return;
    const controller = new AbortController();
    current = { id: msg.id, controller };
    const timer =
      msg.deadline === undefined
        ? undefined
        : setTimeout(() => controller.abort(), Math.max(0, msg.deadline - Date.now()));
    try {
      const t0 = performance.now();
      const input = msg.input;
      const { image, width, height } =
        "bytes" in input
          ? await decodeImage(input.bytes, limits, { maxSide: WORKING_MAX_SIDE })
          : { ...input.raw, image: rawImage(input.raw.data, input.raw.width, input.raw.height, 3) };
      const decode = performance.now() - t0;
      controller.signal.throwIfAborted();
      const analysis = await engine.analyze(image, { ...msg.options, signal: controller.signal });
      post({
        type: "result",
        id: msg.id,
        result: {
          width,
          height,
          detector: analysis.detector,
          models: analysis.models,
          faces: scaleFaces(analysis.faces, width / image.width, height / image.height),
          timings: { decode, ...analysis.timings },
        },
      });
    } catch (err) {
      post({ type: "error", id: msg.id, error: serializeError(err) });
    } finally {
      clearTimeout(timer);
      current = undefined;
    }
  });

  try {
    await Promise.all(init.preload.map((id) => engine.detector(id)));
    if (init.preloadMask) await engine.maskClassifier();
    post({ type: "ready" });
  } catch (err) {
    post({ type: "init_error", error: serializeError(err) });
  }
}

await main();
