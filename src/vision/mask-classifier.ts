import * as ort from "onnxruntime-node";
import { cropResize, writeTensor } from "./preprocess.ts";
import type { Face, MaskLabel, MaskResult, RgbImage } from "./types.ts";

/**
 * Three-class mask classifier (mask worn correctly / no mask / worn incorrectly), trained by
 * this project (training/, model card in docs/models/mask-classifier.md).
 *
 * Input contract (as trained): a square around the face box's centre, side 1.25 × the box's
 * longer side, black outside the image, rotated so the eyes are level when the detector gives
 * eye landmarks, resized to 64×64 RGB, (px/255 − 0.5)/0.5, NCHW. Output: softmax over
 * [mask, no_mask, incorrect].
 */
export const MASK_LABELS: readonly MaskLabel[] = ["mask", "no_mask", "incorrect"];
export const CROP_SIZE = 64;
export const CROP_SCALE = 1.25;
/** Faces per network run: bounds memory on crowded frames. */
const BATCH = 64;
/** Below this eye-line angle (radians, ~3°) a crop is not rotated. */
const MIN_ROTATION = 0.05;

export interface MaskClassifierOptions {
  /**
   * Decision threshold: `mask` is reported only when its probability reaches this; otherwise
   * the likelier of `no_mask` and `incorrect`. Raise it to flag doubtful faces as violations.
   */
  threshold?: number;
}

export const DEFAULT_MASK_THRESHOLD = 0.5;

export class MaskClassifier {
  readonly model = "mask-classifier";

  constructor(private readonly session: ort.InferenceSession) {}

  /** One result per face, in order. Faces too small or degenerate still get a result. */
  async classify(
    image: RgbImage,
    faces: readonly Face[],
    options: MaskClassifierOptions = {},
  ): Promise<MaskResult[]> {
    const threshold = options.threshold ?? DEFAULT_MASK_THRESHOLD;
    if (!(threshold >= 0 && threshold <= 1)) throw new RangeError("mask threshold must be between 0 and 1");
    const results: MaskResult[] = [];
    const per = CROP_SIZE * CROP_SIZE * 3;
    for (let start = 0; start < faces.length; start += BATCH) {
      const batch = faces.slice(start, start + BATCH);
      const input = new Float32Array(batch.length * per);
      batch.forEach((face, i) => {
        writeTensor(faceCrop(image, face), input, i * per, { layout: "nchw", mean: 127.5, std: 127.5 });
      });
      const feeds = {
        [this.session.inputNames[0]]: new ort.Tensor("float32", input, [
          batch.length,
          3,
          CROP_SIZE,
          CROP_SIZE,
        ]),
      };
      const out = await this.session.run(feeds);
      const probs = out[this.session.outputNames[0]].data as Float32Array;
      for (let i = 0; i < batch.length; i++)
        results.push(decide(probs.subarray(i * 3, i * 3 + 3), threshold));
    }
    return results;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

/** Applies the decision threshold to one face's probabilities. */
export function decide(p: ArrayLike<number>, threshold: number): MaskResult {
  const scores = { mask: p[0], no_mask: p[1], incorrect: p[2] };
  const label: MaskLabel = p[0] >= threshold ? "mask" : p[1] >= p[2] ? "no_mask" : "incorrect";
  return { label, score: scores[label], scores };
}

/** The classifier's input crop for one face (see the contract above). */
export function faceCrop(image: RgbImage, face: Face): RgbImage {
  const [x1, y1, x2, y2] = face.box;
  const cx = (x1 + x2) / 2;
  const cy = (y1 + y2) / 2;
  const side = Math.max(1, CROP_SCALE * Math.max(x2 - x1, y2 - y1));
  const angle = eyeAngle(face);
  if (Math.abs(angle) < MIN_ROTATION) {
    return cropResize(
      image,
      [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2],
      CROP_SIZE,
      CROP_SIZE,
      "area",
    );
  }
  // Anti-aliased axis-aligned square covering the rotated one, then a bilinear rotation.
  const cover = side * (Math.abs(Math.cos(angle)) + Math.abs(Math.sin(angle)));
  const work = Math.ceil((CROP_SIZE * cover) / side);
  const square = cropResize(
    image,
    [cx - cover / 2, cy - cover / 2, cx + cover / 2, cy + cover / 2],
    work,
    work,
    "area",
  );
  return rotateCentre(square, angle, CROP_SIZE, (side / CROP_SIZE) * (work / cover));
}

/** Angle of the line from the left eye to the right eye (0 when level or unknown). */
function eyeAngle(face: Face): number {
  const l = face.landmarks?.left_eye;
  const r = face.landmarks?.right_eye;
  if (!l || !r || r[0] <= l[0]) return 0;
  return Math.atan2(r[1] - l[1], r[0] - l[0]);
}

/**
 * Samples an out × out image from the centre of `src`, rotated by `angle` (so a line at that
 * angle in `src` comes out level), `step` source pixels per output pixel.
 */
function rotateCentre(src: RgbImage, angle: number, out: number, step: number): RgbImage {
  const data = new Uint8Array(out * out * 3);
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const scx = src.width / 2;
  const scy = src.height / 2;
  for (let y = 0; y < out; y++) {
    for (let x = 0; x < out; x++) {
      const dx = (x + 0.5 - out / 2) * step;
      const dy = (y + 0.5 - out / 2) * step;
      const sx = scx + dx * cos - dy * sin - 0.5;
      const sy = scy + dx * sin + dy * cos - 0.5;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const o = (y * out + x) * 3;
      for (let c = 0; c < 3; c++) {
        const v =
          (1 - fx) * (1 - fy) * px(src, x0, y0, c) +
          fx * (1 - fy) * px(src, x0 + 1, y0, c) +
          (1 - fx) * fy * px(src, x0, y0 + 1, c) +
          fx * fy * px(src, x0 + 1, y0 + 1, c);
        data[o + c] = v + 0.5;
      }
    }
  }
  return { data, width: out, height: out };
}

function px(img: RgbImage, x: number, y: number, c: number): number {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return 0;
  return img.data[(y * img.width + x) * 3 + c];
}
