import type { Face } from "./types.ts";

export type Box = [number, number, number, number];

export function area(b: Box): number {
  return Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);
}

export function intersection(a: Box, b: Box): number {
  const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  return w > 0 && h > 0 ? w * h : 0;
}

export function iou(a: Box, b: Box): number {
  const inter = intersection(a, b);
  return inter > 0 ? inter / (area(a) + area(b) - inter) : 0;
}

/** Overlap over the smaller box, MTCNN's "Min" mode. */
export function iom(a: Box, b: Box): number {
  const inter = intersection(a, b);
  return inter > 0 ? inter / Math.min(area(a), area(b)) : 0;
}

/** Overlap with MTCNN's pixel-inclusive areas ((x2 - x1 + 1) × (y2 - y1 + 1)). */
function inclusiveOverlap(mode: "union" | "min"): (a: Box, b: Box) => number {
  return (a, b) => {
    const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]) + 1;
    const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]) + 1;
    if (w <= 0 || h <= 0) return 0;
    const inter = w * h;
    const areaA = (a[2] - a[0] + 1) * (a[3] - a[1] + 1);
    const areaB = (b[2] - b[0] + 1) * (b[3] - b[1] + 1);
    return mode === "union" ? inter / (areaA + areaB - inter) : inter / Math.min(areaA, areaB);
  };
}

/**
 * Greedy hard NMS. Returns indices of kept items, highest score first.
 * Ties on score keep the earlier index, so the result is deterministic.
 * `inclusive` counts box edges as pixels, the way MTCNN's reference code does.
 */
export function nms(
  boxes: readonly Box[],
  scores: ArrayLike<number>,
  threshold: number,
  mode: "union" | "min" = "union",
  inclusive = false,
): number[] {
  const order = sortByScore(scores, boxes.length);
  const overlap = inclusive ? inclusiveOverlap(mode) : mode === "union" ? iou : iom;
  const suppressed = new Uint8Array(boxes.length);
  const keep: number[] = [];
  for (let a = 0; a < order.length; a++) {
    const i = order[a];
    if (suppressed[i]) continue;
    keep.push(i);
    for (let b = a + 1; b < order.length; b++) {
      const j = order[b];
      if (!suppressed[j] && overlap(boxes[i], boxes[j]) > threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

/**
 * MediaPipe-style weighted NMS: each kept detection is the score-weighted mean of every
 * candidate overlapping it by more than `threshold`, boxes and points alike.
 */
export function weightedNms(faces: readonly Face[], threshold: number): Face[] {
  const order = sortByScore(
    faces.map((f) => f.score),
    faces.length,
  );
  const used = new Uint8Array(faces.length);
  const out: Face[] = [];
  for (const i of order) {
    if (used[i]) continue;
    const top = faces[i];
    const cluster: Face[] = [];
    for (const j of order) {
      if (!used[j] && iou(top.box, faces[j].box) > threshold) {
        used[j] = 1;
        cluster.push(faces[j]);
      }
    }
    used[i] = 1;
    if (!cluster.includes(top)) cluster.unshift(top);
    out.push(mergeCluster(top, cluster));
  }
  return out;
}

function mergeCluster(top: Face, cluster: Face[]): Face {
  if (cluster.length === 1) return top;
  let total = 0;
  const box: Box = [0, 0, 0, 0];
  const points: Record<string, [number, number]> = {};
  for (const f of cluster) {
    total += f.score;
    for (let k = 0; k < 4; k++) box[k] += f.box[k] * f.score;
    for (const [name, p] of Object.entries(f.landmarks ?? {})) {
      if (!points[name]) points[name] = [0, 0];
      const acc = points[name];
      acc[0] += p[0] * f.score;
      acc[1] += p[1] * f.score;
    }
  }
  for (let k = 0; k < 4; k++) box[k] /= total;
  const merged: Face = { ...top, box };
  if (top.landmarks) {
    merged.landmarks = {};
    for (const [name, p] of Object.entries(points)) merged.landmarks[name] = [p[0] / total, p[1] / total];
  }
  return merged;
}

/** Indices sorted by descending score, stable on ties. */
export function sortByScore(scores: ArrayLike<number>, n: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => scores[b] - scores[a] || a - b);
  return idx;
}

/**
 * The common tail of every detector: clip boxes to the image, drop empty boxes and faces whose
 * shorter side is below `minFaceSize`, sort by score (stable on ties), keep `maxFaces`.
 */
export function finalizeFaces(
  faces: readonly Face[],
  width: number,
  height: number,
  options: { minFaceSize?: number; maxFaces?: number } = {},
): Face[] {
  const min = options.minFaceSize ?? 0;
  const kept: Face[] = [];
  for (const f of faces) {
    const box: Box = [
      Math.min(Math.max(f.box[0], 0), width),
      Math.min(Math.max(f.box[1], 0), height),
      Math.min(Math.max(f.box[2], 0), width),
      Math.min(Math.max(f.box[3], 0), height),
    ];
    const w = box[2] - box[0];
    const h = box[3] - box[1];
    if (w <= 0 || h <= 0 || Math.min(w, h) < min) continue;
    kept.push({ ...f, box });
  }
  const order = sortByScore(
    kept.map((f) => f.score),
    kept.length,
  );
  const out = order.map((i) => kept[i]);
  return options.maxFaces !== undefined && options.maxFaces >= 0 ? out.slice(0, options.maxFaces) : out;
}

/** Faces with boxes and landmarks multiplied by kx (x) and ky (y): from a resized image back to the original. */
export function scaleFaces(faces: readonly Face[], kx: number, ky: number): Face[] {
  if (kx === 1 && ky === 1) return [...faces];
  return faces.map((f) => {
    const out: Face = { ...f, box: [f.box[0] * kx, f.box[1] * ky, f.box[2] * kx, f.box[3] * ky] };
    if (f.landmarks) {
      out.landmarks = {};
      for (const [k, p] of Object.entries(f.landmarks)) out.landmarks[k] = [p[0] * kx, p[1] * ky];
    }
    return out;
  });
}
