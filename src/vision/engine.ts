import { availableParallelism } from "node:os";
import * as ort from "onnxruntime-node";
import { modelBytes } from "../models/store.ts";
import { BlazeFaceDetector } from "./blazeface.ts";
import {
  DEFAULT_MASK_THRESHOLD,
  decide,
  MaskClassifier,
  type MaskClassifierOptions,
} from "./mask-classifier.ts";
import { MtcnnDetector } from "./mtcnn.ts";
import type { DetectOptions, Detector, Face, RgbImage, StageTimings } from "./types.ts";
import { UltraFaceDetector } from "./ultraface.ts";
import { YuNetDetector } from "./yunet.ts";

export interface EngineOptions {
  /** Threads per ONNX Runtime session (intra-op). Default: MASKWATCH_THREADS, else the core count. */
  threads?: number;
  /** Model cache folder (default: the registry's). */
  modelDir?: string;
  /** Long side the maskwatch detector works at. Default: MASKWATCH_INPUT_SIZE, else 640. */
  inputSize?: number;
}

/** What an engine hands every detector it creates. */
interface EngineSettings {
  inputSize: number;
}

interface DetectorSpec {
  description: string;
  models: string[];
  /** Downloaded on demand (`maskwatch models pull`), as opposed to installed with the package. */
  optional: boolean;
  /** Its faces carry a mask decision from the network itself (used with mask source "head"). */
  maskHead?: boolean;
  /** It takes any input size: DetectOptions.inputSize sets the long side it scales images to. */
  inputSize?: boolean;
  create(sessions: ort.InferenceSession[], settings: EngineSettings): Detector;
}

/** Every detector the engine can run, by the id users pass as `--detector`. */
export const DETECTORS: Record<string, DetectorSpec> = {
  maskwatch: {
    description:
      "Maskwatch's own detector (YuNet-n fine-tuned on masked faces, with a mask head), five landmarks; " +
      "runs at a long side of MASKWATCH_INPUT_SIZE px (default 640)",
    models: ["maskwatch-detector"],
    optional: false,
    maskHead: true,
    inputSize: true,
    create: ([s], { inputSize }) =>
      new YuNetDetector(s, {
        id: "maskwatch",
        models: ["maskwatch-detector"],
        longSide: inputSize,
        threshold: 0.7,
      }),
  },
  mtcnn: {
    description: "MTCNN (P/R/O-Net), five landmarks; the `mtcnn` Python package's semantics",
    models: ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"],
    optional: false,
    create: ([pnet, rnet, onet]) => new MtcnnDetector({ pnet, rnet, onet }),
  },
  blazeface: {
    description: "MediaPipe BlazeFace (back model, 256×256), whole image letterboxed",
    models: ["blazeface-back-256"],
    optional: false,
    create: ([s]) => new BlazeFaceDetector(s, { id: "blazeface", models: ["blazeface-back-256"] }),
  },
  "blazeface-tiled": {
    description: "BlazeFace plus overlapping tiles for small faces in large images (more network runs)",
    models: ["blazeface-back-256"],
    optional: false,
    create: ([s]) =>
      new BlazeFaceDetector(s, { id: "blazeface-tiled", models: ["blazeface-back-256"], tiles: "auto" }),
  },
  yunet: {
    description: "YuNet-n (libfacedetection), dynamic input size, five landmarks",
    models: ["yunet-n"],
    optional: true,
    inputSize: true,
    create: ([s]) => new YuNetDetector(s, { id: "yunet", models: ["yunet-n"] }),
  },
  "yunet-s": {
    description: "YuNet-s (libfacedetection), larger and more accurate than YuNet-n",
    models: ["yunet-s"],
    optional: true,
    inputSize: true,
    create: ([s]) => new YuNetDetector(s, { id: "yunet-s", models: ["yunet-s"] }),
  },
  ultraface: {
    description: "UltraFace RFB-640 (640×480), boxes only",
    models: ["ultraface-rfb-640"],
    optional: true,
    create: ([s]) => new UltraFaceDetector(s, { id: "ultraface", models: ["ultraface-rfb-640"] }),
  },
  "ultraface-320": {
    description: "UltraFace RFB-320 (320×240), boxes only, fastest",
    models: ["ultraface-rfb-320"],
    optional: true,
    create: ([s]) => new UltraFaceDetector(s, { id: "ultraface-320", models: ["ultraface-rfb-320"] }),
  },
  "ultraface-masked": {
    description: "UltraFace RFB-640 trained on faces and masked faces (labels face / masked_face)",
    models: ["ultraface-masked-640"],
    optional: true,
    create: ([s]) => new UltraFaceDetector(s, { id: "ultraface-masked", models: ["ultraface-masked-640"] }),
  },
};

export const DEFAULT_DETECTOR = "maskwatch";
/** Long side the maskwatch detector scales images to unless a call says otherwise. */
export const DEFAULT_INPUT_SIZE = 640;
export const INPUT_SIZE_RANGE = [64, 2048] as const;

function defaultInputSize(): number {
  const v = Number(process.env.MASKWATCH_INPUT_SIZE);
  return Number.isInteger(v) && v >= INPUT_SIZE_RANGE[0] && v <= INPUT_SIZE_RANGE[1] ? v : DEFAULT_INPUT_SIZE;
}
export const MASK_MODEL = "mask-classifier";

export interface AnalyzeOptions extends DetectOptions {
  detector?: string;
  /** Decide each face's mask (true, or options). */
  mask?: boolean | MaskOptions;
}

export interface MaskOptions extends MaskClassifierOptions {
  /**
   * Where the decision comes from: the separate classifier on face crops (default: measured better,
   * see docs/models/maskwatch-detector.md) or the detector's own mask head, where it has one.
   */
  source?: "head" | "classifier";
}

export interface Analysis {
  detector: string;
  /** Registry ids of every model that ran. */
  models: string[];
  faces: Face[];
  timings: StageTimings & { classify?: number };
}

/** The catalogue entry for `id`; own keys only, so "toString" or "__proto__" are unknown detectors too. */
export function detectorSpec(id: string): DetectorSpec {
  if (!Object.hasOwn(DETECTORS, id)) throw new UnknownDetectorError(id);
  return DETECTORS[id];
}

export class UnknownDetectorError extends Error {
  readonly code = "unknown_detector";
  constructor(id: string) {
    super(`unknown detector "${id}"; choose one of: ${Object.keys(DETECTORS).join(", ")}`);
    this.name = "UnknownDetectorError";
  }
}

/** Creates each detector's sessions once, on first use, and hands the same detector out after. */
export class Engine {
  private readonly detectors = new Map<string, Promise<Detector>>();
  private classifier: Promise<MaskClassifier> | undefined;
  private readonly threads: number;
  private readonly settings: EngineSettings;

  constructor(private readonly options: EngineOptions = {}) {
    const env = Number(process.env.MASKWATCH_THREADS);
    this.threads = options.threads ?? (env > 0 ? env : availableParallelism());
    this.settings = { inputSize: options.inputSize ?? defaultInputSize() };
  }

  async detector(id: string = DEFAULT_DETECTOR): Promise<Detector> {
    const spec = detectorSpec(id);
    let pending = this.detectors.get(id);
    if (!pending) {
      pending = this.load(spec);
      this.detectors.set(id, pending);
      pending.catch(() => this.detectors.delete(id));
    }
    return pending;
  }

  async maskClassifier(): Promise<MaskClassifier> {
    if (!this.classifier) {
      this.classifier = this.session(MASK_MODEL).then((s) => new MaskClassifier(s));
      this.classifier.catch(() => {
        this.classifier = undefined;
      });
    }
    return this.classifier;
  }

  /** Detection, then mask classification when asked: the whole per-image pipeline. */
  async analyze(image: RgbImage, options: AnalyzeOptions = {}): Promise<Analysis> {
    const { detector: id = DEFAULT_DETECTOR, mask, ...detect } = options;
    const detector = await this.detector(id);
    detect.signal?.throwIfAborted();
    const { faces, timings } = await detector.detect(image, detect);
    detect.signal?.throwIfAborted();
    const models = [...detector.models];
    if (!mask) return { detector: id, models, faces: faces.map(({ mask: _, ...f }) => f), timings };
    const opts: MaskOptions = mask === true ? {} : mask;
    if (opts.source === "head") {
      if (!detectorSpec(id).maskHead) throw new RangeError(`the ${id} detector has no mask head`);
      const threshold = opts.threshold ?? DEFAULT_MASK_THRESHOLD;
      if (!(threshold >= 0 && threshold <= 1)) throw new RangeError("mask threshold must be between 0 and 1");
      const decided = faces.map((f) => {
        const p = f.mask?.scores;
        return p ? { ...f, mask: decide([p.mask, p.no_mask, p.incorrect], threshold) } : f;
      });
      return { detector: id, models, faces: decided, timings };
    }
    const classifier = await this.maskClassifier();
    const t = performance.now();
    const results = await classifier.classify(image, faces, opts);
    const classify = performance.now() - t;
    return {
      detector: id,
      models: [...models, classifier.model],
      faces: faces.map((f, i) => ({ ...f, mask: results[i] })),
      timings: { ...timings, classify },
    };
  }

  private async load(spec: DetectorSpec): Promise<Detector> {
    return spec.create(await Promise.all(spec.models.map((model) => this.session(model))), this.settings);
  }

  private async session(model: string): Promise<ort.InferenceSession> {
    return ort.InferenceSession.create(await modelBytes(model, { dir: this.options.modelDir }), {
      intraOpNumThreads: this.threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
      // Input sizes vary per image: a memory plan cached per shape, and an arena that keeps every
      // peak, would make resident memory grow with each new size seen.
      enableMemPattern: false,
      enableCpuMemArena: false,
      // Some third-party exports list weights as graph inputs; ORT warns once per weight.
      logSeverityLevel: 3,
    });
  }

  async close(): Promise<void> {
    const all: Promise<{ dispose(): Promise<void> }>[] = [...this.detectors.values()];
    if (this.classifier) all.push(this.classifier);
    this.detectors.clear();
    this.classifier = undefined;
    await Promise.all(all.map(async (d) => (await d.catch(() => null))?.dispose()));
  }
}
