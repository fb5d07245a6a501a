import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as ort from "onnxruntime-node";
import sharp from "sharp";
import { type Box, iou } from "../src/vision/nms.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";
import { decodeYuNet, YuNetDetector, yunetGrid } from "../src/vision/yunet.ts";
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

// ---- the real models --------------------------------------------------------------------

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

async function setup(t: { skip: (msg: string) => void }, file: string) {
  const model = sharedPath("models/yunet", file);
  const dir = sharedPath(DLIB);
  if (!model) {
    t.skip(`YuNet model models/yunet/${file} not found under the shared folder (MASKWATCH_SHARED)`);
    return null;
  }
  if (!dir) {
    t.skip("dlib-faces not found under the shared folder (MASKWATCH_SHARED)");
    return null;
  }
  const session = await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
  return { session, dir };
}

test("YuNet finds the three faces of 2008_002506.jpg, points on the right sides", async (t) => {
  const s = await setup(t, "yunet_n_dynamic.onnx");
  if (!s) return;
  const det = new YuNetDetector(s.session);
  assert.equal(det.fixedSize, undefined);
  const img = await loadImage(join(s.dir, "2008_002506.jpg"));
  const r = await det.detect(img);
  assert.deepEqual(match(r.faces, groundTruth(s.dir).get("2008_002506.jpg") ?? []), { tp: 3, fp: 0 });
  for (const f of r.faces) {
    const l = f.landmarks ?? {};
    assert.ok(l.left_eye[0] < l.right_eye[0], "left_eye is the eye on the image left");
    assert.ok(l.mouth_left[0] < l.mouth_right[0]);
    assert.ok(l.left_eye[1] < l.mouth_left[1]);
  }
  for (let i = 1; i < r.faces.length; i++) assert.ok(r.faces[i - 1].score >= r.faces[i].score);
  assert.equal((await det.detect(img, { maxFaces: 2 })).faces.length, 2);
  const big = (await det.detect(img, { minFaceSize: 90 })).faces;
  assert.ok(big.length >= 1 && big.length < 3);
  await det.dispose();
});

test("YuNet on all dlib-faces images: measured recall", async (t) => {
  // Measured (onnxruntime-node 1.30, CPU), default threshold 0.6, IoU ≥ 0.4:
  //   yunet_n_dynamic 43/43, 4 false positives; yunet_s_dynamic 43/43, 1;
  //   face_detection_yunet_2023mar (fixed 640×640, letterboxed) 43/43, 4.
  // (At OpenCV's 0.9: n 42/43, s 36/43, 2023mar 41/43, none false.)
  for (const [file, wantTp, maxFp] of [
    ["yunet_n_dynamic.onnx", 43, 4],
    ["yunet_s_dynamic.onnx", 43, 1],
    ["face_detection_yunet_2023mar.onnx", 43, 4],
  ] as const) {
    const s = await setup(t, file);
    if (!s) return;
    const det = new YuNetDetector(s.session);
    const truth = groundTruth(s.dir);
    let tp = 0;
    let fp = 0;
    for (const [name, boxes] of truth) {
      const m = match((await det.detect(await loadImage(join(s.dir, name)))).faces, boxes);
      tp += m.tp;
      fp += m.fp;
    }
    assert.equal(tp, wantTp, file);
    assert.ok(fp <= maxFp, `${file}: ${fp} false positives`);
    await det.dispose();
  }
});

test("YuNet is deterministic", async (t) => {
  const s = await setup(t, "yunet_s_dynamic.onnx");
  if (!s) return;
  const det = new YuNetDetector(s.session);
  const img = await loadImage(join(s.dir, "2008_004176.jpg"));
  const a = await det.detect(img);
  const b = await det.detect(img);
  assert.ok(a.faces.length >= 7);
  assert.deepEqual(a.faces, b.faces);
});
