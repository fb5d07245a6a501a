import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as ort from "onnxruntime-node";
import sharp from "sharp";
import { type Box, iou } from "../src/vision/nms.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";
import { decodeUltraFace, UltraFaceDetector } from "../src/vision/ultraface.ts";
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
  const model = sharedPath("models", file);
  const dir = sharedPath(DLIB);
  if (!model) {
    t.skip(`UltraFace model models/${file} not found under the shared folder (MASKWATCH_SHARED)`);
    return null;
  }
  if (!dir) {
    t.skip("dlib-faces not found under the shared folder (MASKWATCH_SHARED)");
    return null;
  }
  // logSeverityLevel 3: these exports list their weights as graph inputs, which onnxruntime
  // warns about once per weight.
  const session = await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
  return { session, dir };
}

test("UltraFace RFB-640 finds the three faces of 2008_002506.jpg", async (t) => {
  const s = await setup(t, "ultraface/version-RFB-640.onnx");
  if (!s) return;
  const det = new UltraFaceDetector(s.session);
  assert.deepEqual(det.inputSize, [640, 480]);
  assert.deepEqual(det.models, ["ultraface-rfb-640"]);
  assert.deepEqual(det.landmarkNames, []);
  const img = await loadImage(join(s.dir, "2008_002506.jpg"));
  const r = await det.detect(img);
  assert.deepEqual(match(r.faces, groundTruth(s.dir).get("2008_002506.jpg") ?? []), { tp: 3, fp: 0 });
  assert.ok(r.faces.every((f) => f.landmarks === undefined && f.label === undefined));
  assert.equal((await det.detect(img, { maxFaces: 1 })).faces.length, 1);
  await det.dispose();
});

test("UltraFace masked model labels faces", async (t) => {
  const s = await setup(t, "ultraface-masked/RFB-640-masked_face-v2.onnx");
  if (!s) return;
  const det = new UltraFaceDetector(s.session);
  assert.equal(det.numClasses, 3);
  assert.equal(det.id, "ultraface-masked");
  const r = await det.detect(await loadImage(join(s.dir, "2008_002506.jpg")));
  assert.equal(r.faces.length, 3);
  // Nobody in this photo wears a mask.
  assert.ok(r.faces.every((f) => f.label === "face"));
});

test("UltraFace on all dlib-faces images: measured recall", async (t) => {
  // Measured (onnxruntime-node 1.30, CPU), default threshold 0.7, IoU ≥ 0.4:
  //   RFB-320 43/43, 0 false positives; RFB-640 43/43, 1; RFB-640-masked 41/43, 0.
  for (const [file, wantTp, maxFp] of [
    ["ultraface/version-RFB-320.onnx", 43, 0],
    ["ultraface/version-RFB-640.onnx", 43, 1],
    ["ultraface-masked/RFB-640-masked_face-v2.onnx", 41, 0],
  ] as const) {
    const s = await setup(t, file);
    if (!s) return;
    const det = new UltraFaceDetector(s.session);
    let tp = 0;
    let fp = 0;
    for (const [name, boxes] of groundTruth(s.dir)) {
      const m = match((await det.detect(await loadImage(join(s.dir, name)))).faces, boxes);
      tp += m.tp;
      fp += m.fp;
    }
    assert.equal(tp, wantTp, file);
    assert.ok(fp <= maxFp, `${file}: ${fp} false positives`);
    await det.dispose();
  }
});

test("UltraFace is deterministic", async (t) => {
  const s = await setup(t, "ultraface/version-RFB-320.onnx");
  if (!s) return;
  const det = new UltraFaceDetector(s.session);
  const img = await loadImage(join(s.dir, "2008_007676.jpg"));
  const a = await det.detect(img);
  const b = await det.detect(img);
  assert.ok(a.faces.length >= 6);
  assert.deepEqual(a.faces, b.faces);
});
