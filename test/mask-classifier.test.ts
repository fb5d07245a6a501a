import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { loadVoc } from "../eval/groundtruth.ts";
import { decodeImage } from "../src/vision/image.ts";
import { CROP_FLOATS, CROP_SIZE, decide, faceCrop, writeFaceCrop } from "../src/vision/mask-classifier.ts";
import { writeTensor } from "../src/vision/preprocess.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";
import { unlessCI } from "./support/ci.ts";
import { referenceFaceCrop } from "./support/face-crop-reference.ts";
import { sharedPath } from "./support/paths.ts";

function canvas(w: number, h: number, value = 200): RgbImage {
  return { data: new Uint8Array(w * h * 3).fill(value), width: w, height: h };
}

function dot(img: RgbImage, cx: number, cy: number, r: number): void {
  for (let y = Math.floor(cy - r); y <= cy + r; y++)
    for (let x = Math.floor(cx - r); x <= cx + r; x++)
      if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r)
        img.data.fill(0, (y * img.width + x) * 3, (y * img.width + x) * 3 + 3);
}

/** Centre of the dark pixels in one half of a crop. */
function darkCentre(img: RgbImage, half: "left" | "right"): [number, number] {
  let sx = 0;
  let sy = 0;
  let n = 0;
  for (let y = 0; y < img.height; y++)
    for (
      let x = half === "left" ? 0 : img.width / 2;
      x < (half === "left" ? img.width / 2 : img.width);
      x++
    ) {
      if (img.data[(y * img.width + x) * 3] < 100) {
        sx += x;
        sy += y;
        n++;
      }
    }
  return [sx / n, sy / n];
}

test("decision threshold: mask only when sure enough, else the likelier violation", () => {
  assert.equal(decide([0.6, 0.3, 0.1], 0.5).label, "mask");
  assert.equal(decide([0.6, 0.3, 0.1], 0.7).label, "no_mask");
  assert.equal(decide([0.6, 0.1, 0.3], 0.7).label, "incorrect");
  const r = decide([0.2, 0.5, 0.3], 0.5);
  assert.deepEqual(r, { label: "no_mask", score: 0.5, scores: { mask: 0.2, no_mask: 0.5, incorrect: 0.3 } });
});

test("crop: a square 1.25× the box around its centre, 64×64, black outside the image", () => {
  const img = canvas(200, 200);
  const inside = faceCrop(img, { box: [60, 60, 140, 140], score: 1 });
  assert.equal(inside.width, CROP_SIZE);
  assert.ok(
    inside.data.every((v) => v === 200),
    "all inside: uniform",
  );
  const edge = faceCrop(img, { box: [0, 0, 80, 80], score: 1 });
  assert.equal(edge.data[0], 0, "the corner beyond the image is black");
  assert.equal(edge.data[(63 * 64 + 63) * 3], 200);
});

test("crop: rotated so the eyes are level when the detector gives them", () => {
  const img = canvas(300, 300);
  // Eyes 60 px apart on a line tilted by 25°, around (150, 140).
  const a = (25 * Math.PI) / 180;
  const left: [number, number] = [150 - 30 * Math.cos(a), 140 - 30 * Math.sin(a)];
  const right: [number, number] = [150 + 30 * Math.cos(a), 140 + 30 * Math.sin(a)];
  dot(img, ...left, 5);
  dot(img, ...right, 5);
  const face: Face = { box: [90, 90, 210, 210], score: 1, landmarks: { left_eye: left, right_eye: right } };
  const crop = faceCrop(img, face);
  const [lx, ly] = darkCentre(crop, "left");
  const [rx, ry] = darkCentre(crop, "right");
  assert.ok(Math.abs(ly - ry) < 1, `eyes level after alignment: ${ly.toFixed(2)} vs ${ry.toFixed(2)}`);
  // 60 px apart in a 150 px square → 25.6 px apart in 64 px.
  assert.ok(Math.abs(rx - lx - (60 * 64) / 150) < 1.5, `eye distance ${rx - lx}`);
  const unaligned = faceCrop(img, { ...face, landmarks: undefined });
  const [, uly] = darkCentre(unaligned, "left");
  const [, ury] = darkCentre(unaligned, "right");
  assert.ok(ury - uly > 8, "without landmarks the tilt stays");
});

test("degenerate boxes still give a crop", () => {
  const img = canvas(50, 50);
  for (const box of [
    [10, 10, 10, 10],
    [-100, -100, -90, -90],
    [0, 0, 1, 1],
    [49, 49, 400, 400],
  ] as const) {
    const crop = faceCrop(img, { box: [...box], score: 1 });
    assert.equal(crop.data.length, CROP_SIZE * CROP_SIZE * 3);
  }
});

/** Values where two crops differ, and the largest difference. */
function differences(a: RgbImage, b: RgbImage): { count: number; max: number } {
  assert.equal(a.data.length, b.data.length);
  let count = 0;
  let max = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i] - b.data[i]);
    if (d > 0) count++;
    max = Math.max(max, d);
  }
  return { count, max };
}

/** Deterministic pseudo-random numbers in [0, 1). */
function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

test("the one-pass crop equals the reference crop (cropResize + rotation) value for value", () => {
  const rnd = random(7);
  const img: RgbImage = {
    data: Uint8Array.from({ length: 211 * 157 * 3 }, () => Math.floor(rnd() * 256)),
    width: 211,
    height: 157,
  };
  const tensor = new Float32Array(CROP_FLOATS + 5);
  const expected = new Float32Array(CROP_FLOATS);
  let rotated = 0;
  for (let i = 0; i < 400; i++) {
    // Tiny to much larger than the image, partly or wholly outside it, non-square, tilted or not.
    const side = i % 3 === 0 ? 0.5 + rnd() * 20 : i % 3 === 1 ? rnd() * 120 : rnd() * 500;
    const x = rnd() * 300 - 60;
    const y = rnd() * 240 - 60;
    const face: Face = { box: [x, y, x + side, y + side * (0.6 + rnd() * 0.8)], score: 1 };
    if (i % 2 === 0) {
      const a = (rnd() - 0.5) * 1.6;
      face.landmarks = { left_eye: [x, y], right_eye: [x + 10 * Math.cos(a), y + 10 * Math.sin(a)] };
      if (Math.abs(a) >= 0.05) rotated++;
    }
    const want = referenceFaceCrop(img, face);
    const d = differences(faceCrop(img, face), want);
    assert.equal(d.count, 0, `face ${i} [${face.box.map((v) => v.toFixed(2))}]: ${d.count} values differ`);
    writeFaceCrop(img, face, tensor, 5);
    writeTensor(want, expected, 0, { layout: "nchw", mean: 127.5, std: 127.5 });
    assert.deepEqual(tensor.subarray(5), expected, `face ${i}: tensor`);
  }
  assert.ok(rotated > 150, `${rotated} rotated crops exercised`);
  assert.throws(() => writeFaceCrop(img, { box: [0, 0, 10, 10], score: 1 }, tensor, 6), RangeError);
});

test("the one-pass crop equals the reference on real Kaggle faces", async (t) => {
  const dir = sharedPath("datasets/kaggle-face-mask");
  if (!dir) return t.skip(unlessCI("kaggle-face-mask is absent (set MASKWATCH_SHARED)"));
  const images = loadVoc(dir, { split: "test" }).slice(0, 12);
  let faces = 0;
  for (const item of images) {
    const { image } = await decodeImage(await readFile(item.image));
    for (const o of item.objects) {
      const w = o.box[2] - o.box[0];
      // Plain, and tilted by 20° about the box centre as eye landmarks would make it.
      for (const tilt of [0, 0.35]) {
        const cx = (o.box[0] + o.box[2]) / 2;
        const cy = (o.box[1] + o.box[3]) / 2;
        const face: Face = { box: o.box, score: 1 };
        if (tilt) {
          const dx = (w / 4) * Math.cos(tilt);
          const dy = (w / 4) * Math.sin(tilt);
          face.landmarks = { left_eye: [cx - dx, cy - dy], right_eye: [cx + dx, cy + dy] };
        }
        const d = differences(faceCrop(image, face), referenceFaceCrop(image, face));
        assert.equal(d.count, 0, `${item.name} [${o.box}] tilt ${tilt}: ${d.count} values differ`);
        faces++;
      }
    }
  }
  assert.ok(faces > 40, `${faces} crops compared`);
});
