/**
 * The detectors the engine can run, by the id users pass as `--detector`: what each is and which
 * models it needs. Kept apart from the engine (and free of ONNX Runtime) so the CLI's help, the
 * server's config and the model routes can list detectors without loading the runtime.
 */
export interface DetectorSpec {
  description: string;
  models: string[];
  /** Downloaded on demand (`maskwatch models pull`), as opposed to installed with the package. */
  optional: boolean;
  /** Its faces carry a mask decision from the network itself (used with mask source "head"). */
  maskHead?: boolean;
  /** It takes any input size: DetectOptions.inputSize sets the long side it scales images to. */
  inputSize?: boolean;
  /**
   * Models whose sessions keep ONNX Runtime's memory arena: nets that only ever see a few fixed
   * input shapes (bounded batches of fixed-size crops), so the arena's peak is bounded, and freeing
   * and faulting in their activations on every run would cost more than the run itself.
   */
  arenaModels?: string[];
}

export const DETECTORS: Record<string, DetectorSpec> = {
  maskwatch: {
    description:
      "Maskwatch's own detector (YuNet-n fine-tuned on masked faces, with a mask head), five landmarks; " +
      "runs at a long side of MASKWATCH_INPUT_SIZE px (default 640)",
    models: ["maskwatch-detector"],
    optional: false,
    maskHead: true,
    inputSize: true,
  },
  mtcnn: {
    description:
      "MTCNN (P/R/O-Net), five landmarks; facenet-pytorch's detect_face pipeline, the replaced service's parameters",
    models: ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"],
    optional: false,
    // Every run is bounded (P-Net levels run in strips of at most MTCNN_LIMITS.pnetPixels, R-Net /
    // O-Net take batches of at most 256 / 64 crops), so the arena's peak is too; without it each run
    // frees and faults in its activations again: R-Net 3×, a 1600-px P-Net level 10× slower here.
    arenaModels: ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"],
  },
  blazeface: {
    description: "MediaPipe BlazeFace (back model, 256×256), whole image letterboxed",
    models: ["blazeface-back-256"],
    optional: false,
  },
  "blazeface-tiled": {
    description: "BlazeFace plus overlapping tiles for small faces in large images (more network runs)",
    models: ["blazeface-back-256"],
    optional: false,
  },
  yunet: {
    description: "YuNet-n (libfacedetection), dynamic input size, five landmarks",
    models: ["yunet-n"],
    optional: true,
    inputSize: true,
  },
  "yunet-s": {
    description: "YuNet-s (libfacedetection), larger and more accurate than YuNet-n",
    models: ["yunet-s"],
    optional: true,
    inputSize: true,
  },
  ultraface: {
    description: "UltraFace RFB-640 (640×480), boxes only",
    models: ["ultraface-rfb-640"],
    optional: true,
  },
  "ultraface-320": {
    description: "UltraFace RFB-320 (320×240), boxes only, fastest",
    models: ["ultraface-rfb-320"],
    optional: true,
  },
  "ultraface-masked": {
    description: "UltraFace RFB-640 trained on faces and masked faces (labels face / masked_face)",
    models: ["ultraface-masked-640"],
    optional: true,
  },
};

export const DEFAULT_DETECTOR = "maskwatch";
/** Long side the maskwatch detector scales images to unless a call says otherwise. */
export const DEFAULT_INPUT_SIZE = 640;
export const INPUT_SIZE_RANGE = [64, 2048] as const;

export const MASK_MODEL = "mask-classifier";

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
