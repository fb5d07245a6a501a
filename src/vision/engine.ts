import { availableParallelism } from "node:os";
import * as ort from "onnxruntime-node";
import { modelBytes } from "../models/store.ts";
import { BlazeFaceDetector } from "./blazeface.ts";
import {
  DEFAULT_DETECTOR,
  DEFAULT_INPUT_SIZE,
  type DetectorSpec,
  detectorSpec,
  INPUT_SIZE_RANGE,
  MASK_MODEL,
} from "./catalog.ts";
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

export {
  DEFAULT_DETECTOR,
  DEFAULT_INPUT_SIZE,
  DETECTORS,
  detectorSpec,
  INPUT_SIZE_RANGE,
  MASK_MODEL,
  UnknownDetectorError,
} from "./catalog.ts";

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

/** What a factory gets besides the sessions: its catalogue id and models, and the engine's settings. */
interface FactoryContext extends EngineSettings {
  id: string;
  models: string[];
}

type DetectorFactory = (sessions: ort.InferenceSession[], context: FactoryContext) => Detector;

/** How each catalogue entry is built from its models' sessions (in the entry's `models` order). */
const FACTORIES: Record<string, DetectorFactory> = {
  maskwatch: ([s], { id, models, inputSize }) =>
    new YuNetDetector(s, { id, models, longSide: inputSize, threshold: 0.7 }),
  mtcnn: ([pnet, rnet, onet]) => new MtcnnDetector({ pnet, rnet, onet }),
  blazeface: ([s], { id, models }) => new BlazeFaceDetector(s, { id, models }),
  "blazeface-tiled": ([s], { id, models }) => new BlazeFaceDetector(s, { id, models, tiles: "auto" }),
  yunet: ([s], { id, models }) => new YuNetDetector(s, { id, models }),
  "yunet-s": ([s], { id, models }) => new YuNetDetector(s, { id, models }),
  ultraface: ([s], { id, models }) => new UltraFaceDetector(s, { id, models }),
  "ultraface-320": ([s], { id, models }) => new UltraFaceDetector(s, { id, models }),
  "ultraface-masked": ([s], { id, models }) => new UltraFaceDetector(s, { id, models }),
};

function defaultInputSize(): number {
  const v = Number(process.env.MASKWATCH_INPUT_SIZE);
  return Number.isInteger(v) && v >= INPUT_SIZE_RANGE[0] && v <= INPUT_SIZE_RANGE[1] ? v : DEFAULT_INPUT_SIZE;
}

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
      pending = this.load(id, spec);
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

  private async load(id: string, spec: DetectorSpec): Promise<Detector> {
    const sessions = spec.models.map((model) => this.session(model, spec.arenaModels?.includes(model)));
    return FACTORIES[id](await Promise.all(sessions), { ...this.settings, id, models: spec.models });
  }

  private async session(model: string, arena = false): Promise<ort.InferenceSession> {
    return ort.InferenceSession.create(await modelBytes(model, { dir: this.options.modelDir }), {
      intraOpNumThreads: this.threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
      // Input sizes vary per image: a memory plan cached per shape, and an arena that keeps every
      // peak, would make resident memory grow with each new size seen (see DetectorSpec.arenaModels).
      enableMemPattern: false,
      enableCpuMemArena: arena,
      // Some third-party exports list weights as graph inputs; ORT warns once per weight.
      logSeverityLevel: 3,
      // Idle intra-op threads sleep instead of spinning: on a small shared machine spinning threads
      // take the cores the other workers (and the decoder) need.
      extra: { session: { intra_op: { allow_spinning: "0" } } },
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
