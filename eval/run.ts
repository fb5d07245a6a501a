/**
 * `npm run eval`: accuracy of a detector (or of saved predictions) against ground truth.
 *
 *   npm run eval -- --dataset kaggle --split test --detector mtcnn
 *   npm run eval -- --dataset wider --detector blazeface --json out.json --report docs/results/wider.md
 *   npm run eval -- --dataset kaggle --detector ultraface-masked --mask
 *   npm run eval -- --pred faces.jsonl --gt kaggle        (JSON lines as `maskwatch detect --jsonl` writes)
 *
 * A dataset is a folder or a name (kaggle, wider, dlib) under MASKWATCH_DATA
 * (default ../shared/datasets). Faces under --min-size px (10) are ignored both ways.
 */
import { readFile, writeFile } from "node:fs/promises";
import { basename, extname } from "node:path";
import { parseArgs } from "node:util";
import { SingleBar } from "cli-progress";
import { DEFAULT_DETECTOR, DETECTORS, Engine, type MaskOptions } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import type { DetectOptions } from "../src/vision/types.ts";
import { type GtImage, loadGroundTruth, type Split } from "./groundtruth.ts";
import { appendMarkdownRow, formatTable, toJson } from "./report.ts";
import { type EvalFace, type ImagePrediction, scoreDetections } from "./score.ts";

/** Score threshold detections are collected at, so AP sees the low-score end of the curve. */
const COLLECT_THRESHOLD = 0.3;

const USAGE = `usage: npm run eval -- --dataset <name|folder> [--split test|val|train|all] [--detector id]
       [--mask] [--mask-source head|classifier] [--input-size px] [--min-face-size px] [--thresholds pnet,rnet,onet] [--min-size px] [--iou 0.5] [--limit n]
       [--json file] [--report file.md] [--pred file.jsonl --gt <name|folder>]`;

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
      help: { type: "boolean", short: "h" },
    },
  });
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  const dataset = a.dataset ?? a.gt;
  if (!dataset) {
    console.error(`eval: --dataset (or --gt) is required\n${USAGE}`);
    return 2;
  }
  const split = a.split as Split;
  if (!["train", "val", "test", "all"].includes(split)) {
    console.error(`eval: --split must be train, val, test or all, not ${split}`);
    return 2;
  }
  let gt = await loadGroundTruth(dataset, { split });
  if (a.limit) gt = gt.slice(0, Number(a.limit));
  if (gt.length === 0) {
    console.error(`eval: no images in ${dataset} (split ${split})`);
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
    const run = await runDetector(a.detector, gt, options, classify);
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
    minSize: Number(a["min-size"]),
  });
  const classifier = maskSource === "classifier" ? "mask-classifier" : undefined;
  const meta = {
    dataset: `${dataset}`,
    split,
    detector: source,
    classifier,
    ms_per_image: msPerImage?.toFixed(1),
  };
  console.log(formatTable(result, meta));
  if (a.json) await writeFile(a.json, `${toJson(result, meta)}\n`);
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

async function runDetector(id: string, gt: GtImage[], options: DetectOptions, classify: MaskOptions | false) {
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
    const { image } = await decodeImage(await readFile(item.image));
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
