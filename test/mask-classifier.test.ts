import assert from "node:assert/strict";
import { test } from "node:test";
import { CROP_SIZE, decide, faceCrop } from "../src/vision/mask-classifier.ts";
import type { Face, RgbImage } from "../src/vision/types.ts";

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
