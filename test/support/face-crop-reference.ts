/**
 * The mask classifier's crop as first written (cropResize + a separate bilinear rotation):
 * kept as the reference the optimised `faceCrop` / `writeFaceCrop` must reproduce.
 */
import { cropResize } from "../../src/vision/preprocess.ts";
import type { Face, RgbImage } from "../../src/vision/types.ts";

const CROP_SIZE = 64;
const CROP_SCALE = 1.25;
const MIN_ROTATION = 0.05;

/** The classifier's input crop for one face, as first implemented. */
export function referenceFaceCrop(image: RgbImage, face: Face): RgbImage {
  const [x1, y1, x2, y2] = face.box;
  const cx = (x1 + x2) / 2;
  const cy = (y1 + y2) / 2;
  const side = Math.max(1, CROP_SCALE * Math.max(x2 - x1, y2 - y1));
  const angle = eyeAngle(face);
  if (Math.abs(angle) < MIN_ROTATION) {
    return cropResize(
      image,
      [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2],
      CROP_SIZE,
      CROP_SIZE,
      "area",
    );
  }
  // Anti-aliased axis-aligned square covering the rotated one, then a bilinear rotation.
  const cover = side * (Math.abs(Math.cos(angle)) + Math.abs(Math.sin(angle)));
  const work = Math.ceil((CROP_SIZE * cover) / side);
  const square = cropResize(
    image,
    [cx - cover / 2, cy - cover / 2, cx + cover / 2, cy + cover / 2],
    work,
    work,
    "area",
  );
  return rotateCentre(square, angle, CROP_SIZE, (side / CROP_SIZE) * (work / cover));
}

/** Angle of the line from the left eye to the right eye (0 when level or unknown). */
function eyeAngle(face: Face): number {
  const l = face.landmarks?.left_eye;
  const r = face.landmarks?.right_eye;
  if (!l || !r || r[0] <= l[0]) return 0;
  return Math.atan2(r[1] - l[1], r[0] - l[0]);
}

/**
 * Samples an out × out image from the centre of `src`, rotated by `angle` (so a line at that
 * angle in `src` comes out level), `step` source pixels per output pixel.
 */
function rotateCentre(src: RgbImage, angle: number, out: number, step: number): RgbImage {
  const data = new Uint8Array(out * out * 3);
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const scx = src.width / 2;
  const scy = src.height / 2;
  for (let y = 0; y < out; y++) {
    for (let x = 0; x < out; x++) {
      const dx = (x + 0.5 - out / 2) * step;
      const dy = (y + 0.5 - out / 2) * step;
      const sx = scx + dx * cos - dy * sin - 0.5;
      const sy = scy + dx * sin + dy * cos - 0.5;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const o = (y * out + x) * 3;
      for (let c = 0; c < 3; c++) {
        const v =
          (1 - fx) * (1 - fy) * px(src, x0, y0, c) +
          fx * (1 - fy) * px(src, x0 + 1, y0, c) +
          (1 - fx) * fy * px(src, x0, y0 + 1, c) +
          fx * fy * px(src, x0 + 1, y0 + 1, c);
        data[o + c] = v + 0.5;
      }
    }
  }
  return { data, width: out, height: out };
}

function px(img: RgbImage, x: number, y: number, c: number): number {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return 0;
  return img.data[(y * img.width + x) * 3 + c];
}
