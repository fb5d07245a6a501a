/**
 * Pure pixel helpers on RgbImage: resizing (OpenCV INTER_LINEAR / INTER_AREA semantics),
 * cropping with zero padding, letterboxing, and conversion to float tensors.
 *
 * All resizing goes through one separable resampler: for each output column (and row) a short
 * list of (source index, weight) taps is computed once, a horizontal pass turns every needed
 * source row into a float row of the output width, and a vertical pass blends those rows.
 * Source indices that fall outside the image contribute 0 (black), which is how `cropResize`
 * pads crops that extend past the image.
 *
 * Rounding: OpenCV's uint8 bilinear path uses 11-bit fixed-point weights; here weights are
 * float32 and the result is rounded to nearest, so values can differ from OpenCV by ±1.
 */
import sharp from "sharp";
import type { RgbImage } from "./types.ts";

export type ResizeMode = "bilinear" | "area";

/** Per-axis resampling taps: output i reads `idx[start[i] .. start[i+1])` with `w[...]`. */
interface Taps {
  start: Int32Array;
  idx: Int32Array;
  w: Float64Array;
}

class TapBuilder {
  private readonly starts: number[] = [0];
  private readonly idx: number[] = [];
  private readonly w: number[] = [];
  constructor(private readonly size: number) {}
  /** Adds a tap; indices outside the source [0, size) are black and are skipped. */
  add(i: number, w: number): void {
    if (i < 0 || i >= this.size || w === 0) return;
    const n = this.idx.length;
    // Merge with the previous tap of the same output when it reads the same pixel.
    if (n > this.starts[this.starts.length - 1] && this.idx[n - 1] === i) {
      this.w[n - 1] += w;
      return;
    }
    this.idx.push(i);
    this.w.push(w);
  }
  next(): void {
    this.starts.push(this.idx.length);
  }
  build(): Taps {
    return {
      start: Int32Array.from(this.starts),
      idx: Int32Array.from(this.idx),
      w: Float64Array.from(this.w),
    };
  }
}

/**
 * Taps for the region [origin, origin + length) of a source axis of `size` pixels resampled to
 * `out` pixels.
 * - "bilinear": OpenCV INTER_LINEAR, half-pixel centres, edge replicated at the region's border.
 * - "area" when shrinking (length >= out): OpenCV INTER_AREA box filter with fractional coverage.
 * - "area-linear": OpenCV's INTER_AREA path used when either axis grows (its own linear weights).
 */
function axisTaps(
  size: number,
  origin: number,
  length: number,
  out: number,
  kind: "bilinear" | "area" | "area-linear",
): Taps {
  const b = new TapBuilder(size);
  const scale = length / out;
  const last = length - 1;
  for (let d = 0; d < out; d++) {
    if (kind === "area") {
      const f1 = d * scale;
      const f2 = f1 + scale;
      const s1 = Math.ceil(f1);
      const s2 = Math.floor(f2);
      const cell = Math.min(scale, length - f1);
      if (s1 - f1 > 1e-3) addLinear(b, origin + s1 - 1, (s1 - f1) / cell);
      for (let s = s1; s < s2; s++) addLinear(b, origin + s, 1 / cell);
      if (f2 - s2 > 1e-3) addLinear(b, origin + s2, Math.min(Math.min(f2 - s2, 1), cell) / cell);
    } else {
      let pos: number;
      if (kind === "bilinear") {
        pos = (d + 0.5) * scale - 0.5;
      } else {
        const s = Math.floor(d * scale);
        const q = d + 1 - (s + 1) / scale;
        pos = s + (q <= 0 ? 0 : q - Math.floor(q));
      }
      // OpenCV clamps to the first / last pixel of the region (edge replicate).
      if (pos < 0) pos = 0;
      if (pos > last) pos = Math.max(0, last);
      addLinear(b, origin + pos, 1);
    }
    b.next();
  }
  return b.build();
}

/** A tap at a possibly fractional source position: split between the two pixels around it. */
function addLinear(b: TapBuilder, pos: number, w: number): void {
  const i = Math.floor(pos);
  const f = pos - i;
  if (f < 1e-9) {
    b.add(i, w);
  } else {
    b.add(i, w * (1 - f));
    b.add(i + 1, w * f);
  }
}

/** Taps padded to a fixed count per output (unused slots: index 0, weight 0) for tight loops. */
function padTaps(t: Taps): { k: number; idx: Int32Array; w: Float32Array } {
  const n = t.start.length - 1;
  let k = 1;
  for (let i = 0; i < n; i++) k = Math.max(k, t.start[i + 1] - t.start[i]);
  const idx = new Int32Array(n * k);
  const w = new Float32Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let j = t.start[i]; j < t.start[i + 1]; j++) {
      idx[i * k + j - t.start[i]] = t.idx[j];
      w[i * k + j - t.start[i]] = t.w[j];
    }
  }
  return { k, idx, w };
}

function resample(img: RgbImage, xt: Taps, yt: Taps, outW: number, outH: number): RgbImage {
  const { data, width } = img;
  const out = new Uint8Array(outW * outH * 3);
  // Rows the vertical pass needs.
  let yMin = Number.POSITIVE_INFINITY;
  let yMax = -1;
  for (let k = 0; k < yt.idx.length; k++) {
    if (yt.idx[k] < yMin) yMin = yt.idx[k];
    if (yt.idx[k] > yMax) yMax = yt.idx[k];
  }
  if (yMax < 0) return { data: out, width: outW, height: outH };
  const rowLen = outW * 3;
  const rows = new Float32Array((yMax - yMin + 1) * rowLen);
  const X = padTaps(xt);
  const kx = X.k;
  const xi = X.idx;
  const xw = X.w;
  for (let y = yMin; y <= yMax; y++) {
    const src = y * width * 3;
    let o = (y - yMin) * rowLen;
    if (kx === 2) {
      // The common bilinear case, unrolled.
      for (let t0 = 0; t0 < outW * 2; t0 += 2) {
        const p = src + xi[t0] * 3;
        const q = src + xi[t0 + 1] * 3;
        const w0 = xw[t0];
        const w1 = xw[t0 + 1];
        rows[o++] = data[p] * w0 + data[q] * w1;
        rows[o++] = data[p + 1] * w0 + data[q + 1] * w1;
        rows[o++] = data[p + 2] * w0 + data[q + 2] * w1;
      }
      continue;
    }
    for (let dx = 0; dx < outW; dx++) {
      let r = 0;
      let g = 0;
      let b = 0;
      const t0 = dx * kx;
      for (let k = t0; k < t0 + kx; k++) {
        const p = src + xi[k] * 3;
        const w = xw[k];
        r += data[p] * w;
        g += data[p + 1] * w;
        b += data[p + 2] * w;
      }
      rows[o++] = r;
      rows[o++] = g;
      rows[o++] = b;
    }
  }
  const Y = padTaps(yt);
  const ky = Y.k;
  const acc = new Float32Array(rowLen);
  const clamped = new Uint8ClampedArray(out.buffer, out.byteOffset, out.length);
  for (let dy = 0; dy < outH; dy++) {
    const t0 = dy * ky;
    const base0 = (Y.idx[t0] - yMin) * rowLen;
    const w0 = Y.w[t0];
    for (let j = 0; j < rowLen; j++) acc[j] = rows[base0 + j] * w0;
    for (let k = t0 + 1; k < t0 + ky; k++) {
      const w = Y.w[k];
      if (w === 0) continue;
      const base = (Y.idx[k] - yMin) * rowLen;
      for (let j = 0; j < rowLen; j++) acc[j] += rows[base + j] * w;
    }
    // A clamped view rounds to nearest (ties to even, like OpenCV's cvRound) and saturates.
    clamped.set(acc, dy * rowLen);
  }
  return { data: out, width: outW, height: outH };
}

function checkSize(w: number, h: number): void {
  if (!(Number.isInteger(w) && Number.isInteger(h) && w > 0 && h > 0)) {
    throw new RangeError(`output size must be positive integers, got ${w}x${h}`);
  }
}

/**
 * Resamples the region box = [x1, y1, x2, y2] (source pixel edges; floats allowed, may extend
 * past the image) to outW × outH. Parts outside the image are black (0). For an integer box this
 * equals "copy the box into a zero-filled canvas, then cv2.resize" (what the `mtcnn` package does).
 * "area" follows cv2.INTER_AREA: a box filter when both axes shrink, OpenCV's area-linear weights
 * when either grows.
 */
export function cropResize(
  img: RgbImage,
  box: readonly [number, number, number, number],
  outW: number,
  outH: number,
  mode: ResizeMode = "bilinear",
): RgbImage {
  checkSize(outW, outH);
  const [x1, y1, x2, y2] = box;
  const bw = x2 - x1;
  const bh = y2 - y1;
  if (!(bw > 0 && bh > 0)) throw new RangeError(`empty crop box [${box.join(", ")}]`);
  let kx: "bilinear" | "area" | "area-linear" = "bilinear";
  let ky: "bilinear" | "area" | "area-linear" = "bilinear";
  if (mode === "area") {
    if (bw >= outW && bh >= outH) kx = ky = "area";
    else kx = ky = "area-linear";
  }
  const xt = axisTaps(img.width, x1, bw, outW, kx);
  const yt = axisTaps(img.height, y1, bh, outH, ky);
  return resample(img, xt, yt, outW, outH);
}

/** cv2.resize(..., INTER_LINEAR): half-pixel centres, edges replicated. */
export function resizeBilinear(img: RgbImage, outW: number, outH: number): RgbImage {
  return cropResize(img, [0, 0, img.width, img.height], outW, outH, "bilinear");
}

/** cv2.resize(..., INTER_AREA): exact box filter when shrinking, OpenCV's linear variant otherwise. */
export function resizeArea(img: RgbImage, outW: number, outH: number): RgbImage {
  return cropResize(img, [0, 0, img.width, img.height], outW, outH, "area");
}

/**
 * Resize by libvips (box shrink, then a linear reduce; linear when growing) on its own
 * threads: several times faster than the JavaScript resamplers above on a 2-core machine.
 * For detectors whose training used no particular OpenCV filter.
 */
export async function resizeFast(img: RgbImage, outW: number, outH: number): Promise<RgbImage> {
  checkSize(outW, outH);
  if (outW === img.width && outH === img.height) return img;
  const data = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(outW, outH, { fit: "fill", kernel: "linear" })
    .raw()
    .toBuffer();
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: outW, height: outH };
}

export interface Letterboxed {
  image: RgbImage;
  /** Original x × scale = letterboxed x (before adding the pad). Exact for x after rounding. */
  scale: number;
  /** Same for y (differs from `scale` only by the rounding of the resized height). */
  scaleY: number;
  /** Left / top padding in letterboxed pixels. Original x = (x - padX) / scale. */
  padX: number;
  padY: number;
}

/**
 * Fits the image into w × h keeping its aspect ratio, centred, padding with black.
 * `align: "topleft"` puts the pad on the right / bottom only. The resize is `resizeFast`
 * unless a mode asks for one of the OpenCV-exact resamplers.
 */
export async function letterbox(
  img: RgbImage,
  w: number,
  h: number,
  opts: { align?: "center" | "topleft"; mode?: ResizeMode | "fast" } = {},
): Promise<Letterboxed> {
  checkSize(w, h);
  const scale = Math.min(w / img.width, h / img.height);
  const iw = Math.max(1, Math.min(w, Math.round(img.width * scale)));
  const ih = Math.max(1, Math.min(h, Math.round(img.height * scale)));
  const padX = opts.align === "topleft" ? 0 : Math.floor((w - iw) / 2);
  const padY = opts.align === "topleft" ? 0 : Math.floor((h - ih) / 2);
  const mode = opts.mode ?? "fast";
  const inner =
    mode === "fast"
      ? await resizeFast(img, iw, ih)
      : mode === "area"
        ? resizeArea(img, iw, ih)
        : resizeBilinear(img, iw, ih);
  const image = pad(inner, w, h, padX, padY);
  return { image, scale: iw / img.width, scaleY: ih / img.height, padX, padY };
}

/** Places `img` at (x, y) on a black canvas of w × h (parts falling outside are cut). */
export function pad(img: RgbImage, w: number, h: number, x = 0, y = 0): RgbImage {
  const out = new Uint8Array(w * h * 3);
  const x0 = Math.max(0, x);
  const x1 = Math.min(w, x + img.width);
  if (x1 <= x0) return { data: out, width: w, height: h };
  for (let r = Math.max(0, y); r < Math.min(h, y + img.height); r++) {
    const src = ((r - y) * img.width + (x0 - x)) * 3;
    out.set(img.data.subarray(src, src + (x1 - x0) * 3), (r * w + x0) * 3);
  }
  return { data: out, width: w, height: h };
}

export interface TensorOptions {
  layout: "nchw" | "nhwc";
  /** Per colour [r, g, b] (or one number for all), applied before any BGR swap. */
  mean: number | readonly [number, number, number];
  /** Per colour [r, g, b] (or one number for all): value = (px - mean) / std. */
  std: number | readonly [number, number, number];
  /** Write channels in B, G, R order. */
  bgr?: boolean;
  /** Swap x and y: the tensor holds a W × H image (MTCNN's caffe-derived nets want this). */
  transpose?: boolean;
}

/** Number of floats one image takes in a tensor. */
export function tensorSize(img: RgbImage): number {
  return img.width * img.height * 3;
}

/** A new [1, 3, H, W] / [1, H, W, 3] tensor (W and H swapped with `transpose`). */
export function toTensor(img: RgbImage, opts: TensorOptions): Float32Array {
  const out = new Float32Array(tensorSize(img));
  writeTensor(img, out, 0, opts);
  return out;
}

/**
 * Writes one image into `out` starting at `offset` (in floats), e.g. slot i of a batch at
 * offset i * tensorSize(img). Returns the offset just past what it wrote.
 */
export function writeTensor(img: RgbImage, out: Float32Array, offset: number, opts: TensorOptions): number {
  const { data, width: W, height: H } = img;
  const n = W * H;
  if (offset < 0 || offset + n * 3 > out.length) throw new RangeError("tensor buffer too small");
  const mean = typeof opts.mean === "number" ? [opts.mean, opts.mean, opts.mean] : opts.mean;
  const std = typeof opts.std === "number" ? [opts.std, opts.std, opts.std] : opts.std;
  // Output channel k reads source colour ck and subtracts mk, multiplies by sk.
  const [c0, c1, c2] = opts.bgr ? [2, 1, 0] : [0, 1, 2];
  const m0 = mean[c0];
  const m1 = mean[c1];
  const m2 = mean[c2];
  const s0 = 1 / std[c0];
  const s1 = 1 / std[c1];
  const s2 = 1 / std[c2];
  // Pixel (x, y) goes to spatial position y*W + x, or x*H + y when transposed.
  const stepX = opts.transpose ? H : 1;
  const stepY = opts.transpose ? 1 : W;
  if (opts.layout === "nchw") {
    const r = offset;
    const g = offset + n;
    const b = offset + 2 * n;
    for (let y = 0; y < H; y++) {
      let p = y * W * 3;
      let q = y * stepY;
      for (let x = 0; x < W; x++) {
        out[r + q] = (data[p + c0] - m0) * s0;
        out[g + q] = (data[p + c1] - m1) * s1;
        out[b + q] = (data[p + c2] - m2) * s2;
        p += 3;
        q += stepX;
      }
    }
  } else {
    for (let y = 0; y < H; y++) {
      let p = y * W * 3;
      let q = offset + y * stepY * 3;
      for (let x = 0; x < W; x++) {
        out[q] = (data[p + c0] - m0) * s0;
        out[q + 1] = (data[p + c1] - m1) * s1;
        out[q + 2] = (data[p + c2] - m2) * s2;
        p += 3;
        q += stepX * 3;
      }
    }
  }
  return offset + n * 3;
}
