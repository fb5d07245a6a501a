import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, test } from "node:test";
import * as ort from "onnxruntime-node";
import { type GtObject, loadDlib } from "../eval/groundtruth.ts";
import { modelBytes } from "../src/models/store.ts";
import { DETECTORS, Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { iou } from "../src/vision/nms.ts";
import type { Detection, Detector, RgbImage } from "../src/vision/types.ts";
import { decodeYuNet, YuNetDetector, yunetGrid } from "../src/vision/yunet.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { sharedPath } from "./support/paths.ts";

// ---- pure parts -------------------------------------------------------------------------

test("yunetGrid: one cell per stride step of the padded input", () => {
  assert.deepEqual(yunetGrid(640, 480), [
    { stride: 8, cols: 80, rows: 60 },
    { stride: 16, cols: 40, rows: 30 },
    { stride: 32, cols: 20, rows: 15 },
  ]);
});

test("decodeYuNet: OpenCV's decoding on a hand-made output", () => {
  // 64×32 input: stride 8 → 8×4 cells, 16 → 4×2, 32 → 2×1.
  const grid = yunetGrid(64, 32);
  const zeros = (n: number, k: number) => new Float32Array(n * k);
  const raw = {
    cls: grid.map((g) => zeros(g.cols * g.rows, 1)),
    obj: grid.map((g) => zeros(g.cols * g.rows, 1)),
    bbox: grid.map((g) => zeros(g.cols * g.rows, 4)),
    kps: grid.map((g) => zeros(g.cols * g.rows, 10)),
  };
  // stride 16, cell (col 3, row 1) = index 7
  raw.cls[1][7] = 0.81;
  raw.obj[1][7] = 1.2; // clamped to 1
  raw.bbox[1].set([0.5, 0.25, Math.log(2), 0], 7 * 4);
  raw.kps[1].set([0, 0, 1, 0, 0.5, 0.5, 0, 1, 1, 1], 7 * 10);
  // stride 8, cell 0: below threshold (sqrt(0.2 * 0.2) = 0.2)
  raw.cls[0][0] = 0.2;
  raw.obj[0][0] = 0.2;
  const faces = decodeYuNet(raw, 64, 32, 0.5);
  assert.equal(faces.length, 1);
  const f = faces[0];
  assert.ok(Math.abs(f.score - 0.9) < 1e-6);
  // centre ((3 + 0.5) * 16, (1 + 0.25) * 16) = (56, 20); size (32, 16)
  for (const [i, v] of f.box.entries()) assert.ok(Math.abs(v - [40, 12, 72, 28][i]) < 1e-4);
  assert.deepEqual(f.landmarks, {
    left_eye: [48, 16],
    right_eye: [64, 16],
    nose: [56, 24],
    mouth_left: [48, 32],
    mouth_right: [64, 32],
  });
  assert.equal(decodeYuNet(raw, 64, 32, 0.1).length, 2);
});

// ---- the real models, through the engine (recall on all of dlib-faces and determinism are in
// detectors.test.ts) ---------------------------------------------------------------------------

const engine = new Engine({ threads: 2 });
after(() => engine.close());

/** 2008_002506.jpg of dlib-faces (three frontal faces) and its boxes, or why to skip. */
async function photo(models: readonly string[]): Promise<{ image: RgbImage; truth: GtObject[] } | string> {
  const dir = sharedPath("datasets/dlib-faces");
  if (!dir) return "../shared/datasets/dlib-faces is absent (set MASKWATCH_SHARED)";
  const skip = await ensureModels(models);
  if (skip) return skip;
  const gt = loadDlib(dir, "all").find((g) => g.name === "2008_002506");
  assert.ok(gt);
  return { image: (await decodeImage(await readFile(gt.image))).image, truth: gt.objects };
}

/** The three faces found, nothing else, eyes and mouth corners on the right sides. */
function assertThreeFaces(r: Detection, truth: GtObject[]): void {
  assert.equal(truth.length, 3);
  assert.equal(r.faces.length, 3);
  assert.ok(truth.every((o) => r.faces.some((f) => iou(f.box, o.box) >= 0.4)));
  for (const f of r.faces) {
    const l = f.landmarks ?? {};
    assert.ok(l.left_eye[0] < l.right_eye[0], "left_eye is the eye on the image left");
    assert.ok(l.mouth_left[0] < l.mouth_right[0]);
    assert.ok(l.left_eye[1] < l.mouth_left[1]);
  }
  for (let i = 1; i < r.faces.length; i++) assert.ok(r.faces[i - 1].score >= r.faces[i].score);
}

test("YuNet finds the three faces of 2008_002506.jpg, points on the right sides", async (t) => {
  const p = await photo(DETECTORS.yunet.models);
  if (typeof p === "string") return t.skip(unlessCI(p));
  const det: Detector = await engine.detector("yunet");
  assert.ok(det instanceof YuNetDetector);
  assert.equal(det.fixedSize, undefined);
  assert.deepEqual(det.models, ["yunet-n"]);
  assertThreeFaces(await det.detect(p.image), p.truth);
  assert.equal((await det.detect(p.image, { maxFaces: 2 })).faces.length, 2);
  const big = (await det.detect(p.image, { minFaceSize: 90 })).faces;
  assert.ok(big.length >= 1 && big.length < 3);
});

test("YuNet 2023mar (fixed 640×640, letterboxed) finds the same three faces", async (t) => {
  const p = await photo(["yunet-2023mar"]);
  if (typeof p === "string") return t.skip(unlessCI(p));
  const session = await ort.InferenceSession.create(await modelBytes("yunet-2023mar"), {
    logSeverityLevel: 3,
  });
  const det = new YuNetDetector(session);
  try {
    assert.deepEqual(det.fixedSize, [640, 640]);
    assert.deepEqual(det.models, ["yunet-2023mar"]);
    assertThreeFaces(await det.detect(p.image), p.truth);
  } finally {
    await det.dispose();
  }
});
