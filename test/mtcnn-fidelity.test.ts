/**
 * MTCNN against a plain reference written after facenet-pytorch's `detect_face`
 * (test/support/mtcnn-reference.ts), the same converted nets through both, stage by stage:
 * pyramid scales and level sizes, P-Net candidates per level, the boxes cropped for R-Net and
 * O-Net, and the faces (IoU ≥ 0.9, scores, landmarks). Photos: Kaggle face-mask frames with 1 to
 * 9 faces and the dlib street photo.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import * as ort from "onnxruntime-node";
import sharp from "sharp";
import { modelPath } from "../src/models/store.ts";
import { decodeImage } from "../src/vision/image.ts";
import { levelSize, MtcnnDetector, type MtcnnTrace, SummedArea, scalePyramid } from "../src/vision/mtcnn.ts";
import { type Box, iou } from "../src/vision/nms.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";
import { skipUnlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { areaResize, type ReferenceTrace, referenceDetect } from "./support/mtcnn-reference.ts";
import { sharedPath } from "./support/paths.ts";

const KAGGLE = sharedPath("datasets/kaggle-face-mask/images");
const DLIB = sharedPath("datasets/dlib-faces");
/** Frames with several faces (784: 9, 792: 7, 760: 5, 720: 3), a single face, and a crowd edge case. */
const PHOTOS = [
  "kaggle:maksssksksss784",
  "kaggle:maksssksksss792",
  "kaggle:maksssksksss760",
  "kaggle:maksssksksss720",
  "kaggle:maksssksksss100",
  "kaggle:maksssksksss616",
  "dlib:2008_002506",
];

test("the summed-area resampler equals adaptive average pooling, zero outside the image", () => {
  const w = 37;
  const h = 23;
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
  const sat = new SummedArea({ data, width: w, height: h });
  const float = Float32Array.from(data);
  // Regions: the whole image shrunk and grown, inside crops, and crops leaving every side.
  const regions: [number, number, number, number, number, number][] = [
    [0, 0, w, h, 12, 9],
    [0, 0, w, h, 50, 31],
    [3, 4, 20, 11, 24, 24],
    [-5, -3, 17, 17, 24, 24],
    [25, 10, 20, 20, 48, 48],
    [-50, -50, 10, 10, 24, 24],
  ];
  for (const [x0, y0, rw, rh, ow, oh] of regions) {
    // The reference: copy the region into a zero canvas, pool it, normalise, transpose.
    const canvas = new Float32Array(rw * rh * 3);
    for (let y = 0; y < rh; y++)
      for (let x = 0; x < rw; x++)
        for (let c = 0; c < 3; c++) {
          const sx = x0 + x;
          const sy = y0 + y;
          if (sx >= 0 && sx < w && sy >= 0 && sy < h)
            canvas[(y * rw + x) * 3 + c] = float[(sy * w + sx) * 3 + c];
        }
    const pooled = areaResize(canvas, rw, rh, 0, 0, rw, rh, ow, oh);
    const want = new Float32Array(ow * oh * 3);
    for (let y = 0; y < oh; y++)
      for (let x = 0; x < ow; x++)
        for (let c = 0; c < 3; c++)
          want[(x * oh + y) * 3 + c] = (pooled[(y * ow + x) * 3 + c] - 127.5) * 0.0078125;
    const got = new Float32Array(ow * oh * 3 + 5);
    sat.resizeTransposed(got, 5, x0, y0, rw, rh, ow, oh);
    assert.deepEqual(got.subarray(5), want, `region ${[x0, y0, rw, rh]} → ${ow}×${oh}`);
  }
});

test("pyramid level sizes are ⌊side × scale + 1⌋", () => {
  const scales = scalePyramid(640, 480, 20, 0.709);
  assert.deepEqual(levelSize(640, 480, scales[0]), [385, 289]);
  assert.deepEqual(
    scales.map((s) => levelSize(640, 480, s)),
    [
      [385, 289],
      [273, 205],
      [194, 145],
      [137, 103],
      [98, 73],
      [69, 52],
      [49, 37],
      [35, 26],
      [25, 19],
      [18, 14],
    ],
  );
});

/** Where `faces` and the reference's disagree: unmatched faces (IoU < 0.9), score or landmark gaps. */
function disagreements(faces: Face[], ref: ReferenceTrace, image: RgbImage): string[] {
  const clamp = (b: Box): Box => [
    Math.min(Math.max(b[0], 0), image.width),
    Math.min(Math.max(b[1], 0), image.height),
    Math.min(Math.max(b[2], 0), image.width),
    Math.min(Math.max(b[3], 0), image.height),
  ];
  const out: string[] = [];
  if (faces.length !== ref.faces.length) out.push(`${faces.length} faces, reference ${ref.faces.length}`);
  const used = new Set<number>();
  for (const r of ref.faces) {
    let best = -1;
    let bestIou = 0.9;
    faces.forEach((f, i) => {
      const v = iou(f.box, clamp(r.box));
      if (!used.has(i) && v >= bestIou) {
        best = i;
        bestIou = v;
      }
    });
    if (best < 0) {
      out.push(`reference face ${r.box.map((v) => v.toFixed(1))} not found`);
      continue;
    }
    used.add(best);
    const f = faces[best];
    if (Math.abs(f.score - r.score) > 1e-4) out.push(`score ${f.score} vs ${r.score}`);
    const points = Object.values(f.landmarks ?? {}).flat();
    const gap = Math.max(...points.map((v, k) => Math.abs(v - r.points[k])));
    if (!(gap < 0.5)) out.push(`landmarks ${gap.toFixed(2)} px apart`);
  }
  return out;
}

describe("MTCNN agrees with the reference pipeline on fixed photos", {
  skip: skipUnlessCI(
    !KAGGLE || !DLIB ? "../shared/datasets (kaggle-face-mask, dlib-faces) is absent" : false,
  ),
}, () => {
  const nets = {} as { pnet: ort.InferenceSession; rnet: ort.InferenceSession; onet: ort.InferenceSession };
  const photos = new Map<string, RgbImage>();
  before(async () => {
    const missing = await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]);
    assert.equal(missing, null);
    for (const id of ["pnet", "rnet", "onet"] as const)
      nets[id] = await ort.InferenceSession.create(await modelPath(`mtcnn-${id}`), { intraOpNumThreads: 1 });
    for (const p of PHOTOS) {
      const [set, name] = p.split(":");
      const file = set === "kaggle" ? `${KAGGLE}/${name}.jpg` : `${DLIB}/${name}.jpg`;
      photos.set(p, (await decodeImage(await readFile(file))).image);
    }
  });
  after(async () => {
    await Promise.all(Object.values(nets).map((s) => s.release()));
  });

  for (const p of PHOTOS) {
    test(`${p}: every stage`, async () => {
      const image = photos.get(p)!;
      const detector = new MtcnnDetector(nets);
      const trace = {} as MtcnnTrace;
      const { faces } = await detector.detect(image, {}, trace);
      const ref = await referenceDetect(nets, image, { crop: "pad" });
      assert.ok(ref.faces.length > 0, "the reference finds faces on this photo");
      assert.deepEqual(trace.scales, ref.scales, "pyramid scales");
      assert.deepEqual(trace.levels, ref.levels, "pyramid level sizes");
      assert.deepEqual(trace.pnetRaw, ref.pnetRaw, "P-Net cells over the threshold, per level");
      assert.deepEqual(trace.pnetPerLevel, ref.pnetPerLevel, "P-Net candidates after each level's NMS");
      assert.deepEqual(sorted(trace.rnetInput), sorted(ref.rnetInput), "boxes cropped for R-Net");
      assert.deepEqual(sorted(trace.onetInput), sorted(ref.onetInput), "boxes cropped for O-Net");
      assert.deepEqual(disagreements(faces, ref, image), []);
    });
  }

  test("a Full-HD frame is read as it is: every stage as the reference's", async () => {
    const { data, info } = await sharp(await readFile(`${DLIB}/2008_002506.jpg`))
      .resize(1920, 1080, { fit: "fill" })
      .raw()
      .toBuffer({ resolveWithObject: true });
    const image: RgbImage = { data: new Uint8Array(data), width: info.width, height: info.height };
    const trace = {} as MtcnnTrace;
    const { faces } = await new MtcnnDetector(nets).detect(image, {}, trace);
    const ref = await referenceDetect(nets, image, { crop: "pad" });
    assert.deepEqual(trace.levels, ref.levels, "pyramid level sizes (the first: 1153×649)");
    assert.deepEqual(trace.levels[0], [1153, 649]);
    assert.deepEqual(sorted(trace.rnetInput), sorted(ref.rnetInput), "boxes cropped for R-Net");
    assert.deepEqual(sorted(trace.onetInput), sorted(ref.onetInput), "boxes cropped for O-Net");
    assert.deepEqual(disagreements(faces, ref, image), []);
    assert.equal(faces.length, 3);
  });

  test("P-Net levels run in strips give the same stages and faces as whole levels", async () => {
    for (const p of ["kaggle:maksssksksss784", "dlib:2008_002506"]) {
      const image = photos.get(p)!;
      const whole = {} as MtcnnTrace;
      const strips = {} as MtcnnTrace;
      const a = await new MtcnnDetector(nets).detect(image, {}, whole);
      // 5000 px: strips of 24 to 32 columns on these photos' first levels.
      const b = await new MtcnnDetector(nets, {}, 5000).detect(image, {}, strips);
      assert.deepEqual(strips, whole, p);
      assert.deepEqual(b.faces, a.faces, p);
    }
  });

  test("the comparison has teeth: a different pyramid factor or crop mode is caught", async () => {
    let caught = 0;
    for (const p of PHOTOS.slice(0, 3)) {
      const image = photos.get(p)!;
      const ref = await referenceDetect(nets, image, { crop: "pad" });
      const { faces } = await new MtcnnDetector(nets, { scaleFactor: 0.75 }).detect(image);
      if (disagreements(faces, ref, image).length) caught++;
      const clipped = await referenceDetect(nets, image, { crop: "clip" });
      const ours = (await new MtcnnDetector(nets).detect(image)).faces;
      if (disagreements(ours, clipped, image).length) caught++;
    }
    assert.ok(caught >= 3, `only ${caught} of 6 deliberate differences were caught`);
  });
});

function sorted(boxes: Box[]): Box[] {
  return [...boxes].sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2] || a[3] - b[3]);
}
