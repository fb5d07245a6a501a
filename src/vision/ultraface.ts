/**
 * UltraFace (Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB): RFB-320 / RFB-640, and the
 * masked-face models RFB-640 / RFB-1280-masked_face-v2 (classes background / face / masked_face).
 *
 * Model contract (checked with onnxruntime): input `input` float32 NCHW [1, 3, H, W] at a fixed
 * size (320×240, 640×480, 1280×960), RGB, (x - 127) / 128. The repository's ONNX inference
 * (detect_imgs_onnx.py) stretches the image to that size with cv2.resize (INTER_LINEAR; no
 * letterbox), and so does this. Outputs `scores` [1, N, C] softmax probabilities and `boxes`
 * [1, N, 4] corner form (x1, y1, x2, y2) normalised to [0, 1]; the exported graph already applied
 * the priors, so decoding is only thresholding and scaling by the image size.
 *
 * Post-processing as in the repo's `predict`: probability ≥ 0.7 (its default), hard NMS at IoU
 * 0.3. For the masked models a face's score is max(face, masked_face) and `label` is the larger
 * class; NMS runs once over both classes (the repo runs it per class, which can report the same
 * person twice, as a face and as a masked face).
 */
import * as ort from "onnxruntime-node";
import { type Box, finalizeFaces, nms } from "./nms.ts";
import { resizeBilinear, writeTensor } from "./preprocess.ts";
import type { Detection, DetectOptions, Detector, Face, RgbImage } from "./types.ts";

export const ULTRAFACE_CLASSES = ["background", "face", "masked_face"] as const;

/**
 * Decodes `scores` [N × C] and `boxes` [N × 4] (normalised corners) into faces in image pixels
 * (width × height) with score ≥ threshold, in prior order. With C > 2 the label is the best
 * non-background class.
 */
export function decodeUltraFace(
  scores: ArrayLike<number>,
  boxes: ArrayLike<number>,
  numClasses: number,
  width: number,
  height: number,
  threshold: number,
): Face[] {
  const n = boxes.length / 4;
  const out: Face[] = [];
  for (let i = 0; i < n; i++) {
    let best = 1;
    for (let c = 2; c < numClasses; c++)
      if (scores[i * numClasses + c] > scores[i * numClasses + best]) best = c;
    const score = scores[i * numClasses + best];
    if (score < threshold) continue;
    const face: Face = {
      box: [
        boxes[i * 4] * width,
        boxes[i * 4 + 1] * height,
        boxes[i * 4 + 2] * width,
        boxes[i * 4 + 3] * height,
      ],
      score,
    };
    if (numClasses > 2) face.label = ULTRAFACE_CLASSES[best] ?? `class_${best}`;
    out.push(face);
  }
  return out;
}

export interface UltraFaceOptions {
  id?: string;
  models?: string[];
  /** Default probability threshold (repo default 0.7). */
  threshold?: number;
  /** Hard NMS IoU threshold (repo: 0.3). */
  nmsThreshold?: number;
  /** Highest-scoring candidates kept before NMS (repo: 200; larger so crowds survive). */
  candidateSize?: number;
}

export class UltraFaceDetector implements Detector {
  readonly id: string;
  readonly models: string[];
  readonly landmarkNames: readonly string[] = [];
  /** Network input [w, h]. */
  readonly inputSize: [number, number];
  /** Number of classes including background (2, or 3 for the masked models). */
  readonly numClasses: number;
  private readonly opts: Required<Pick<UltraFaceOptions, "threshold" | "nmsThreshold" | "candidateSize">>;

  constructor(
    private readonly session: ort.InferenceSession,
    options: UltraFaceOptions = {},
  ) {
    const meta = session.inputMetadata[0];
    const shape = meta?.isTensor ? meta.shape : [];
    const h = shape[2];
    const w = shape[3];
    if (typeof w !== "number" || typeof h !== "number")
      throw new Error("UltraFace: expected a fixed input size");
    this.inputSize = [w, h];
    const si = session.outputNames.indexOf("scores");
    const sm = session.outputMetadata[si];
    const c = sm?.isTensor ? sm.shape[2] : undefined;
    this.numClasses = typeof c === "number" ? c : 2;
    this.id = options.id ?? (this.numClasses > 2 ? "ultraface-masked" : "ultraface");
    this.models = options.models ?? [this.numClasses > 2 ? `ultraface-masked-${w}` : `ultraface-rfb-${w}`];
    this.opts = {
      threshold: options.threshold ?? 0.7,
      nmsThreshold: options.nmsThreshold ?? 0.3,
      candidateSize: options.candidateSize ?? 1000,
    };
  }

  get threshold(): number {
    return this.opts.threshold;
  }

  async detect(image: RgbImage, options: DetectOptions = {}): Promise<Detection> {
    const threshold = options.threshold ?? this.opts.threshold;
    const [W, H] = this.inputSize;
    const timings = { preprocess: 0, inference: 0, postprocess: 0 };
    let t = performance.now();
    const resized = image.width === W && image.height === H ? image : resizeBilinear(image, W, H);
    const tensor = new Float32Array(W * H * 3);
    writeTensor(resized, tensor, 0, { layout: "nchw", mean: 127, std: 128 });
    timings.preprocess = performance.now() - t;

    t = performance.now();
    const out = await this.session.run({
      [this.session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, H, W]),
    });
    timings.inference = performance.now() - t;

    t = performance.now();
    const scores = out.scores?.data as Float32Array | undefined;
    const boxes = out.boxes?.data as Float32Array | undefined;
    if (!scores || !boxes) throw new Error("UltraFace: expected outputs `scores` and `boxes`");
    const numClasses = scores.length / (boxes.length / 4);
    let cands = decodeUltraFace(scores, boxes, numClasses, image.width, image.height, threshold);
    if (cands.length > this.opts.candidateSize) {
      cands = cands.slice().sort((a, b) => b.score - a.score);
      cands = cands.slice(0, this.opts.candidateSize);
    }
    const keep = nms(
      cands.map((f) => f.box as Box),
      cands.map((f) => f.score),
      this.opts.nmsThreshold,
    );
    const faces = finalizeFaces(
      keep.map((i) => cands[i]),
      image.width,
      image.height,
      options,
    );
    timings.postprocess = performance.now() - t;
    return { faces, timings };
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
