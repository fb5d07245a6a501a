import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, test } from "node:test";
import { type GtObject, loadDlib, parseVocXml } from "../eval/groundtruth.ts";
import { DETECTORS, Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { iou } from "../src/vision/nms.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";
import { decodeUltraFace, UltraFaceDetector } from "../src/vision/ultraface.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { sharedPath } from "./support/paths.ts";

// ---- pure parts -------------------------------------------------------------------------

test("decodeUltraFace: threshold, scaling to image pixels, masked-face labels", () => {
  const boxes = Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.6, 0.7, 0, 0, 1, 1]);
  const two = Float32Array.from([0.2, 0.8, 0.9, 0.1, 0.3, 0.7]);
  const faces = decodeUltraFace(two, boxes, 2, 200, 100, 0.65);
  assert.equal(faces.length, 2);
  assert.deepEqual(
    faces[0].box.map((v) => Math.round(v * 1000) / 1000),
    [20, 20, 60, 40],
  );
  assert.ok(Math.abs(faces[0].score - 0.8) < 1e-6);
  assert.equal(faces[0].label, undefined);
  // background / face / masked_face: score = best non-background class
  const three = Float32Array.from([0.1, 0.2, 0.7, 0.1, 0.8, 0.1, 0.5, 0.25, 0.25]);
  const masked = decodeUltraFace(three, boxes, 3, 200, 100, 0.6);
  assert.deepEqual(
    masked.map((f) => [f.label, Math.round(f.score * 10) / 10]),
    [
      ["masked_face", 0.7],
      ["face", 0.8],
    ],
  );
});

// ---- the real models, through the engine (recall on all of dlib-faces and determinism are in
// detectors.test.ts) ---------------------------------------------------------------------------

const engine = new Engine({ threads: 2 });
after(() => engine.close());

/** 2008_002506.jpg of dlib-faces (three frontal faces, nobody masked) and its boxes, or why to skip. */
async function photo(id: string): Promise<{ image: RgbImage; truth: GtObject[] } | string> {
  const dir = sharedPath("datasets/dlib-faces");
  if (!dir) return "../shared/datasets/dlib-faces is absent (set MASKWATCH_SHARED)";
  const skip = await ensureModels(DETECTORS[id].models);
  if (skip) return skip;
  const gt = loadDlib(dir, "all").find((g) => g.name === "2008_002506");
  assert.ok(gt);
  return { image: (await decodeImage(await readFile(gt.image))).image, truth: gt.objects };
}

/** The best-overlapping face (IoU ≥ 0.4) for each ground-truth box, one face per box at most. */
function match(faces: Face[], truth: GtObject[]): (Face | undefined)[] {
  const used = new Set<Face>();
  return truth.map((o) => {
    let best: Face | undefined;
    let bestIou = 0.4;
    for (const f of faces) {
      const v = iou(f.box, o.box);
      if (!used.has(f) && v >= bestIou) {
        best = f;
        bestIou = v;
      }
    }
    if (best) used.add(best);
    return best;
  });
}

test("UltraFace RFB-640 finds the three faces of 2008_002506.jpg", async (t) => {
  const p = await photo("ultraface");
  if (typeof p === "string") return t.skip(unlessCI(p));
  const det = await engine.detector("ultraface");
  assert.ok(det instanceof UltraFaceDetector);
  assert.deepEqual(det.inputSize, [640, 480]);
  assert.equal(det.numClasses, 2);
  assert.deepEqual(det.models, ["ultraface-rfb-640"]);
  assert.deepEqual(det.landmarkNames, []);
  const r = await det.detect(p.image);
  assert.equal(p.truth.length, 3);
  assert.equal(r.faces.length, 3);
  assert.ok(match(r.faces, p.truth).every(Boolean));
  assert.ok(r.faces.every((f) => f.landmarks === undefined && f.label === undefined));
  assert.equal((await det.detect(p.image, { maxFaces: 1 })).faces.length, 1);
});

test('UltraFace masked model labels unmasked faces "face"', async (t) => {
  const p = await photo("ultraface-masked");
  if (typeof p === "string") return t.skip(unlessCI(p));
  const det = await engine.detector("ultraface-masked");
  assert.ok(det instanceof UltraFaceDetector);
  assert.equal(det.numClasses, 3);
  assert.equal(det.id, "ultraface-masked");
  const r = await det.detect(p.image);
  assert.equal(r.faces.length, 3);
  assert.ok(match(r.faces, p.truth).every(Boolean));
  // Nobody in this photo wears a mask.
  assert.ok(r.faces.every((f) => f.label === "face"));
});

test('UltraFace masked model labels masked faces "masked_face" (Kaggle maksssksksss42)', async (t) => {
  // Six people in surgical masks, all annotated with_mask, 53–62 px wide.
  const dir = sharedPath("datasets/kaggle-face-mask");
  if (!dir) return t.skip(unlessCI("../shared/datasets/kaggle-face-mask is absent (set MASKWATCH_SHARED)"));
  const skip = await ensureModels(DETECTORS["ultraface-masked"].models);
  if (skip) return t.skip(unlessCI(skip));
  const ann = parseVocXml(await readFile(`${dir}/annotations/maksssksksss42.xml`, "utf8"));
  const masked = ann.objects.filter((o) => o.label === "mask");
  assert.equal(masked.length, 6);
  const { image } = await decodeImage(
    await readFile(`${dir}/images/${ann.filename ?? "maksssksksss42.jpg"}`),
  );
  const { faces } = await (await engine.detector("ultraface-masked")).detect(image);
  const found = match(faces, masked).filter((f) => f !== undefined);
  // Measured (onnxruntime-node 1.30, CPU, default threshold 0.7): all six found, all masked_face.
  assert.equal(found.length, 6);
  assert.equal(found.filter((f) => f.label === "masked_face").length, 6);
});
