import * as ort from "onnxruntime-node";
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
/** Floats one crop takes in the network's input tensor. */
export const CROP_FLOATS = 3 * CROP_SIZE * CROP_SIZE;
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
    for (let start = 0; start < faces.length; start += BATCH) {
      const n = Math.min(BATCH, faces.length - start);
      const input = new Float32Array(n * CROP_FLOATS);
      for (let i = 0; i < n; i++) writeFaceCrop(image, faces[start + i], input, i * CROP_FLOATS);
      const probs = await this.probabilities(input, n);
      for (let i = 0; i < n; i++) results.push(decide(probs.subarray(i * 3, i * 3 + 3), threshold));
    }
    return results;
  }

  /**
   * The network alone: `n` crops already in `input` (NCHW, normalised, as `writeFaceCrop`
   * writes them) → n × 3 softmax probabilities [mask, no_mask, incorrect].
   */
  async probabilities(input: Float32Array, n: number): Promise<Float32Array> {
    if (input.length < n * CROP_FLOATS) throw new RangeError("input holds fewer than n crops");
    const data = input.length === n * CROP_FLOATS ? input : input.subarray(0, n * CROP_FLOATS);
    const feeds = {
      [this.session.inputNames[0]]: new ort.Tensor("float32", data, [n, 3, CROP_SIZE, CROP_SIZE]),
    };
    const out = await this.session.run(feeds);
    return out[this.session.outputNames[0]].data as Float32Array;
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

/**
 * Writes one face's crop into `out` at `offset` (in floats): NCHW, (px/255 − 0.5)/0.5, the
 * values of `faceCrop` exactly. Allocates nothing per face (module scratch buffers).
 */
export function writeFaceCrop(image: RgbImage, face: Face, out: Float32Array, offset: number): void {
  if (offset < 0 || offset + CROP_FLOATS > out.length) throw new RangeError("tensor buffer too small");
  const crop = cropInto(image, face);
  const n = CROP_SIZE * CROP_SIZE;
  const g = offset + n;
  const b = offset + 2 * n;
  for (let i = 0, p = 0; i < n; i++, p += 3) {
    out[offset + i] = NORMALISED[crop[p]];
    out[g + i] = NORMALISED[crop[p + 1]];
    out[b + i] = NORMALISED[crop[p + 2]];
  }
}

/** The classifier's input crop for one face (see the contract above), as a new image. */
export function faceCrop(image: RgbImage, face: Face): RgbImage {
  return { data: Uint8Array.from(cropInto(image, face)), width: CROP_SIZE, height: CROP_SIZE };
}

/** px → (px/255 − 0.5)/0.5 as float32, as `writeTensor` computes it. */
const NORMALISED = Float32Array.from({ length: 256 }, (_, v) => (v - 127.5) * (1 / 127.5));

/*
 * The crop in one pass of typed-array loops, no per-face allocation. It reproduces, value for
 * value, what `cropResize(image, square, 64, 64, "area")` (OpenCV INTER_AREA semantics; its
 * area-linear weights when the square is under 64 px) and, for tilted eyes, a bilinear rotation
 * of an anti-aliased covering square gave before: the same taps, the same float32 rounding of
 * intermediate rows, round-half-even to uint8. Areas outside the image read as black.
 */

/** Per-axis resampling taps in scratch typed arrays: output d reads idx/w[start[d] .. start[d+1]). */
class Taps {
  start = new Int32Array(1);
  idx = new Int32Array(256);
  wide = new Float64Array(256);
  w = new Float32Array(256);
  n = 0;
  private out = 0;

  reset(out: number, capacity: number): void {
    if (this.start.length < out + 1) this.start = new Int32Array(out + 1);
    if (this.idx.length < capacity) {
      this.idx = new Int32Array(capacity);
      this.wide = new Float64Array(capacity);
      this.w = new Float32Array(capacity);
    }
    this.n = 0;
    this.out = 0;
    this.start[0] = 0;
  }

  /** As preprocess.ts's TapBuilder.add: off-source pixels are black (skipped); repeats merge. */
  add(i: number, w: number, size: number): void {
    if (i < 0 || i >= size || w === 0) return;
    const n = this.n;
    if (n > this.start[this.out] && this.idx[n - 1] === i) {
      this.wide[n - 1] += w;
      return;
    }
    this.idx[n] = i;
    this.wide[n] = w;
    this.n = n + 1;
  }

  linear(pos: number, w: number, size: number): void {
    const i = Math.floor(pos);
    const f = pos - i;
    if (f < 1e-9) {
      this.add(i, w, size);
    } else {
      this.add(i, w * (1 - f), size);
      this.add(i + 1, w * f, size);
    }
  }

  next(): void {
    this.start[++this.out] = this.n;
  }

  /** The weights as float32, as the separable resampler uses them. */
  /** Whether each output's taps read consecutive pixels (area taps do): set by finish(). */
  contiguous = true;

  finish(): void {
    for (let k = 0; k < this.n; k++) this.w[k] = this.wide[k];
    let contiguous = true;
    for (let d = 0; d < this.out && contiguous; d++) {
      for (let k = this.start[d] + 1; k < this.start[d + 1]; k++) {
        if (this.idx[k] !== this.idx[k - 1] + 1) {
          contiguous = false;
          break;
        }
      }
    }
    this.contiguous = contiguous;
  }
}

/**
 * INTER_AREA taps for [origin, origin + length) of an axis of `size` pixels → `out` pixels: the
 * box filter when shrinking, OpenCV's area-linear weights when growing (`shrink` false).
 */
function areaTaps(t: Taps, size: number, origin: number, length: number, out: number, shrink: boolean): void {
  const scale = length / out;
  t.reset(out, out * (2 * Math.min(Math.ceil(scale), size) + 6));
  const last = length - 1;
  for (let d = 0; d < out; d++) {
    if (shrink) {
      const f1 = d * scale;
      const f2 = f1 + scale;
      const s1 = Math.ceil(f1);
      const s2 = Math.floor(f2);
      const cell = Math.min(scale, length - f1);
      if (s1 - f1 > 1e-3) t.linear(origin + s1 - 1, (s1 - f1) / cell, size);
      // Only s with a pixel floor(origin + s) or the next inside the axis add a tap.
      const lo = Math.max(s1, Math.ceil(-1 - origin));
      const hi = Math.min(s2, Math.ceil(size - origin));
      for (let s = lo; s < hi; s++) t.linear(origin + s, 1 / cell, size);
      if (f2 - s2 > 1e-3) t.linear(origin + s2, Math.min(Math.min(f2 - s2, 1), cell) / cell, size);
    } else {
      const s = Math.floor(d * scale);
      const q = d + 1 - (s + 1) / scale;
      let pos = s + (q <= 0 ? 0 : q - Math.floor(q));
      if (pos < 0) pos = 0;
      if (pos > last) pos = Math.max(0, last);
      t.linear(origin + pos, 1, size);
    }
    t.next();
  }
  t.finish();
}

const X_TAPS = new Taps();
const Y_TAPS = new Taps();
let rows = new Float32Array(64 * CROP_SIZE * 3);
const acc = new Float32Array(128 * 3);
/** The 64×64 result (uint8 RGB), overwritten by every call. */
const CROP = new Uint8ClampedArray(CROP_SIZE * CROP_SIZE * 3);
/** The covering square before a rotation (up to ⌈64·√2⌉ wide). */
const SQUARE = new Uint8ClampedArray(91 * 91 * 3);

/**
 * Area-resamples the box [x1, y1, x2, y2] of `img` to out × out into `dst` (uint8 RGB,
 * row-major, out × out × 3 values written).
 */
function boxArea(
  img: RgbImage,
  box: readonly [number, number, number, number],
  out: number,
  dst: Uint8ClampedArray,
): void {
  const [x1, y1, x2, y2] = box;
  const bw = x2 - x1;
  const bh = y2 - y1;
  if (!(bw > 0 && bh > 0)) throw new RangeError(`empty crop box [${box.join(", ")}]`);
  const shrink = bw >= out && bh >= out;
  areaTaps(X_TAPS, img.width, x1, bw, out, shrink);
  areaTaps(Y_TAPS, img.height, y1, bh, out, shrink);
  const rowLen = out * 3;
  const ys = Y_TAPS.start;
  const yi = Y_TAPS.idx;
  const yw = Y_TAPS.w;
  const ny = Y_TAPS.n;
  if (ny === 0) {
    dst.fill(0, 0, out * rowLen);
    return;
  }
  let yMin = yi[0];
  let yMax = yi[0];
  for (let k = 1; k < ny; k++) {
    const v = yi[k];
    if (v < yMin) yMin = v;
    if (v > yMax) yMax = v;
  }
  const need = (yMax - yMin + 1) * rowLen;
  if (rows.length < need) rows = new Float32Array(need);
  // Locals, not module bindings, in the hot loops.
  const R = rows;
  const A = acc;
  const data = img.data;
  const stride = img.width * 3;
  const xs = X_TAPS.start;
  const xi = X_TAPS.idx;
  const xw = X_TAPS.w;
  // Horizontal pass: each source row the vertical taps read → out RGB floats.
  if (X_TAPS.contiguous) {
    // Each output reads a run of pixels from its first tap's: no index per tap.
    for (let y = yMin; y <= yMax; y++) {
      const src = y * stride;
      let o = (y - yMin) * rowLen;
      for (let dx = 0; dx < out; dx++) {
        let r = 0;
        let g = 0;
        let b = 0;
        const k0 = xs[dx];
        const end = xs[dx + 1];
        let p = src + xi[k0] * 3;
        for (let k = k0; k < end; k++, p += 3) {
          const w = xw[k];
          r += data[p] * w;
          g += data[p + 1] * w;
          b += data[p + 2] * w;
        }
        R[o++] = r;
        R[o++] = g;
        R[o++] = b;
      }
    }
  } else
    for (let y = yMin; y <= yMax; y++) {
      const src = y * stride;
      let o = (y - yMin) * rowLen;
      for (let dx = 0; dx < out; dx++) {
        let r = 0;
        let g = 0;
        let b = 0;
        const end = xs[dx + 1];
        for (let k = xs[dx]; k < end; k++) {
          const p = src + xi[k] * 3;
          const w = xw[k];
          r += data[p] * w;
          g += data[p + 1] * w;
          b += data[p + 2] * w;
        }
        R[o++] = r;
        R[o++] = g;
        R[o++] = b;
      }
    }
  // Vertical pass: blend rows (float32 accumulation), round half to even into dst.
  for (let dy = 0; dy < out; dy++) {
    const t0 = ys[dy];
    const t1 = ys[dy + 1];
    const o = dy * rowLen;
    if (t0 === t1) {
      dst.fill(0, o, o + rowLen);
      continue;
    }
    const base0 = (yi[t0] - yMin) * rowLen;
    const w0 = yw[t0];
    for (let j = 0; j < rowLen; j++) A[j] = R[base0 + j] * w0;
    for (let k = t0 + 1; k < t1; k++) {
      const w = yw[k];
      const base = (yi[k] - yMin) * rowLen;
      for (let j = 0; j < rowLen; j++) A[j] += R[base + j] * w;
    }
    for (let j = 0; j < rowLen; j++) dst[o + j] = A[j];
  }
}

/** The contract crop into the CROP scratch; returns it. */
function cropInto(image: RgbImage, face: Face): Uint8ClampedArray {
  const [x1, y1, x2, y2] = face.box;
  const cx = (x1 + x2) / 2;
  const cy = (y1 + y2) / 2;
  const side = Math.max(1, CROP_SCALE * Math.max(x2 - x1, y2 - y1));
  const angle = eyeAngle(face);
  if (Math.abs(angle) < MIN_ROTATION) {
    boxArea(image, [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], CROP_SIZE, CROP);
    return CROP;
  }
  // Anti-aliased axis-aligned square covering the rotated one, then a bilinear rotation.
  const cover = side * (Math.abs(Math.cos(angle)) + Math.abs(Math.sin(angle)));
  const work = Math.ceil((CROP_SIZE * cover) / side);
  boxArea(image, [cx - cover / 2, cy - cover / 2, cx + cover / 2, cy + cover / 2], work, SQUARE);
  rotateCentre(SQUARE, work, angle, CROP_SIZE, (side / CROP_SIZE) * (work / cover), CROP);
  return CROP;
}

/** Angle of the line from the left eye to the right eye (0 when level or unknown). */
function eyeAngle(face: Face): number {
  const l = face.landmarks?.left_eye;
  const r = face.landmarks?.right_eye;
  if (!l || !r || r[0] <= l[0]) return 0;
  return Math.atan2(r[1] - l[1], r[0] - l[0]);
}

/**
 * Samples out × out from the centre of the size × size `src`, rotated by `angle` (so a line at
 * that angle in `src` comes out level), `step` source pixels per output pixel; bilinear, black
 * outside `src`, each value rounded half up.
 */
function rotateCentre(
  src: Uint8ClampedArray,
  size: number,
  angle: number,
  out: number,
  step: number,
  dst: Uint8ClampedArray,
): void {
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const sc = size / 2;
  const stride = size * 3;
  for (let y = 0; y < out; y++) {
    const dy = (y + 0.5 - out / 2) * step;
    for (let x = 0; x < out; x++) {
      const dx = (x + 0.5 - out / 2) * step;
      const sx = sc + dx * cos - dy * sin - 0.5;
      const sy = sc + dx * sin + dy * cos - 0.5;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const w00 = (1 - fx) * (1 - fy);
      const w10 = fx * (1 - fy);
      const w01 = (1 - fx) * fy;
      const w11 = fx * fy;
      const o = (y * out + x) * 3;
      const p = y0 * stride + x0 * 3;
      if (x0 >= 0 && y0 >= 0 && x0 + 1 < size && y0 + 1 < size) {
        for (let c = 0; c < 3; c++) {
          const v =
            w00 * src[p + c] +
            w10 * src[p + 3 + c] +
            w01 * src[p + stride + c] +
            w11 * src[p + stride + 3 + c];
          dst[o + c] = Math.floor(v + 0.5);
        }
        continue;
      }
      const in0 = y0 >= 0 && y0 < size;
      const in1 = y0 + 1 >= 0 && y0 + 1 < size;
      const inL = x0 >= 0 && x0 < size;
      const inR = x0 + 1 >= 0 && x0 + 1 < size;
      for (let c = 0; c < 3; c++) {
        const v =
          w00 * (in0 && inL ? src[p + c] : 0) +
          w10 * (in0 && inR ? src[p + 3 + c] : 0) +
          w01 * (in1 && inL ? src[p + stride + c] : 0) +
          w11 * (in1 && inR ? src[p + stride + 3 + c] : 0);
        dst[o + c] = Math.floor(v + 0.5);
      }
    }
  }
}
