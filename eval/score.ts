/**
 * Scoring core of `npm run eval`: face AP (PASCAL VOC all-point interpolation), recall and
 * precision at the detector's threshold, and mask-class AP / confusion where predictions carry
 * mask labels. Pure functions over ground truth and predictions: no detector code.
 */
import type { Face } from "../src/vision/types.ts";
import { type Box, type GtImage, normaliseLabel, stem } from "./groundtruth.ts";

export const MASK_CLASSES = ["mask", "no_mask", "incorrect"] as const;
export type MaskClass = (typeof MASK_CLASSES)[number];

/** What a mask classifier adds to a face (all optional, so plain faces score too). */
export interface MaskPrediction {
  label?: string;
  score?: number;
  scores?: Partial<Record<MaskClass, number>>;
}

export type EvalFace = Omit<Face, "mask"> & { mask?: MaskPrediction };

export interface ImagePrediction {
  /** Matched against `GtImage.name` (an extension on either side is ignored). */
  name: string;
  faces: EvalFace[];
}

export interface ScoreOptions {
  /** IoU needed for a match; default 0.5. */
  iouThreshold?: number;
  /** GT faces whose shorter side is below this (pixels) are ignored; default 10. 0 keeps all. */
  minSize?: number;
  /** Operating threshold: detections with score ≥ it count for recall / precision; default 0.5. */
  threshold?: number;
  /**
   * How a face becomes a class detection for per-class AP. "argmax" (default): one detection of
   * its predicted class, score = face score × that class's score. "all": one detection per class,
   * score = face score × the class's score (faces with no `scores` fall back to "argmax").
   */
  classAssignment?: "argmax" | "all";
  /** Keep per-image counts in the result; default true. */
  perImage?: boolean;
}

export interface ApResult {
  /** All-point interpolated AP; null where there is no (non-ignored) ground truth. */
  ap: number | null;
  /** Non-ignored ground-truth faces. */
  gt: number;
  /** Detections that count (TP + FP); those on ignored faces are left out. */
  detections: number;
  tp: number;
  fp: number;
  /** Detections that matched an ignored face (neither TP nor FP). */
  ignored: number;
  /** Recall reached at the lowest score (max recall). */
  maxRecall: number | null;
}

export interface ClassRecall {
  gt: number;
  tp: number;
  recall: number | null;
}

export interface OperatingPoint {
  threshold: number;
  detections: number;
  tp: number;
  fp: number;
  fn: number;
  ignored: number;
  recall: number | null;
  precision: number | null;
  f1: number | null;
  /** Recall per ground-truth label (mask / no_mask / incorrect, or face). */
  recallByClass: Record<string, ClassRecall>;
}

export interface ConfusionMatrix {
  /** Row labels: ground-truth classes. */
  gt: string[];
  /** Column labels: predicted classes, then "none" (matched face with no mask prediction). */
  pred: string[];
  /** counts[row][col]. */
  counts: number[][];
  /** Share of matched faces with a mask prediction whose class is right; null if none. */
  accuracy: number | null;
}

export interface MaskResult {
  /** Classes with non-ignored ground truth (mAP is over these). */
  classes: string[];
  ap: Record<string, ApResult>;
  mAP: number | null;
  /** GT class × predicted class of faces matched at the operating threshold. */
  confusion: ConfusionMatrix;
  /** Detections at or above the threshold that carried a mask prediction. */
  labelled: number;
}

export interface ImageCounts {
  name: string;
  gt: number;
  ignoredGt: number;
  detections: number;
  tp: number;
  fp: number;
  fn: number;
}

export interface EvalResult {
  options: Required<Omit<ScoreOptions, "perImage">>;
  images: number;
  /** Ground-truth faces, all of them. */
  gtFaces: number;
  /** Ground-truth faces ignored (difficult or shorter side < minSize). */
  ignoredGt: number;
  gtByClass: Record<string, number>;
  /** Detections given, at any score. */
  detections: number;
  /** Ground-truth images that had no prediction entry (scored as no detections). */
  missingPredictions: string[];
  /** Prediction entries naming no ground-truth image (not scored). */
  unknownPredictions: string[];
  face: ApResult;
  atThreshold: OperatingPoint;
  /** Present when any detection carries a mask prediction and the ground truth has mask classes. */
  mask?: MaskResult;
  perImage?: ImageCounts[];
}

// ---------------------------------------------------------------------------------------------

/** Intersection over union of two [x1,y1,x2,y2] boxes (continuous coordinates). */
export function iou(a: Box, b: Box): number {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * PASCAL VOC 2010+ all-point interpolated AP of a ranked list (best first): precision made
 * monotone from the right (the envelope), summed over each step in recall.
 */
export function averagePrecision(isTp: readonly boolean[], numGt: number): number | null {
  if (numGt <= 0) return null;
  const rec: number[] = [];
  const prec: number[] = [];
  let tp = 0;
  for (let i = 0; i < isTp.length; i++) {
    if (isTp[i]) tp++;
    rec.push(tp / numGt);
    prec.push(tp / (i + 1));
  }
  const mrec = [0, ...rec, 1];
  const mpre = [0, ...prec, 0];
  for (let i = mpre.length - 2; i >= 0; i--) mpre[i] = Math.max(mpre[i], mpre[i + 1]);
  let ap = 0;
  for (let i = 1; i < mrec.length; i++) {
    if (mrec[i] !== mrec[i - 1]) ap += (mrec[i] - mrec[i - 1]) * mpre[i];
  }
  return ap;
}

export type MatchStatus = "tp" | "fp" | "ignored";

export interface MatchedDetection {
  /** Index into the image's detection list as given. */
  index: number;
  score: number;
  status: MatchStatus;
  /** GT index matched (tp), or hit (ignored), or the already-taken GT a duplicate hit (fp). */
  gt: number;
  iou: number;
}

/** Whether each GT box is ignored: `difficult`, or shorter side < minSize. */
export function ignoredMask(objects: GtImage["objects"], minSize: number): boolean[] {
  return objects.map(
    (o) => o.difficult === true || Math.min(o.box[2] - o.box[0], o.box[3] - o.box[1]) < minSize,
  );
}

/**
 * Greedy matching of one image's detections, in descending score (ties: given order). Each
 * detection takes the best-overlapping unmatched non-ignored GT with IoU ≥ thr (TP); failing that,
 * if it overlaps an ignored GT by ≥ thr at least as well as any unmatched non-ignored GT, it is
 * "ignored"; otherwise it is an FP (a duplicate where it hit an already-matched GT).
 * Returns the detections in processing order.
 */
export function matchImage(
  gtBoxes: readonly Box[],
  ignored: readonly boolean[],
  dets: readonly { box: Box; score: number }[],
  iouThreshold = 0.5,
): MatchedDetection[] {
  const order = dets.map((_, i) => i).sort((a, b) => dets[b].score - dets[a].score || a - b);
  const taken = new Array<boolean>(gtBoxes.length).fill(false);
  const out: MatchedDetection[] = [];
  for (const i of order) {
    const d = dets[i];
    let free = -1;
    let freeIou = -1;
    let ign = -1;
    let ignIou = -1;
    let dup = -1;
    let dupIou = -1;
    for (let g = 0; g < gtBoxes.length; g++) {
      const v = iou(d.box, gtBoxes[g]);
      if (v < iouThreshold) continue;
      if (ignored[g]) {
        if (v > ignIou) [ign, ignIou] = [g, v];
      } else if (taken[g]) {
        if (v > dupIou) [dup, dupIou] = [g, v];
      } else if (v > freeIou) [free, freeIou] = [g, v];
    }
    if (free >= 0 && freeIou >= ignIou) {
      taken[free] = true;
      out.push({ index: i, score: d.score, status: "tp", gt: free, iou: freeIou });
    } else if (ign >= 0) {
      out.push({ index: i, score: d.score, status: "ignored", gt: ign, iou: ignIou });
    } else {
      out.push({ index: i, score: d.score, status: "fp", gt: dup, iou: Math.max(dupIou, 0) });
    }
  }
  return out;
}

interface Ranked {
  score: number;
  image: number;
  index: number;
  tp: boolean;
}

/** Sort by score, best first; ties by image order, then detection order. */
function rank(list: Ranked[]): boolean[] {
  list.sort((a, b) => b.score - a.score || a.image - b.image || a.index - b.index);
  return list.map((r) => r.tp);
}

function apResult(list: Ranked[], numGt: number, ignored: number): ApResult {
  const flags = rank(list);
  const tp = flags.filter((f) => f).length;
  return {
    ap: averagePrecision(flags, numGt),
    gt: numGt,
    detections: flags.length,
    tp,
    fp: flags.length - tp,
    ignored,
    maxRecall: numGt > 0 ? tp / numGt : null,
  };
}

function ratio(a: number, b: number): number | null {
  return b > 0 ? a / b : null;
}

/** The predicted mask class of a face and that class's score, or undefined without a prediction. */
export function predictedClass(face: EvalFace): { label: string; score: number } | undefined {
  const m = face.mask;
  if (!m) return undefined;
  const scores = m.scores ?? {};
  let label = m.label !== undefined ? normaliseLabel(m.label) : undefined;
  if (label === undefined) {
    let best = -1;
    for (const c of MASK_CLASSES) {
      const s = scores[c];
      if (s !== undefined && s > best) [label, best] = [c, s];
    }
  }
  if (label === undefined) return undefined;
  const score = scores[label as MaskClass] ?? m.score ?? 1;
  return { label, score };
}

/** Prediction lookup by name, tolerating an image extension on either side. */
function predictionIndex(preds: readonly ImagePrediction[]): Map<string, ImagePrediction> {
  const map = new Map<string, ImagePrediction>();
  for (const p of preds) if (!map.has(p.name)) map.set(p.name, p);
  for (const p of preds) if (!map.has(stem(p.name))) map.set(stem(p.name), p);
  return map;
}

/** Score predictions against ground truth. */
export function scoreDetections(
  groundTruth: readonly GtImage[],
  predictions: readonly ImagePrediction[],
  options: ScoreOptions = {},
): EvalResult {
  const opts = {
    iouThreshold: options.iouThreshold ?? 0.5,
    minSize: options.minSize ?? 10,
    threshold: options.threshold ?? 0.5,
    classAssignment: options.classAssignment ?? "argmax",
  } as const;
  const byName = predictionIndex(predictions);
  const used = new Set<ImagePrediction>();

  const faceList: Ranked[] = [];
  let faceIgnored = 0;
  let gtFaces = 0;
  let ignoredGt = 0;
  let detections = 0;
  const gtByClass: Record<string, number> = {};
  const missingPredictions: string[] = [];
  const perImage: ImageCounts[] = [];
  const op = { detections: 0, tp: 0, fp: 0, ignored: 0, gt: 0 };
  const recallByClass: Record<string, ClassRecall> = {};

  // Mask: per-class ranked lists, GT counts per class, confusion of matched faces.
  const hasMask =
    predictions.some((p) => p.faces.some((f) => f.mask !== undefined)) &&
    groundTruth.some((g) => g.objects.some((o) => (MASK_CLASSES as readonly string[]).includes(o.label)));
  const classLists = new Map<string, Ranked[]>();
  const classIgnored = new Map<string, number>();
  const classGt = new Map<string, number>();
  const confusion = new Map<string, Map<string, number>>();
  let labelled = 0;

  groundTruth.forEach((img, imageIdx) => {
    const pred = byName.get(img.name) ?? byName.get(stem(img.image));
    if (pred) used.add(pred);
    else missingPredictions.push(img.name);
    const faces = pred?.faces ?? [];
    const boxes = img.objects.map((o) => o.box);
    const ign = ignoredMask(img.objects, opts.minSize);
    const nIgn = ign.filter((x) => x).length;
    gtFaces += img.objects.length;
    ignoredGt += nIgn;
    detections += faces.length;
    img.objects.forEach((o, g) => {
      gtByClass[o.label] = (gtByClass[o.label] ?? 0) + 1;
      if (!ign[g]) {
        recallByClass[o.label] ??= { gt: 0, tp: 0, recall: null };
        recallByClass[o.label].gt++;
      }
    });

    // Class-agnostic face matching; its prefix with score ≥ threshold is the operating point
    // (greedy matching in score order does not depend on lower-scored detections).
    const matched = matchImage(boxes, ign, faces, opts.iouThreshold);
    const counts: ImageCounts = {
      name: img.name,
      gt: img.objects.length - nIgn,
      ignoredGt: nIgn,
      detections: 0,
      tp: 0,
      fp: 0,
      fn: 0,
    };
    for (const m of matched) {
      if (m.status === "ignored") faceIgnored++;
      else faceList.push({ score: m.score, image: imageIdx, index: m.index, tp: m.status === "tp" });
      if (m.score < opts.threshold) continue;
      counts.detections++;
      if (m.status === "ignored") {
        op.ignored++;
        continue;
      }
      if (m.status === "fp") {
        counts.fp++;
        continue;
      }
      counts.tp++;
      const gtLabel = img.objects[m.gt].label;
      recallByClass[gtLabel].tp++;
      if (hasMask) {
        const pc = predictedClass(faces[m.index]);
        const row = confusion.get(gtLabel) ?? new Map<string, number>();
        confusion.set(gtLabel, row);
        const col = pc?.label ?? "none";
        row.set(col, (row.get(col) ?? 0) + 1);
      }
    }
    counts.fn = counts.gt - counts.tp;
    op.detections += counts.detections;
    op.tp += counts.tp;
    op.fp += counts.fp;
    op.gt += counts.gt;
    perImage.push(counts);

    if (hasMask) {
      labelled += faces.filter((f) => f.score >= opts.threshold && predictedClass(f) !== undefined).length;
      // Per-class AP: class-c detections matched against class-c GT only; GT of other classes
      // neither match nor count, ignored GT (any class) still absorbs detections.
      const classesHere = new Set<string>(img.objects.map((o) => o.label));
      const classDets = new Map<string, { box: Box; score: number; index: number }[]>();
      faces.forEach((f, index) => {
        if (opts.classAssignment === "all" && f.mask?.scores) {
          for (const c of MASK_CLASSES) {
            const s = f.mask.scores[c];
            if (s === undefined) continue;
            const list = classDets.get(c) ?? [];
            classDets.set(c, list);
            list.push({ box: f.box, score: f.score * s, index });
          }
          return;
        }
        const pc = predictedClass(f);
        if (!pc) return;
        const list = classDets.get(pc.label) ?? [];
        classDets.set(pc.label, list);
        list.push({ box: f.box, score: f.score * pc.score, index });
      });
      for (const c of new Set([...classesHere, ...classDets.keys()])) {
        const keep = img.objects.map((o, g) => o.label === c || ign[g]);
        const cBoxes = boxes.filter((_, g) => keep[g]);
        const cIgn = ign.filter((_, g) => keep[g]);
        const nGt = img.objects.filter((o, g) => o.label === c && !ign[g]).length;
        classGt.set(c, (classGt.get(c) ?? 0) + nGt);
        const dets = classDets.get(c) ?? [];
        const list = classLists.get(c) ?? [];
        classLists.set(c, list);
        for (const m of matchImage(cBoxes, cIgn, dets, opts.iouThreshold)) {
          if (m.status === "ignored") classIgnored.set(c, (classIgnored.get(c) ?? 0) + 1);
          else
            list.push({ score: m.score, image: imageIdx, index: dets[m.index].index, tp: m.status === "tp" });
        }
      }
    }
  });

  const unknownPredictions = predictions.filter((p) => !used.has(p)).map((p) => p.name);
  for (const r of Object.values(recallByClass)) r.recall = ratio(r.tp, r.gt);
  const fn = op.gt - op.tp;
  const recall = ratio(op.tp, op.gt);
  const precision = ratio(op.tp, op.tp + op.fp);
  const result: EvalResult = {
    options: opts,
    images: groundTruth.length,
    gtFaces,
    ignoredGt,
    gtByClass,
    detections,
    missingPredictions,
    unknownPredictions,
    face: apResult(faceList, op.gt, faceIgnored),
    atThreshold: {
      threshold: opts.threshold,
      detections: op.detections,
      tp: op.tp,
      fp: op.fp,
      fn,
      ignored: op.ignored,
      recall,
      precision,
      f1:
        recall !== null && precision !== null && recall + precision > 0
          ? (2 * recall * precision) / (recall + precision)
          : null,
      recallByClass,
    },
  };

  if (hasMask) {
    const allClasses = orderClasses(new Set([...classGt.keys(), ...classLists.keys()]));
    const ap: Record<string, ApResult> = {};
    for (const c of allClasses)
      ap[c] = apResult(classLists.get(c) ?? [], classGt.get(c) ?? 0, classIgnored.get(c) ?? 0);
    const present = allClasses.filter((c) => (classGt.get(c) ?? 0) > 0);
    const aps = present.map((c) => ap[c].ap ?? 0);
    const gtRows = orderClasses(new Set(confusion.keys()));
    const predCols = orderClasses(
      new Set([...confusion.values()].flatMap((r) => [...r.keys()]).filter((k) => k !== "none")),
    );
    const cols = [...new Set([...MASK_CLASSES, ...predCols]), "none"];
    const rows = [...new Set([...present, ...gtRows])];
    const counts = rows.map((r) => cols.map((c) => confusion.get(r)?.get(c) ?? 0));
    let right = 0;
    let withLabel = 0;
    for (let i = 0; i < rows.length; i++) {
      for (let j = 0; j < cols.length; j++) {
        if (cols[j] === "none") continue;
        withLabel += counts[i][j];
        if (rows[i] === cols[j]) right += counts[i][j];
      }
    }
    result.mask = {
      classes: present,
      ap,
      mAP: aps.length > 0 ? aps.reduce((a, b) => a + b, 0) / aps.length : null,
      confusion: { gt: rows, pred: cols, counts, accuracy: ratio(right, withLabel) },
      labelled,
    };
  }
  if (options.perImage ?? true) result.perImage = perImage;
  return result;
}

/** mask, no_mask, incorrect first, then the rest alphabetically. */
function orderClasses(set: Set<string>): string[] {
  const known = MASK_CLASSES.filter((c) => set.has(c));
  const rest = [...set].filter((c) => !(MASK_CLASSES as readonly string[]).includes(c)).sort();
  return [...known, ...rest];
}

// ---------------------------------------------------------------------------------------------
// Classifier on ground-truth boxes (`npm run eval -- --classify-gt`)

/** One ground-truth face the classifier saw. */
export interface ClassifiedFace {
  /** Ground-truth class. */
  gt: MaskClass;
  /** The classifier's decision. */
  pred: MaskClass;
}

export interface ClassMetrics {
  /** Ground-truth faces of the class. */
  support: number;
  /** Faces predicted as the class. */
  predicted: number;
  tp: number;
  precision: number | null;
  recall: number | null;
  f1: number | null;
}

export interface ClassificationResult {
  /** Faces classified (the confusion matrix's total). */
  faces: number;
  accuracy: number | null;
  /** Mask worn correctly vs not (no_mask and incorrect together), as a two-class accuracy. */
  maskVsNot: number | null;
  /** Per class, all three always present. */
  perClass: Record<MaskClass, ClassMetrics>;
  /** Mean F1 over the classes with ground-truth faces (a class absent from the set does not count). */
  macroF1: number | null;
  /** Classes macroF1 averages over. */
  macroClasses: MaskClass[];
  /** Rows ground truth, columns prediction, both in MASK_CLASSES order. */
  confusion: { labels: MaskClass[]; counts: number[][] };
}

/** Accuracy, per-class precision / recall / F1, macro-F1 and the confusion matrix. */
export function scoreClassification(faces: readonly ClassifiedFace[]): ClassificationResult {
  const labels = [...MASK_CLASSES];
  const at = (c: string) => labels.indexOf(c as MaskClass);
  const counts = labels.map(() => labels.map(() => 0));
  for (const f of faces) {
    const r = at(f.gt);
    const c = at(f.pred);
    if (r < 0 || c < 0) throw new RangeError(`not a mask class: ${r < 0 ? f.gt : f.pred}`);
    counts[r][c]++;
  }
  let right = 0;
  let binaryRight = 0;
  const maskIdx = at("mask");
  for (let r = 0; r < labels.length; r++) {
    for (let c = 0; c < labels.length; c++) {
      if (r === c) right += counts[r][c];
      if ((r === maskIdx) === (c === maskIdx)) binaryRight += counts[r][c];
    }
  }
  const perClass = {} as Record<MaskClass, ClassMetrics>;
  labels.forEach((label, k) => {
    const tp = counts[k][k];
    const support = counts[k].reduce((a, b) => a + b, 0);
    const predicted = counts.reduce((a, row) => a + row[k], 0);
    const precision = ratio(tp, predicted);
    const recall = ratio(tp, support);
    // A class never predicted but present has precision undefined and F1 0 (sklearn's zero_division=0).
    const f1 =
      support === 0
        ? null
        : tp === 0
          ? 0
          : (2 * (precision ?? 0) * (recall ?? 0)) / ((precision ?? 0) + (recall ?? 0));
    perClass[label] = { support, predicted, tp, precision, recall, f1 };
  });
  const macroClasses = labels.filter((c) => perClass[c].support > 0);
  const f1s = macroClasses.map((c) => perClass[c].f1 ?? 0);
  return {
    faces: faces.length,
    accuracy: ratio(right, faces.length),
    maskVsNot: ratio(binaryRight, faces.length),
    perClass,
    macroF1: f1s.length > 0 ? f1s.reduce((a, b) => a + b, 0) / f1s.length : null,
    macroClasses,
    confusion: { labels, counts },
  };
}
