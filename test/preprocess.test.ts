import assert from "node:assert/strict";
import { test } from "node:test";
import {
  cropResize,
  letterbox,
  pad,
  resizeArea,
  resizeBilinear,
  toTensor,
  writeTensor,
} from "../src/vision/preprocess.ts";
import type { RgbImage } from "../src/vision/types.ts";

/** A grey image (R = G = B) from rows of values. */
function grey(rows: number[][]): RgbImage {
  const height = rows.length;
  const width = rows[0].length;
  const data = new Uint8Array(width * height * 3);
  rows.forEach((row, y) => {
    row.forEach((v, x) => {
      data.fill(v, (y * width + x) * 3, (y * width + x) * 3 + 3);
    });
  });
  return { data, width, height };
}

/** The red channel as rows. */
function rowsOf(img: RgbImage): number[][] {
  const out: number[][] = [];
  for (let y = 0; y < img.height; y++) {
    const row: number[] = [];
    for (let x = 0; x < img.width; x++) row.push(img.data[(y * img.width + x) * 3]);
    out.push(row);
  }
  return out;
}

test("resizeArea 4x4 -> 2x2 averages 2x2 blocks", () => {
  const img = grey([
    [0, 4, 8, 12],
    [4, 8, 12, 16],
    [100, 100, 0, 0],
    [100, 100, 0, 200],
  ]);
  assert.deepEqual(rowsOf(resizeArea(img, 2, 2)), [
    [4, 12],
    [100, 50],
  ]);
});

test("resizeArea 3 -> 2 uses fractional coverage", () => {
  // out0 = (2*p0 + p1) / 3, out1 = (p1 + 2*p2) / 3
  assert.deepEqual(rowsOf(resizeArea(grey([[0, 30, 90]]), 2, 1)), [[10, 70]]);
});

test("resizeArea keeps colour channels apart", () => {
  const img: RgbImage = { data: Uint8Array.from([10, 20, 30, 30, 40, 50]), width: 2, height: 1 };
  assert.deepEqual([...resizeArea(img, 1, 1).data], [20, 30, 40]);
});

test("resizeBilinear 2 -> 4 uses half-pixel centres and replicates edges", () => {
  assert.deepEqual(rowsOf(resizeBilinear(grey([[0, 100]]), 4, 1)), [[0, 25, 75, 100]]);
  // Same size is the identity.
  const img = grey([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  assert.deepEqual(rowsOf(resizeBilinear(img, 3, 2)), rowsOf(img));
});

test("resizeBilinear 4 -> 2 samples between pixel pairs", () => {
  // centres at 0.5 and 2.5
  assert.deepEqual(rowsOf(resizeBilinear(grey([[0, 10, 20, 30]]), 2, 1)), [[5, 25]]);
});

test("resizeArea upscale follows OpenCV's INTER_AREA linear weights", () => {
  // OpenCV area-upscale (integer factors act like nearest neighbour): sx = floor(dx/2), fx = (dx+1) - (sx+1)*2 -> frac; weights 1-fx, fx.
  // dx=0: sx=0, fx=-1 -> 0 => 0; dx=1: sx=0, fx=0 -> 0 => 0; dx=2: sx=1 (last) => 100; dx=3 => 100.
  assert.deepEqual(rowsOf(resizeArea(grey([[0, 100]]), 4, 1)), [[0, 0, 100, 100]]);
  // 2 -> 3: dx=0: sx=0, fx=1-1.5=-0.5 -> 0; dx=1: sx=0, fx=2-1.5=0.5 -> 50; dx=2: sx=1 -> 100
  assert.deepEqual(rowsOf(resizeArea(grey([[0, 100]]), 3, 1)), [[0, 50, 100]]);
});

test("cropResize pads the region outside the image with black", () => {
  const img = grey([
    [10, 20],
    [30, 40],
  ]);
  // A 2x2 box shifted up-left by one pixel: only the bottom-right cell is inside.
  assert.deepEqual(rowsOf(cropResize(img, [-1, -1, 1, 1], 2, 2, "area")), [
    [0, 0],
    [0, 10],
  ]);
  // 4x2 box from x=-1 to x=3, shrunk to 2x1: each output averages 2x2 cells, half of them black.
  assert.deepEqual(rowsOf(cropResize(img, [-1, 0, 3, 2], 2, 1, "area")), [[10, 15]]);
  // Entirely outside: all black.
  assert.deepEqual(rowsOf(cropResize(img, [5, 5, 7, 7], 2, 2, "bilinear")), [
    [0, 0],
    [0, 0],
  ]);
});

test("cropResize of an integer box equals crop then resize", () => {
  const rows = Array.from({ length: 9 }, (_, y) =>
    Array.from({ length: 11 }, (_, x) => (x * 23 + y * 17) % 256),
  );
  const img = grey(rows);
  const cropped = grey(rows.slice(2, 8).map((r) => r.slice(3, 10)));
  for (const mode of ["area", "bilinear"] as const) {
    for (const [w, h] of [
      [3, 2],
      [5, 4],
      [14, 12],
    ]) {
      const a = cropResize(img, [3, 2, 10, 8], w, h, mode);
      const b = mode === "area" ? resizeArea(cropped, w, h) : resizeBilinear(cropped, w, h);
      assert.deepEqual(rowsOf(a), rowsOf(b), `${mode} ${w}x${h}`);
    }
  }
});

test("toTensor nchw / nhwc, mean / std and BGR order", () => {
  const img: RgbImage = { data: Uint8Array.from([10, 20, 30, 40, 50, 60]), width: 2, height: 1 };
  assert.deepEqual([...toTensor(img, { layout: "nhwc", mean: 0, std: 1 })], [10, 20, 30, 40, 50, 60]);
  assert.deepEqual([...toTensor(img, { layout: "nchw", mean: 0, std: 1 })], [10, 40, 20, 50, 30, 60]);
  assert.deepEqual(
    [...toTensor(img, { layout: "nchw", mean: 0, std: 1, bgr: true })],
    [30, 60, 20, 50, 10, 40],
  );
  assert.deepEqual(
    [...toTensor(img, { layout: "nhwc", mean: [10, 20, 30], std: [1, 2, 5] })],
    [0, 0, 0, 30, 15, 6],
  );
  // mean / std are per colour even when the channel order is swapped.
  assert.deepEqual(
    [...toTensor(img, { layout: "nhwc", mean: [10, 20, 30], std: [1, 2, 5], bgr: true })],
    [0, 0, 0, 6, 15, 30],
  );
});

test("toTensor transpose writes the image as W x H", () => {
  // 3 wide, 2 high; value = 10*y + x (+0/100/200 per channel)
  const W = 3;
  const H = 2;
  const data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) data[(y * W + x) * 3 + c] = 10 * y + x + 100 * c;
  const img = { data, width: W, height: H };
  const t = toTensor(img, { layout: "nchw", mean: 0, std: 1, transpose: true });
  // plane is [x][y]: x=0: (0,10); x=1: (1,11); x=2: (2,12)
  assert.deepEqual([...t.subarray(0, 6)], [0, 10, 1, 11, 2, 12]);
  assert.deepEqual([...t.subarray(6, 12)], [100, 110, 101, 111, 102, 112]);
  const u = toTensor(img, { layout: "nhwc", mean: 0, std: 1, transpose: true });
  assert.deepEqual([...u.subarray(0, 6)], [0, 100, 200, 10, 110, 210]);
  assert.deepEqual([...u.subarray(6, 9)], [1, 101, 201]);
});

test("writeTensor fills batch slots at an offset", () => {
  const a: RgbImage = { data: Uint8Array.from([1, 2, 3]), width: 1, height: 1 };
  const b: RgbImage = { data: Uint8Array.from([4, 5, 6]), width: 1, height: 1 };
  const out = new Float32Array(6);
  const next = writeTensor(a, out, 0, { layout: "nchw", mean: 0, std: 1 });
  assert.equal(next, 3);
  writeTensor(b, out, next, { layout: "nchw", mean: 0, std: 1 });
  assert.deepEqual([...out], [1, 2, 3, 4, 5, 6]);
  assert.throws(() => writeTensor(b, out, 4, { layout: "nchw", mean: 0, std: 1 }), RangeError);
});

test("letterbox keeps aspect ratio and centres with black pads", async () => {
  const img = grey([
    [10, 20, 30, 40],
    [50, 60, 70, 80],
  ]);
  const lb = await letterbox(img, 4, 4, { mode: "area" });
  assert.equal(lb.scale, 1);
  assert.equal(lb.padX, 0);
  assert.equal(lb.padY, 1);
  assert.deepEqual(rowsOf(lb.image), [
    [0, 0, 0, 0],
    [10, 20, 30, 40],
    [50, 60, 70, 80],
    [0, 0, 0, 0],
  ]);
  const small = await letterbox(img, 2, 2, { mode: "area" });
  assert.equal(small.scale, 0.5);
  assert.deepEqual(rowsOf(small.image), [
    [35, 55],
    [0, 0],
  ]);
  const tl = await letterbox(img, 4, 4, { align: "topleft", mode: "area" });
  assert.equal(tl.padY, 0);
  assert.deepEqual(rowsOf(tl.image)[0], [10, 20, 30, 40]);
});

test("pad clips an image placed partly outside the canvas", () => {
  const img = grey([
    [1, 2],
    [3, 4],
  ]);
  assert.deepEqual(rowsOf(pad(img, 3, 3, 2, -1)), [
    [0, 0, 3],
    [0, 0, 0],
    [0, 0, 0],
  ]);
});
