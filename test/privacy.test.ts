/**
 * The frame stored with a violation: faces found by the real detector in a real street photo are
 * blurred beyond recognition where asked (all of them, or everyone but the violator), and the
 * violator's face keeps its detail.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, test } from "node:test";
import { contextFrame } from "../src/streams/monitor.ts";
import { Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import type { Box } from "../src/vision/nms.ts";
import type { RgbImage } from "../src/vision/types.ts";
import { unlessCI } from "./support/ci.ts";
import { sharedPath } from "./support/paths.ts";

const PHOTO = sharedPath("datasets/dlib-faces/2008_002506.jpg");
const engine = new Engine({ threads: 1 });
after(() => engine.close());

/** Mean absolute difference between horizontal neighbours inside `box`: detail, gone when blurred. */
function detail(image: RgbImage, [x1, y1, x2, y2]: Box): number {
  let sum = 0;
  let n = 0;
  for (let y = Math.ceil(y1); y < Math.floor(y2); y++)
    for (let x = Math.ceil(x1); x < Math.floor(x2) - 1; x++)
      for (let c = 0; c < 3; c++) {
        const i = (y * image.width + x) * 3 + c;
        sum += Math.abs(image.data[i] - image.data[i + 3]);
        n++;
      }
  return sum / n;
}

test("everyone but the violator blurred; everyone blurred; nobody blurred", async (t) => {
  if (!PHOTO) return t.skip(unlessCI("dlib-faces is absent (set MASKWATCH_SHARED)"));
  const { image } = await decodeImage(await readFile(PHOTO));
  const { faces } = await engine.analyze(image);
  assert.equal(faces.length, 3);
  const boxes = faces.map((f) => f.box);
  const before = boxes.map((b) => detail(image, b));
  const after = async (blurred: Box[]) => {
    const { image: out } = await decodeImage(Buffer.from(await contextFrame(image, blurred)));
    assert.deepEqual([out.width, out.height], [image.width, image.height]);
    return boxes.map((b, i) => detail(out, b) / before[i]);
  };
  const [violator, ...others] = await after(boxes.slice(1));
  assert.ok(violator > 0.8, `the violator keeps its detail (${violator.toFixed(2)} of it)`);
  for (const r of others) assert.ok(r < 0.45, `a passer-by is blurred (${r.toFixed(2)} of its detail left)`);
  for (const r of await after(boxes)) assert.ok(r < 0.45, `all blurred (${r.toFixed(2)})`);
  for (const r of await after([])) assert.ok(r > 0.8, `none blurred (${r.toFixed(2)})`);
});
