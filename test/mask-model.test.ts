/**
 * The shipped mask classifier: the file is the one its model card describes, and it is right
 * on held-back Kaggle test-split faces at the rate the card claims.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { findModel } from "../src/models/registry.ts";
import { modelBytes, sha256 } from "../src/models/store.ts";
import { Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import type { MaskLabel } from "../src/vision/types.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { REPO, sharedPath } from "./support/paths.ts";

const engine = new Engine({ threads: 2 });
after(() => engine.close());

interface Heldout {
  stem: string;
  box: [number, number, number, number];
  label: MaskLabel;
  predicted: MaskLabel;
}

test("the shipped file matches the registry and the model card", async () => {
  const entry = findModel("mask-classifier")!;
  const card = await readFile(join(REPO, "docs/models/mask-classifier.md"), "utf8");
  const bytes = await modelBytes("mask-classifier");
  assert.equal(sha256(bytes), entry.sha256);
  assert.ok(card.includes(entry.sha256), "the model card names the sha256");
  assert.ok(bytes.length <= 5 * 1024 * 1024);
});

test("held-back Kaggle test faces: right at the card's rate, within a margin", async (t) => {
  const images = sharedPath("datasets/kaggle-face-mask/images");
  if (!images) return t.skip(unlessCI("kaggle-face-mask is absent (set MASKWATCH_SHARED)"));
  const heldout = JSON.parse(await readFile(join(REPO, "training/heldout.json"), "utf8")) as {
    faces: Heldout[];
  };
  const classifier = await engine.maskClassifier();
  let right = 0;
  let agree = 0;
  for (const face of heldout.faces) {
    const { image } = await decodeImage(await readFile(join(images, `${face.stem}.jpg`)));
    const [result] = await classifier.classify(image, [{ box: face.box, score: 1 }]);
    if (result.label === face.label) right++;
    if (result.label === face.predicted) agree++;
  }
  const n = heldout.faces.length;
  t.diagnostic(`right ${right}/${n}, agrees with the training run's predictions on ${agree}/${n}`);
  // The card: 47/60 right when cropped by the training code (PIL). Our crop resamples a little
  // differently, so a few borderline faces may flip: allow 3.
  assert.ok(right >= 47 - 3, `right on ${right} of ${n}`);
  assert.ok(agree >= n - 4, `agrees with training-time predictions on ${agree} of ${n}`);
});

test("the pipeline: detector then classifier, masks on a masked photo", async (t) => {
  const file = sharedPath("datasets/kaggle-face-mask/images/maksssksksss42.jpg");
  if (!file) return t.skip(unlessCI("kaggle-face-mask is absent"));
  const skip = await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]);
  if (skip) return t.skip(unlessCI(skip));
  const { image } = await decodeImage(await readFile(file));
  const r = await engine.analyze(image, { detector: "mtcnn", mask: true });
  assert.equal(r.faces.length, 6);
  assert.ok(r.models.includes("mask-classifier"));
  assert.ok(r.timings.classify !== undefined && r.timings.classify > 0);
  const masked = r.faces.filter((f) => f.mask?.label === "mask").length;
  assert.ok(masked >= 5, `${masked} of 6 masked faces classified mask`);
  for (const f of r.faces) {
    const s = f.mask!.scores;
    assert.ok(Math.abs(s.mask + s.no_mask + s.incorrect - 1) < 1e-4);
  }
  const strict = await engine.analyze(image, { detector: "mtcnn", mask: { threshold: 0.999999 } });
  assert.ok(strict.faces.filter((f) => f.mask?.label === "mask").length <= masked);
});

test("garbage crops do not crash: tiny, uniform, outside the image", async () => {
  const classifier = await engine.maskClassifier();
  const uniform = { data: new Uint8Array(32 * 32 * 3).fill(128), width: 32, height: 32 };
  const results = await classifier.classify(uniform, [
    { box: [0, 0, 1, 1], score: 1 },
    { box: [5, 5, 5, 5], score: 1 },
    { box: [-50, -50, -10, -10], score: 1 },
    { box: [0, 0, 32, 32], score: 1 },
  ]);
  assert.equal(results.length, 4);
  for (const r of results)
    assert.ok(["mask", "no_mask", "incorrect"].includes(r.label) && Number.isFinite(r.score));
  assert.deepEqual(await classifier.classify(uniform, []), []);
});
