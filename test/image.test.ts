import assert from "node:assert/strict";
import { test } from "node:test";
import sharp, { type Sharp } from "sharp";
import { DEFAULT_LIMITS, decodeImage, ImageError, rawImage } from "../src/vision/image.ts";

/** A 40×20 test card: left half red, right half blue. */
async function card(): Promise<Sharp> {
  const data = Buffer.alloc(40 * 20 * 3);
  for (let y = 0; y < 20; y++)
    for (let x = 0; x < 40; x++) data.set(x < 20 ? [220, 20, 20] : [20, 20, 220], (y * 40 + x) * 3);
  return sharp(data, { raw: { width: 40, height: 20, channels: 3 } });
}

const pixel = (img: { data: Uint8Array; width: number }, x: number, y: number) =>
  Array.from(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3));

test("decodes every supported format to RGB of the right size", async () => {
  const encoders: Record<string, (s: Sharp) => Sharp> = {
    jpeg: (s) => s.jpeg({ quality: 95 }),
    png: (s) => s.png(),
    webp: (s) => s.webp({ lossless: true }),
    gif: (s) => s.gif(),
    tiff: (s) => s.tiff(),
    heif: (s) => s.avif({ lossless: true }),
  };
  for (const [format, encode] of Object.entries(encoders)) {
    const bytes = await encode(await card()).toBuffer();
    const { image, format: got } = await decodeImage(bytes);
    assert.equal(got, format);
    assert.equal(image.width, 40);
    assert.equal(image.height, 20);
    assert.equal(image.data.length, 40 * 20 * 3);
    const [r, , b] = pixel(image, 5, 10);
    assert.ok(r > 150 && b < 100, `${format}: left is red, got ${pixel(image, 5, 10)}`);
  }
});

test("EXIF orientation is applied, alpha and grey become RGB", async () => {
  // Orientation 6: the stored image is shown rotated 90° clockwise.
  const rotated = await (await card()).jpeg().withMetadata({ orientation: 6 }).toBuffer();
  const { image } = await decodeImage(rotated);
  assert.deepEqual([image.width, image.height], [20, 40]);
  assert.ok(pixel(image, 10, 5)[0] > 150, "red ends up on top");
  assert.ok(pixel(image, 10, 35)[2] > 150, "blue ends up at the bottom");

  const rgba = await (await card()).ensureAlpha(0.5).png().toBuffer();
  assert.equal((await decodeImage(rgba)).image.data.length, 40 * 20 * 3);
  const grey = await (await card()).greyscale().png().toBuffer();
  const g = (await decodeImage(grey)).image;
  assert.equal(g.data.length, 40 * 20 * 3);
  const [r, gg, b] = pixel(g, 5, 5);
  assert.ok(r === gg && gg === b);
});

test("bad input gets a typed error that says what is wrong", async () => {
  const jpeg = await (await card()).resize(400, 200).jpeg().toBuffer();
  const cases: [string, Uint8Array, string, RegExp][] = [
    ["empty", new Uint8Array(0), "empty_image", /empty/],
    [
      "random bytes",
      Uint8Array.from({ length: 4096 }, (_, i) => (i * 7919) % 251),
      "unsupported_image",
      /not a supported image/,
    ],
    [
      "truncated JPEG",
      jpeg.subarray(0, Math.floor(jpeg.length / 2)),
      "corrupt_image",
      /could not be decoded/,
    ],
    ["text", new TextEncoder().encode("hello, world"), "unsupported_image", /not a supported image/],
  ];
  for (const [name, bytes, code, message] of cases) {
    await assert.rejects(decodeImage(bytes), (e: unknown) => {
      assert.ok(e instanceof ImageError, name);
      assert.equal(e.code, code, name);
      assert.match(e.message, message, name);
      return true;
    });
  }
});

test("limits: bytes, and pixels from the header before decoding (a PNG claiming 50000×50000)", async () => {
  const png = Buffer.from(
    await sharp({ create: { width: 1, height: 1, channels: 3, background: "red" } })
      .png()
      .toBuffer(),
  );
  png.writeUInt32BE(50000, 16); // IHDR width
  png.writeUInt32BE(50000, 20); // IHDR height
  await assert.rejects(decodeImage(png), (e: unknown) => {
    assert.ok(e instanceof ImageError);
    assert.equal(e.code, "too_many_pixels");
    assert.match(e.message, /50000×50000/);
    return true;
  });
  const jpeg = await (await card()).jpeg().toBuffer();
  await assert.rejects(decodeImage(jpeg, { ...DEFAULT_LIMITS, maxBytes: 100 }), { code: "image_too_large" });
  await assert.rejects(decodeImage(jpeg, { ...DEFAULT_LIMITS, maxPixels: 799 }), { code: "too_many_pixels" });
  assert.equal((await decodeImage(jpeg, { ...DEFAULT_LIMITS, maxPixels: 800 })).image.width, 40);
});

test("raw frames: RGB as is, RGBA and grey converted, wrong sizes refused", () => {
  const rgb = new Uint8Array(2 * 2 * 3).fill(7);
  assert.equal(rawImage(rgb, 2, 2).data, rgb);
  const rgba = Uint8Array.from([1, 2, 3, 255, 4, 5, 6, 255]);
  assert.deepEqual(Array.from(rawImage(rgba, 2, 1, 4).data), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(Array.from(rawImage(Uint8Array.from([9, 8]), 2, 1, 1).data), [9, 9, 9, 8, 8, 8]);
  assert.throws(() => rawImage(rgb, 3, 2), { code: "corrupt_image" });
  assert.throws(() => rawImage(rgb, 0, 2), { code: "corrupt_image" });
});
