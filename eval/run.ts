/**
 * `npm run eval`: accuracy of a detector (or of saved predictions) against ground truth.
 *
 *   npm run eval -- --dataset kaggle --split test --detector mtcnn
 *   npm run eval -- --dataset wider --detector blazeface --json out.json --report docs/results/wider.md
 *   npm run eval -- --dataset kaggle --detector ultraface-masked --mask
 *   npm run eval -- --pred faces.jsonl --gt kaggle        (JSON lines as `maskwatch detect --jsonl` writes)
 *   npm run eval -- --classify-gt --dataset kaggle --split test   (the classifier alone, on GT boxes)
 *   npm run eval -- --classify-gt --voc some/folder  |  --yolo some/folder [--names a,b,c]
 *
 * A dataset is a folder or a name (kaggle, wider, dlib) under MASKWATCH_DATA
 * (default ../shared/datasets). Faces under --min-size px (10) are ignored both ways.
 * Annotations that cannot be used (malformed XML, a missing or unreadable image) are listed
 * and left out; the run goes on.
 */
import { readFile, writeFile } from "node:fs/promises";
import { basename, extname } from "node:path";
import { parseArgs } from "node:util";
import { SingleBar } from "cli-progress";
import { DEFAULT_DETECTOR, DETECTORS, Engine, type MaskOptions } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { DEFAULT_MASK_THRESHOLD } from "../src/vision/mask-classifier.ts";
import type { DetectOptions, RgbImage } from "../src/vision/types.ts";
import {
  type DatasetFormat,
  type GtImage,
  type GtObject,
  type GtProblem,
  isKnownLabel,
  loadGroundTruth,
  MASK_LABELS,
  type Split,
} from "./groundtruth.ts";
import {
  appendClassificationRow,
  appendMarkdownRow,
  type ClassifyGtRun,
  classificationMarkdown,
  formatClassification,
  formatTable,
  toJson,
} from "./report.ts";
import {
  type ClassifiedFace,
  type EvalFace,
  type ImagePrediction,
  type MaskClass,
  scoreClassification,
  scoreDetections,
} from "./score.ts";

/** Score threshold detections are collected at, so AP sees the low-score end of the curve. */
const COLLECT_THRESHOLD = 0.3;

const USAGE = `usage: npm run eval -- --dataset <name|folder> [--split test|val|train|all] [--detector id]
       [--mask] [--mask-source head|classifier] [--input-size px] [--min-face-size px] [--thresholds pnet,rnet,onet] [--min-size px] [--iou 0.5] [--limit n]
       [--json file] [--report file.md] [--pred file.jsonl --gt <name|folder>]
       npm run eval -- --classify-gt (--dataset <name|folder> | --voc <folder> | --yolo <folder>) [--split test|val|train|all]
       [--names a,b,c] [--min-size px] [--mask-threshold 0.5] [--limit n] [--json file] [--report file.md] [--markdown file.md]

Datasets: a name (kaggle, wider, dlib) under MASKWATCH_DATA (default $MASKWATCH_SHARED/datasets, else
../shared/datasets) or a folder, its format detected; --voc / --yolo name a folder of that format.
VOC: annotations/ (or Annotations/) of XML beside images/ (or JPEGImages/), split from splits.json or
ImageSets/Main/<split>.txt, else the whole folder. YOLO: images/<split> + labels/<split> (Ultralytics),
<split>/images + <split>/labels (Roboflow), images/ + labels/, or .txt beside the images; class names
from classes.txt, obj.names or data.yaml names: (or --names), in class-id order. labels.jsonl: one
{"image", "faces": [{"box": [x1,y1,x2,y2], "label"}]} per line, paths relative to it. Labels: with_mask/mask
→ mask, without_mask/no_mask → no_mask, with_incorrect_mask/mask_weared_incorrect/incorrect → incorrect,
face → a face of unknown mask status; any other label is counted and reported.

--classify-gt: no detector; every ground-truth face box (not difficult, with a mask label, shorter side
≥ --min-size px) is cropped and classified as the product does, and the run reports accuracy, mask vs
not, per-class precision/recall/F1, macro-F1 and the confusion matrix. --json writes all of it (and every
problem), --markdown writes the tables as markdown, --report appends one markdown row.

Annotations that cannot be used (malformed XML, an image missing or unreadable) are listed and left out.`;

async function main(): Promise<number> {
  const { values: a } = parseArgs({
    options: {
      dataset: { type: "string" },
      gt: { type: "string" },
      split: { type: "string", default: "test" },
      detector: { type: "string", default: DEFAULT_DETECTOR },
      mask: { type: "boolean", default: false },
      "mask-source": { type: "string" },
      "input-size": { type: "string" },
      pred: { type: "string" },
      "min-face-size": { type: "string" },
      "min-size": { type: "string", default: "10" },
      iou: { type: "string", default: "0.5" },
      threshold: { type: "string" },
      thresholds: { type: "string" },
      limit: { type: "string" },
      json: { type: "string" },
      report: { type: "string" },
      "classify-gt": { type: "boolean", default: false },
      voc: { type: "string" },
      yolo: { type: "string" },
      names: { type: "string" },
      "mask-threshold": { type: "string" },
      markdown: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  const given = [a.dataset ?? a.gt, a.voc, a.yolo].filter((v) => v !== undefined);
  if (given.length !== 1) {
    console.error(`eval: give one of --dataset (or --gt), --voc, --yolo\n${USAGE}`);
    return 2;
  }
  const dataset = given[0] as string;
  const format: DatasetFormat | undefined =
    a.voc !== undefined ? "voc" : a.yolo !== undefined ? "yolo" : undefined;
  const split = a.split as Split;
  if (!["train", "val", "test", "all"].includes(split)) {
    console.error(`eval: --split must be train, val, test or all, not ${split}`);
    return 2;
  }
  const minSize = Number(a["min-size"]);
  if (!(minSize >= 0)) {
    console.error(`eval: --min-size must be a number of pixels ≥ 0, not ${a["min-size"]}`);
    return 2;
  }
  const names = a.names
    ?.split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "");
  const problems: GtProblem[] = [];
  let gt = await loadGroundTruth(dataset, { split, format, names, problems });
  if (a.limit) gt = gt.slice(0, Number(a.limit));
  if (gt.length === 0) {
    for (const p of problems.slice(0, 20)) console.error(`eval: ${p.file}: ${p.problem}`);
    console.error(`eval: no usable images in ${dataset} (split ${split}; ${problems.length} problems)`);
    return 2;
  }
  if (a["classify-gt"]) {
    if (a.pred || a.mask) {
      console.error("eval: --classify-gt classifies ground-truth boxes: it takes no --pred or --mask");
      return 2;
    }
    const maskThreshold =
      a["mask-threshold"] !== undefined ? Number(a["mask-threshold"]) : DEFAULT_MASK_THRESHOLD;
    if (!(maskThreshold >= 0 && maskThreshold <= 1)) {
      console.error(`eval: --mask-threshold must be between 0 and 1, not ${a["mask-threshold"]}`);
      return 2;
    }
    const run = await classifyGroundTruth(gt, { minSize, maskThreshold, problems });
    run.meta = { dataset, split, classifier: "mask-classifier" };
    console.log(formatClassification(run));
    if (Object.keys(run.skipped.unknownLabels).some((l) => /^\d+$/.test(l))) {
      console.log(
        "hint: numeric labels are YOLO class ids without names: add classes.txt or data.yaml (names:) or pass --names",
      );
    }
    if (run.result.faces === 0) console.error("eval: no face was classified (see what was skipped above)");
    if (a.json) await writeFile(a.json, `${JSON.stringify(run, null, 2)}\n`);
    if (a.markdown) await writeFile(a.markdown, classificationMarkdown(run));
    if (a.report) {
      appendClassificationRow(a.report, run, {
        date: new Date().toISOString().slice(0, 10),
        dataset,
        split,
        classifier: "mask-classifier",
      });
    }
    return run.result.faces === 0 ? 1 : 0;
  }
  if (a.markdown) {
    console.error("eval: --markdown goes with --classify-gt (detector runs: --report appends a row)");
    return 2;
  }

  let predictions: ImagePrediction[];
  let threshold: number;
  let msPerImage: number | undefined;
  let source: string;
  /** Where the run's mask decisions came from, when it made any. */
  let maskSource: MaskOptions["source"];
  if (a.pred) {
    predictions = await readPredictions(a.pred);
    threshold = a.threshold !== undefined ? Number(a.threshold) : 0.5;
    source = basename(a.pred);
  } else {
    if (!Object.hasOwn(DETECTORS, a.detector)) {
      console.error(
        `eval: unknown detector ${a.detector}; choose one of ${Object.keys(DETECTORS).join(", ")}`,
      );
      return 2;
    }
    const options: DetectOptions = {
      minFaceSize: a["min-face-size"] ? Number(a["min-face-size"]) : undefined,
      inputSize: a["input-size"] ? Number(a["input-size"]) : undefined,
    };
    const asked = a["mask-source"];
    if (asked !== undefined && asked !== "head" && asked !== "classifier") {
      console.error(`eval: --mask-source must be head or classifier, not ${asked}`);
      return 2;
    }
    // ultraface-masked is scored as the two-class detector it is; others get their mask head or the classifier.
    const classify: MaskOptions | false =
      a.mask && a.detector !== "ultraface-masked" ? { source: asked ?? "classifier" } : false;
    maskSource = classify ? classify.source : undefined;
    const run = await runDetector(a.detector, gt, options, classify, problems);
    // Images that could not be read are left out of the scoring, not counted as all misses.
    const read = new Set(run.predictions.map((p) => p.name));
    gt = gt.filter((g) => read.has(g.name));
    predictions = run.predictions;
    threshold = a.threshold !== undefined ? Number(a.threshold) : run.threshold;
    msPerImage = run.msPerImage;
    source = a.detector;
    if (maskSource === "head") source = `${a.detector} (mask head)`;
  }
  if (a.mask) {
    const labelled = predictions.some((p) => p.faces.some((f) => f.mask));
    if (!labelled) {
      console.error(`eval: --mask needs mask labels on the predictions; ${source} gives none`);
      return 2;
    }
  } else {
    for (const p of predictions) for (const f of p.faces) delete f.mask;
  }

  const result = scoreDetections(gt, predictions, {
    threshold,
    iouThreshold: Number(a.iou),
    minSize,
  });
  const classifier = maskSource === "classifier" ? "mask-classifier" : undefined;
  const meta = {
    dataset: `${dataset}`,
    split,
    detector: source,
    classifier,
    ms_per_image: msPerImage?.toFixed(1),
  };
  for (const line of datasetWarnings(gt, problems)) console.log(line);
  console.log(formatTable(result, meta));
  if (a.json) {
    const json = JSON.parse(toJson(result, meta)) as Record<string, unknown>;
    await writeFile(a.json, `${JSON.stringify({ ...json, problems }, null, 2)}\n`);
  }
  if (a.report) {
    appendMarkdownRow(a.report, result, {
      date: new Date().toISOString().slice(0, 10),
      dataset,
      split,
      detector: classifier ? `${source}+${classifier}` : source,
      "ms/img": msPerImage?.toFixed(1) ?? "",
    });
  }
  return 0;
}

/** Lines about what the ground truth holds that is not scored as asked: problems, unknown labels. */
function datasetWarnings(gt: GtImage[], problems: GtProblem[], max = 20): string[] {
  const lines: string[] = [];
  if (problems.length > 0) {
    lines.push(
      `warning: ${problems.length} problem${problems.length === 1 ? "" : "s"} in the dataset (left out):`,
    );
    for (const p of problems.slice(0, max)) lines.push(`  ${p.file}: ${p.problem}`);
    if (problems.length > max) lines.push(`  … ${problems.length - max} more (all in --json)`);
  }
  const unknown = new Map<string, number>();
  for (const g of gt)
    for (const o of g.objects)
      if (!isKnownLabel(o.label)) unknown.set(o.label, (unknown.get(o.label) ?? 0) + 1);
  if (unknown.size > 0) {
    const list = [...unknown].map(([k, v]) => `${k} ${v}`).join(", ");
    lines.push(`warning: labels that are no mask class (scored as faces, in no mask class): ${list}`);
  }
  return lines;
}

/** Decodes one ground-truth image, or lists it as a problem and gives undefined. */
async function readImage(item: GtImage, problems: GtProblem[]): Promise<RgbImage | undefined> {
  try {
    return (await decodeImage(await readFile(item.image))).image;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    problems.push({ file: item.image, problem: `unreadable image: ${why}` });
    return undefined;
  }
}

/**
 * The classifier alone on every usable ground-truth box: the product's crop (faceCrop, via
 * MaskClassifier.classify, all of an image's faces in one batch) and decision threshold.
 */
async function classifyGroundTruth(
  gt: GtImage[],
  opts: { minSize: number; maskThreshold: number; problems: GtProblem[] },
): Promise<ClassifyGtRun> {
  const engine = new Engine();
  const classifier = await engine.maskClassifier();
  const skipped: ClassifyGtRun["skipped"] = {
    small: 0,
    difficult: 0,
    unlabelled: 0,
    unknownLabels: {},
    inProblemImages: 0,
  };
  const faces: ClassifiedFace[] = [];
  let gtFaces = 0;
  let imagesClassified = 0;
  let ms = 0;
  let timed = 0;
  const bar = process.stderr.isTTY
    ? new SingleBar({ format: "classify {bar} {value}/{total} | {eta_formatted} left" })
    : null;
  bar?.start(gt.length, 0);
  for (const item of gt) {
    bar?.increment();
    gtFaces += item.objects.length;
    const usable: GtObject[] = [];
    for (const o of item.objects) {
      if (o.difficult) skipped.difficult++;
      else if (o.label === "face") skipped.unlabelled++;
      else if (!(MASK_LABELS as readonly string[]).includes(o.label))
        skipped.unknownLabels[o.label] = (skipped.unknownLabels[o.label] ?? 0) + 1;
      else if (Math.min(o.box[2] - o.box[0], o.box[3] - o.box[1]) < opts.minSize) skipped.small++;
      else usable.push(o);
    }
    if (usable.length === 0) continue;
    const image = await readImage(item, opts.problems);
    if (!image) {
      skipped.inProblemImages += usable.length;
      continue;
    }
    const t0 = performance.now();
    const results = await classifier.classify(
      image,
      usable.map((o) => ({ box: o.box, score: 1 })),
      { threshold: opts.maskThreshold },
    );
    // The first image warms the session up: not timed.
    if (imagesClassified > 0) {
      ms += performance.now() - t0;
      timed += usable.length;
    }
    imagesClassified++;
    usable.forEach((o, i) => {
      faces.push({ gt: o.label as MaskClass, pred: results[i].label });
    });
  }
  bar?.stop();
  await engine.close();
  return {
    meta: {},
    images: gt.length,
    imagesClassified,
    gtFaces,
    skipped,
    minSize: opts.minSize,
    maskThreshold: opts.maskThreshold,
    problems: opts.problems,
    result: scoreClassification(faces),
    msPerFace: timed > 0 ? ms / timed : undefined,
  };
}

async function runDetector(
  id: string,
  gt: GtImage[],
  options: DetectOptions,
  classify: MaskOptions | false,
  problems: GtProblem[],
) {
  const engine = new Engine();
  const detector = await engine.detector(id);
  const bar = process.stderr.isTTY
    ? new SingleBar({ format: `${id} {bar} {value}/{total} | {eta_formatted} left` })
    : null;
  bar?.start(gt.length, 0);
  const predictions: ImagePrediction[] = [];
  const times: number[] = [];
  const collect = id === "mtcnn" ? undefined : Math.min(COLLECT_THRESHOLD, detector.threshold);
  for (const item of gt) {
    const image = await readImage(item, problems);
    if (!image) {
      bar?.increment();
      continue;
    }
    const t0 = performance.now();
    const { faces } = await engine.analyze(image, {
      ...options,
      detector: id,
      threshold: collect,
      mask: classify,
    });
    times.push(performance.now() - t0);
    predictions.push({ name: item.name, faces: classify ? faces : faces.map(withMaskLabel) });
    bar?.increment();
  }
  bar?.stop();
  const threshold = detector.threshold;
  await engine.close();
  times.sort((x, y) => x - y);
  return { predictions, threshold, msPerImage: times[Math.floor(times.length / 2)] };
}

/** A two-class detector's own label (UltraFace masked) read as a mask prediction. */
function withMaskLabel(face: EvalFace): EvalFace {
  if (face.label === "masked_face") return { ...face, mask: { label: "mask", score: 1 } };
  if (face.label === "face") return { ...face, mask: { label: "no_mask", score: 1 } };
  return face;
}

async function readPredictions(file: string): Promise<ImagePrediction[]> {
  const out: ImagePrediction[] = [];
  const lines = (await readFile(file, "utf8")).split("\n");
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let row: { image?: string; faces?: EvalFace[] };
    try {
      row = JSON.parse(line);
    } catch {
      throw new Error(`${file}:${i + 1}: not JSON`);
    }
    if (typeof row.image !== "string" || !Array.isArray(row.faces)) return; // error lines
    out.push({ name: basename(row.image, extname(row.image)), faces: row.faces.map(withMaskLabel) });
  });
  return out;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`eval: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
