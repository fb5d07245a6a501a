/**
 * Whole-pipeline predictions for candidate mask classifiers that are not (yet) the registered
 * model: runs the maskwatch detector once per Kaggle image (at eval's collection threshold), then
 * the detector's own mask head and each candidate ONNX on the same faces, and writes one JSON-lines
 * file per source in the format `maskwatch detect --jsonl` writes, for
 *   npm run eval -- --pred <dir>/<name>.jsonl --gt kaggle --split test --mask --threshold <printed>
 *
 * Usage (repo root):
 *   node --import tsx training/pipeline_preds.ts --split test --out /tmp/preds a=/tmp/a.onnx b=/tmp/b.onnx
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { loadGroundTruth, type Split } from "../eval/groundtruth.ts";
import { Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { MaskClassifier } from "../src/vision/mask-classifier.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    split: { type: "string", default: "test" },
    out: { type: "string", default: "/tmp/maskwatch-pipeline-preds" },
  },
});
const gt = await loadGroundTruth("kaggle", { split: values.split as Split });
const engine = new Engine({ threads: 2 });
const detector = await engine.detector("maskwatch");
const candidates = await Promise.all(
  positionals.map(async (arg) => {
    const [name, path] = arg.split("=");
    const session = await ort.InferenceSession.create(path, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    return { name, classifier: new MaskClassifier(session), lines: [] as string[] };
  }),
);
const head: string[] = [];
for (const item of gt) {
  const { image } = await decodeImage(await readFile(item.image));
  const { faces } = await engine.analyze(image, {
    detector: "maskwatch",
    threshold: Math.min(0.3, detector.threshold),
    mask: { source: "head" },
  });
  head.push(JSON.stringify({ image: item.image, faces }));
  for (const c of candidates) {
    const masks = await c.classifier.classify(image, faces);
    c.lines.push(
      JSON.stringify({ image: item.image, faces: faces.map((f, i) => ({ ...f, mask: masks[i] })) }),
    );
  }
}
await mkdir(values.out as string, { recursive: true });
await writeFile(join(values.out as string, "head.jsonl"), `${head.join("\n")}\n`);
for (const c of candidates)
  await writeFile(join(values.out as string, `${c.name}.jsonl`), `${c.lines.join("\n")}\n`);
console.log(
  `detector threshold ${detector.threshold}; wrote ${values.out}/{head,${candidates.map((c) => c.name)}}.jsonl`,
);
await engine.close();
