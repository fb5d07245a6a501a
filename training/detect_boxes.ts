/**
 * Runs the product's default detector (`maskwatch`, default settings) over the classifier's
 * training photos once and writes its faces as JSON, so train_mask_classifier.py can train on
 * the crops the detector really produces (boxes and landmarks), not only ground-truth boxes.
 *
 * Usage (repo root):
 *   node --import tsx training/detect_boxes.ts [--data ../shared/datasets] [--out /tmp/maskwatch-detector-boxes.json]
 * Output: {detector, sets: {"kaggle-face-mask": {stem: Face[]}, "adityap27-face-mask": {"images/x.jpg": Face[]}}}
 * where each face is {box, score, landmarks, head: [mask, no_mask, incorrect] from the mask head}.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import type { Face } from "../src/vision/types.ts";

const { values } = parseArgs({
  options: {
    data: { type: "string", default: process.env.MASKWATCH_DATA ?? resolve("../shared/datasets") },
    out: { type: "string", default: "/tmp/maskwatch-detector-boxes.json" },
    threads: { type: "string", default: "2" },
  },
});
const data = values.data as string;
const engine = new Engine({ threads: Number(values.threads) });
const detector = "maskwatch";

const round = (v: number) => Math.round(v * 100) / 100;
function compact(f: Face) {
  const p = f.mask?.scores;
  return {
    box: f.box.map(round),
    score: Math.round(f.score * 1e4) / 1e4,
    landmarks: Object.fromEntries(
      Object.entries(f.landmarks ?? {}).map(([k, [x, y]]) => [k, [round(x), round(y)]]),
    ),
    head: p ? [p.mask, p.no_mask, p.incorrect].map((v) => Math.round(v * 1e4) / 1e4) : null,
  };
}

async function run(files: [string, string][]): Promise<Record<string, ReturnType<typeof compact>[]>> {
  const out: Record<string, ReturnType<typeof compact>[]> = {};
  let n = 0;
  for (const [key, file] of files) {
    const { image } = await decodeImage(await readFile(file));
    const r = await engine.analyze(image, { detector, mask: { source: "head" } });
    out[key] = r.faces.map(compact);
    if (++n % 100 === 0) console.error(`${n}/${files.length}`);
  }
  return out;
}

const splits = JSON.parse(await readFile(join(data, "kaggle-face-mask/splits.json"), "utf8")) as Record<
  string,
  string[]
>;
const stems = [...splits.train, ...splits.val, ...splits.test];
const kaggle = await run(stems.map((s) => [s, join(data, "kaggle-face-mask/images", `${s}.jpg`)]));
const lines = (await readFile(join(data, "adityap27-face-mask/labels.jsonl"), "utf8")).trim().split("\n");
const aditya = await run(
  lines.map((l) => {
    const image = (JSON.parse(l) as { image: string }).image;
    return [image, join(data, "adityap27-face-mask", image)];
  }),
);
await writeFile(
  values.out as string,
  JSON.stringify({ detector, sets: { "kaggle-face-mask": kaggle, "adityap27-face-mask": aditya } }),
);
await engine.close();
console.error(`wrote ${values.out}`);
