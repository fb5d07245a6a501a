import sharp, { type OverlayOptions, type Sharp } from "sharp";
import type { Face, RgbImage } from "./types.ts";

/** Box colour per label; faces without a label are drawn in the detector colour. */
const COLOURS: Record<string, string> = {
  mask: "#16a34a",
  masked_face: "#16a34a",
  no_mask: "#dc2626",
  incorrect: "#d97706",
  face: "#2563eb",
};

/** What a label says on a picture. */
export const LABEL_NAMES: Record<string, string> = {
  mask: "Mask",
  masked_face: "Mask",
  no_mask: "No mask",
  incorrect: "Mask worn incorrectly",
  face: "Face",
};

export interface DrawOptions {
  format?: "jpeg" | "png";
  quality?: number;
  /** Text per face, beside its box; default: the label's name and score. */
  caption?: (face: Face, index: number) => string;
}

/** Draws boxes, landmarks and captions on a copy of the image and encodes it. */
export async function drawFaces(
  image: RgbImage,
  faces: readonly Face[],
  options: DrawOptions = {},
): Promise<Buffer> {
  const raw = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length);
  const img = sharp(raw, { raw: { width: image.width, height: image.height, channels: 3 } });
  return encode(img.composite(overlays(image.width, image.height, faces, options)), options);
}

/**
 * The same on an encoded image (as uploaded): orientation applied as the detector saw it. One libvips
 * pipeline with a small layer per face, so a 40 MP photo is never held as a full-size raw copy.
 */
export async function drawFacesOnEncoded(
  bytes: Uint8Array,
  faces: readonly Face[],
  options: DrawOptions = {},
): Promise<Buffer> {
  const oriented = sharp(bytes, { pages: 1 }).autoOrient().removeAlpha();
  const meta = await sharp(bytes, { pages: 1 }).metadata();
  const turned = (meta.orientation ?? 1) >= 5;
  const width = (turned ? meta.height : meta.width) ?? 0;
  const height = (turned ? meta.width : meta.height) ?? 0;
  return encode(oriented.composite(overlays(width, height, faces, options)), options);
}

function encode(img: Sharp, options: DrawOptions): Promise<Buffer> {
  return options.format === "png"
    ? img.png().toBuffer()
    : img.jpeg({ quality: options.quality ?? 85 }).toBuffer();
}

type Rect = { x: number; y: number; w: number; h: number };

const overlaps = (a: Rect, b: Rect) =>
  a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

/**
 * One SVG layer per face, just big enough for its box, landmarks and caption. Captions sit on a filled
 * band in the box's colour, sized to the picture, kept inside the frame, and moved below the box (or
 * inside it) when the place above is taken by another caption.
 */
export function overlays(
  width: number,
  height: number,
  faces: readonly Face[],
  options: DrawOptions,
): OverlayOptions[] {
  const stroke = Math.max(2, Math.round(Math.min(width, height) / 320));
  const font = Math.max(11, Math.round(Math.min(width, height) / 45));
  const pad = Math.round(font * 0.3);
  const bandH = font + 2 * pad;
  const placed: Rect[] = [];
  const layers: OverlayOptions[] = [];
  faces.forEach((f, i) => {
    const label = f.mask?.label ?? f.label;
    const colour = COLOURS[label ?? "face"] ?? COLOURS.face;
    const text = options.caption
      ? options.caption(f, i)
      : `${label ? `${LABEL_NAMES[label] ?? label} ` : ""}${Math.round((f.mask?.score ?? f.score) * 100)}%`;
    const [x1, y1, x2, y2] = f.box.map(Math.round) as [number, number, number, number];
    // Sans-serif digits and letters average about 0.6 em (DejaVu Sans).
    const bandW = Math.min(width, Math.ceil(text.length * font * 0.62) + 2 * pad);
    const bandX = Math.max(0, Math.min(x1 - Math.floor(stroke / 2), width - bandW));
    const candidates = [y1 - bandH, y2, y1].map((y) => ({
      x: bandX,
      y: Math.max(0, Math.min(y, height - bandH)),
      w: bandW,
      h: bandH,
    }));
    const band = candidates.find((c) => !placed.some((p) => overlaps(c, p))) ?? candidates[0];
    placed.push(band);

    const points = Object.values(f.landmarks ?? {});
    const r = stroke * 1.3;
    const left = Math.max(0, Math.floor(Math.min(x1 - stroke, band.x, ...points.map(([x]) => x - r))));
    const top = Math.max(0, Math.floor(Math.min(y1 - stroke, band.y, ...points.map(([, y]) => y - r))));
    const right = Math.min(
      width,
      Math.ceil(Math.max(x2 + stroke, band.x + band.w, ...points.map(([x]) => x + r))),
    );
    const bottom = Math.min(
      height,
      Math.ceil(Math.max(y2 + stroke, band.y + band.h, ...points.map(([, y]) => y + r))),
    );
    if (right <= left || bottom <= top) return;
    const parts = [
      `<rect x="${x1 - left}" y="${y1 - top}" width="${Math.max(1, x2 - x1)}" height="${Math.max(1, y2 - y1)}" fill="none" stroke="${colour}" stroke-width="${stroke}"/>`,
      ...points.map(
        ([x, y]) =>
          `<circle cx="${x - left}" cy="${y - top}" r="${r}" fill="#facc15" stroke="#000" stroke-width="${stroke / 3}"/>`,
      ),
      `<rect x="${band.x - left}" y="${band.y - top}" width="${band.w}" height="${band.h}" fill="${colour}"/>`,
      `<text x="${band.x - left + pad}" y="${band.y - top + pad + font * 0.82}" font-family="DejaVu Sans, sans-serif" font-size="${font}" fill="#fff">${escapeXml(text)}</text>`,
    ];
    const w = right - left;
    const h = bottom - top;
    layers.push({
      input: Buffer.from(
        `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}">${parts.join("")}</svg>`,
      ),
      left,
      top,
    });
  });
  return layers;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
