import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, test } from "node:test";
import { loadDlib } from "../eval/groundtruth.ts";
import {
  anchorConfigFor,
  BACK_ANCHORS,
  decodeBlazeFace,
  FRONT_ANCHORS,
  generateAnchors,
  planTiles,
  toImageFaces,
} from "../src/vision/blazeface.ts";
import { DETECTORS, Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { iou } from "../src/vision/nms.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { sharedPath } from "./support/paths.ts";

// ---- pure parts -------------------------------------------------------------------------

test("anchors: 896 for the back model, MediaPipe layout", () => {
  const a = generateAnchors(BACK_ANCHORS);
  assert.equal(a.length / 4, 896);
  // 16×16 cells × 2 anchors, then 8×8 cells × 6 anchors; fixed size 1×1.
  assert.deepEqual([...a.subarray(0, 4)], [0.5 / 16, 0.5 / 16, 1, 1]);
  assert.deepEqual([...a.subarray(4, 8)], [0.5 / 16, 0.5 / 16, 1, 1]);
  assert.deepEqual([...a.subarray(8, 12)], [1.5 / 16, 0.5 / 16, 1, 1]);
  assert.deepEqual([...a.subarray(511 * 4, 512 * 4)], [15.5 / 16, 15.5 / 16, 1, 1]);
  assert.deepEqual([...a.subarray(512 * 4, 513 * 4)], [0.5 / 8, 0.5 / 8, 1, 1]);
  assert.deepEqual([...a.subarray(517 * 4, 518 * 4)], [0.5 / 8, 0.5 / 8, 1, 1]);
  assert.deepEqual([...a.subarray(518 * 4, 519 * 4)], [1.5 / 8, 0.5 / 8, 1, 1]);
  assert.deepEqual([...a.subarray(895 * 4)], [7.5 / 8, 7.5 / 8, 1, 1]);
  // The front model's grid is the same in normalised coordinates.
  assert.deepEqual(generateAnchors(FRONT_ANCHORS), a);
  assert.deepEqual(anchorConfigFor(256), BACK_ANCHORS);
  assert.deepEqual(anchorConfigFor(128), FRONT_ANCHORS);
});

test("decode: sigmoid score, box and key points relative to the anchor", () => {
  const anchors = generateAnchors(BACK_ANCHORS);
  const n = 896;
  const scores = new Float32Array(n).fill(-10);
  const boxes = new Float32Array(n * 16);
  // anchor 2: cell (1, 0) of the 16×16 grid, centre (0.09375, 0.03125)
  scores[2] = 2;
  boxes.set([25.6, 12.8, 51.2, 25.6, 0, 0, 2.56, 0, 0, 2.56, 0, 0, 0, 0, -2.56, -2.56], 2 * 16);
  // a huge logit is clipped to 100 before the sigmoid, as in MediaPipe
  scores[700] = 1e6;
  const raw = decodeBlazeFace(scores, boxes, anchors, 256, 0.5);
  assert.equal(raw.length, 2);
  const r = raw[0];
  assert.ok(Math.abs(r.score - 1 / (1 + Math.exp(-2))) < 1e-7);
  const cx = 0.09375 + 0.1;
  const cy = 0.03125 + 0.05;
  const expectBox = [cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05];
  for (const [i, v] of r.box.entries()) assert.ok(Math.abs(v - expectBox[i]) < 1e-6, `box[${i}] ${v}`);
  assert.ok(Math.abs(r.keypoints[1][0] - (0.09375 + 0.01)) < 1e-6);
  assert.ok(Math.abs(r.keypoints[2][1] - (0.03125 + 0.01)) < 1e-6);
  assert.ok(Math.abs(r.keypoints[5][0] - (0.09375 - 0.01)) < 1e-6);
  assert.equal(raw[1].score, 1 / (1 + Math.exp(-100)));
  // Mapping to image pixels: origin + normalised × size, names by image side.
  const [face] = toImageFaces([r], 10, 20, 200, 100);
  assert.ok(Math.abs(face.box[0] - (10 + expectBox[0] * 200)) < 1e-4);
  assert.ok(Math.abs(face.box[3] - (20 + expectBox[3] * 100)) < 1e-4);
  assert.deepEqual(Object.keys(face.landmarks ?? {}), [
    "left_eye",
    "right_eye",
    "nose",
    "mouth",
    "left_ear",
    "right_ear",
  ]);
});

test("planTiles: overlapping squares covering the image", () => {
  const tiles = planTiles(1000, 600, 2, 0.25);
  // side = ceil(1000 / 1.75) = 572; 2 along x, ceil((600-572)/(572*0.75))+1 = 2 along y
  assert.equal(tiles.length, 4);
  assert.deepEqual(tiles[0], [0, 0, 572, 572]);
  assert.deepEqual(tiles[3], [428, 28, 1000, 600]);
  // A tile longer than the short side is centred on it.
  assert.deepEqual(planTiles(1000, 300, 2, 0.25), [
    [0, -136, 572, 436],
    [428, -136, 1000, 436],
  ]);
  // Portrait images tile along y.
  assert.deepEqual(
    planTiles(300, 1000, 2, 0.25).map((t) => t[1]),
    [0, 428],
  );
});

// ---- the real model, through the engine (recall on all of dlib-faces and determinism are in
// detectors.test.ts) ---------------------------------------------------------------------------

const engine = new Engine({ threads: 2 });
after(() => engine.close());

test("BlazeFace finds the three faces of 2008_002506.jpg, eyes on the right sides", async (t) => {
  const dir = sharedPath("datasets/dlib-faces");
  if (!dir) return t.skip(unlessCI("../shared/datasets/dlib-faces is absent (set MASKWATCH_SHARED)"));
  const skip = await ensureModels(DETECTORS.blazeface.models);
  if (skip) return t.skip(unlessCI(skip));
  const det = await engine.detector("blazeface");
  assert.deepEqual(det.models, ["blazeface-back-256"]);
  const gt = loadDlib(dir, "all").find((g) => g.name === "2008_002506");
  assert.ok(gt);
  const { image: img } = await decodeImage(await readFile(gt.image));
  const r = await det.detect(img);
  assert.equal(gt.objects.length, 3);
  assert.equal(r.faces.length, 3);
  assert.ok(gt.objects.every((o) => r.faces.some((f) => iou(f.box, o.box) >= 0.4)));
  for (const f of r.faces) {
    const l = f.landmarks ?? {};
    assert.ok(l.left_eye[0] < l.right_eye[0], "left_eye is the eye on the image left");
    assert.ok(l.left_ear[0] < l.right_ear[0]);
    assert.ok(f.box[0] >= 0 && f.box[2] <= img.width && f.box[3] <= img.height);
  }
  for (let i = 1; i < r.faces.length; i++) assert.ok(r.faces[i - 1].score >= r.faces[i].score);
  assert.ok(r.timings.inference > 0 && r.timings.preprocess > 0);
  // Options: maxFaces and minFaceSize (the smallest face here is ~85 px).
  assert.equal((await det.detect(img, { maxFaces: 1 })).faces.length, 1);
  const big = (await det.detect(img, { minFaceSize: 90 })).faces;
  assert.ok(big.length < 3 && big.every((f) => Math.min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= 90));
  assert.equal((await det.detect(img, { threshold: 0.99999 })).faces.length, 0);
});
