import sharp, { type Sharp } from "sharp";
import type { Face, RgbImage } from "./types.ts";

/** Box colour per label; faces without a label are drawn in the detector colour. */
const COLOURS: Record<string, string> = {
  mask: "#22c55e",
  masked_face: "#22c55e",
  no_mask: "#ef4444",
  incorrect: "#f59e0b",
  face: "#3b82f6",
};

export interface DrawOptions {
  format?: "jpeg" | "png";
  quality?: number;
  /** Text per face, beside its box; default: the score (and label, when there is one). */
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
  return encode(
    img.composite([{ input: overlay(image.width, image.height, faces, options), top: 0, left: 0 }]),
    options,
  );
}

/** The same on an encoded image (as uploaded): orientation applied as the detector saw it. */
export async function drawFacesOnEncoded(
  bytes: Uint8Array,
  faces: readonly Face[],
  options: DrawOptions = {},
): Promise<Buffer> {
  const oriented = sharp(bytes, { pages: 1 }).autoOrient().removeAlpha();
  const { data, info } = await oriented.raw().toBuffer({ resolveWithObject: true });
  return drawFaces({ data, width: info.width, height: info.height }, faces, options);
}

function encode(img: Sharp, options: DrawOptions): Promise<Buffer> {
  return options.format === "png"
    ? img.png().toBuffer()
    : img.jpeg({ quality: options.quality ?? 85 }).toBuffer();
}

/** An SVG layer with every face's box, landmarks and caption. */
function overlay(width: number, height: number, faces: readonly Face[], options: DrawOptions): Buffer {
  const stroke = Math.max(2, Math.round(Math.min(width, height) / 250));
  const font = Math.max(12, stroke * 6);
  const parts: string[] = [];
  faces.forEach((f, i) => {
    const label = f.mask?.label ?? f.label;
    const colour = COLOURS[label ?? "face"] ?? COLOURS.face;
    const [x1, y1, x2, y2] = f.box;
    parts.push(
      `<rect x="${x1}" y="${y1}" width="${x2 - x1}" height="${y2 - y1}" fill="none" stroke="${colour}" stroke-width="${stroke}"/>`,
    );
    for (const [x, y] of Object.values(f.landmarks ?? {})) {
      parts.push(
        `<circle cx="${x}" cy="${y}" r="${stroke * 1.2}" fill="#facc15" stroke="#000" stroke-width="0.5"/>`,
      );
    }
    const text = options.caption
      ? options.caption(f, i)
      : `${label ? `${label} ` : ""}${(f.mask?.score ?? f.score).toFixed(2)}`;
    const ty = y1 - stroke > font ? y1 - stroke : y2 + font + stroke;
    parts.push(
      `<text x="${x1}" y="${ty}" font-family="sans-serif" font-size="${font}" fill="${colour}" stroke="#000" stroke-width="${font / 12}" paint-order="stroke">${escapeXml(text)}</text>`,
    );
  });
  return Buffer.from(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${parts.join("")}</svg>`,
  );
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
