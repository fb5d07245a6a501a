/**
 * Maskwatch's own detector (training/train_detector.py, docs/models/maskwatch-detector.md): the committed
 * file is the registered and documented one, the graph keeps YuNet's contract plus the mask head, and the
 * detector finds faces, masked ones included, at the rates the model card reports.
 */
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import * as ort from "onnxruntime-node";
import { loadDlib, loadGroundTruth } from "../eval/groundtruth.ts";
import { findModel } from "../src/models/registry.ts";
import { sha256 } from "../src/models/store.ts";
import { DEFAULT_DETECTOR, DETECTORS, Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { iou } from "../src/vision/nms.ts";
import { decodeYuNet, yunetGrid } from "../src/vision/yunet.ts";
import { unlessCI } from "./support/ci.ts";
import { REPO, SHARED, sharedPath } from "./support/paths.ts";

const MODEL = join(REPO, "models/maskwatch-detector.onnx");
const CARD = join(REPO, "docs/models/maskwatch-detector.md");

const engine = new Engine({ threads: 2 });
after(() => engine.close());

test("the committed model is the registered, documented one: sha256 in registry and card, ≤ 3 MB", async () => {
  const entry = findModel("maskwatch-detector");
  assert.ok(entry);
  assert.deepEqual(entry.source, { kind: "project", path: "models/maskwatch-detector.onnx" });
  assert.equal(entry.bundled, true);
  const bytes = await readFile(MODEL);
  assert.equal(sha256(bytes), entry.sha256);
  assert.ok((await readFile(CARD, "utf8")).includes(entry.sha256), "the model card names the sha256");
  assert.ok((await stat(MODEL)).size <= 3 * 1024 * 1024);
  assert.equal(DEFAULT_DETECTOR, "maskwatch");
  assert.deepEqual(DETECTORS.maskwatch.models, ["maskwatch-detector"]);
});

test("the graph: dynamic NCHW input, YuNet's outputs per stride plus mask probabilities", async () => {
  const session = await ort.InferenceSession.create(await readFile(MODEL), { logSeverityLevel: 3 });
  try {
    for (const s of [8, 16, 32])
      for (const k of ["cls", "obj", "bbox", "kps", "mask"])
        assert.ok(session.outputNames.includes(`${k}_${s}`));
    const out = await session.run({
      input: new ort.Tensor("float32", new Float32Array(3 * 96 * 160), [1, 3, 96, 160]),
    });
    assert.deepEqual(out.mask_8.dims, [1, (96 / 8) * (160 / 8), 3]);
    assert.deepEqual(out.bbox_32.dims, [1, 3 * 5, 4]);
    const m = out.mask_16.data as Float32Array;
    for (let i = 0; i < m.length; i += 3) assert.ok(Math.abs(m[i] + m[i + 1] + m[i + 2] - 1) < 1e-4);
  } finally {
    await session.release();
  }
});

test("decodeYuNet reads the mask head at the cell that gave the box", () => {
  const grid = yunetGrid(32, 32);
  const zeros = (g: { cols: number; rows: number }, k: number) => new Float32Array(g.cols * g.rows * k);
  const raw = {
    cls: grid.map((g) => zeros(g, 1)),
    obj: grid.map((g) => zeros(g, 1)),
    bbox: grid.map((g) => zeros(g, 4)),
    kps: grid.map((g) => zeros(g, 10)),
    mask: grid.map((g) => zeros(g, 3)),
  };
  raw.cls[0][5] = 1;
  raw.obj[0][5] = 1;
  raw.mask[0].set([0.1, 0.2, 0.7], 5 * 3);
  raw.mask[0].set([0.9, 0.05, 0.05], 4 * 3);
  const [face] = decodeYuNet(raw, 32, 32, 0.5);
  assert.equal(face.mask?.label, "incorrect");
  assert.ok(Math.abs((face.mask?.scores.no_mask ?? 0) - 0.2) < 1e-6);
});

test("finds the three faces of 2008_002506.jpg with landmarks; input size, mask sources", async (t) => {
  const dir = sharedPath("datasets/dlib-faces");
  if (!dir) return t.skip(unlessCI("../shared/datasets/dlib-faces is absent (set MASKWATCH_SHARED)"));
  const gt = loadDlib(dir, "all").find((g) => g.name === "2008_002506");
  assert.ok(gt);
  const { image } = await decodeImage(await readFile(gt.image));
  const r = await engine.analyze(image, {});
  assert.equal(r.detector, "maskwatch");
  assert.equal(r.faces.length, 3);
  assert.ok(gt.objects.every((o) => r.faces.some((f) => iou(f.box, o.box) >= 0.4)));
  for (const f of r.faces) {
    assert.equal(f.mask, undefined, "no mask decision unless asked");
    const l = f.landmarks ?? {};
    assert.ok(l.left_eye[0] < l.right_eye[0] && l.mouth_left[0] < l.mouth_right[0]);
    assert.ok(l.left_eye[1] < l.nose[1] && l.nose[1] < l.mouth_left[1]);
  }
  // The input size reaches the network: at a 64-px long side these ~90-px faces are too small to find.
  assert.equal((await engine.analyze(image, { inputSize: 64 })).faces.length, 0);
  const head = await engine.analyze(image, { mask: { source: "head" } });
  const classifier = await engine.analyze(image, { mask: true });
  assert.deepEqual(head.models, ["maskwatch-detector"]);
  assert.deepEqual(classifier.models, ["maskwatch-detector", "mask-classifier"]);
  for (const f of [...head.faces, ...classifier.faces]) {
    assert.ok(f.mask);
    const s = f.mask.scores;
    assert.ok(Math.abs(s.mask + s.no_mask + s.incorrect - 1) < 1e-3);
  }
  // Bare faces: the classifier calls all three no_mask.
  assert.deepEqual(
    classifier.faces.map((f) => f.mask?.label),
    ["no_mask", "no_mask", "no_mask"],
  );
});

test("held-out Kaggle test photos: masked faces are found about as often as bare ones", async (t) => {
  if (!sharedPath("datasets/kaggle-face-mask"))
    return t.skip(unlessCI("../shared/datasets/kaggle-face-mask is absent (set MASKWATCH_SHARED)"));
  const gt = (await loadGroundTruth(join(SHARED, "datasets/kaggle-face-mask"), { split: "test" })).slice(
    0,
    60,
  );
  const found = { mask: [0, 0], no_mask: [0, 0] };
  for (const item of gt) {
    const { image } = await decodeImage(await readFile(item.image));
    const { faces } = await engine.analyze(image, {});
    for (const o of item.objects) {
      const side = Math.min(o.box[2] - o.box[0], o.box[3] - o.box[1]);
      const cls = o.label === "mask" || o.label === "no_mask" ? o.label : undefined;
      if (!cls || side < 10 || o.difficult) continue;
      found[cls][1]++;
      if (faces.some((f) => iou(f.box, o.box) >= 0.5)) found[cls][0]++;
    }
  }
  const recall = (k: keyof typeof found) => found[k][0] / found[k][1];
  t.diagnostic(
    `recall mask ${recall("mask").toFixed(3)} (${found.mask[1]}), no_mask ${recall("no_mask").toFixed(3)} (${found.no_mask[1]})`,
  );
  assert.ok(recall("mask") >= 0.8, `masked-face recall ${recall("mask").toFixed(3)}`);
  assert.ok(recall("no_mask") >= 0.8, `bare-face recall ${recall("no_mask").toFixed(3)}`);
});
