import sharp from "sharp";
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
  const stroke = Math.max(2, Math.round(Math.min(image.width, image.height) / 250));
  const font = Math.max(12, stroke * 6);
  const parts: string[] = [];
  faces.forEach((f, i) => {
    const label = (f as Face & { mask?: { label: string } }).mask?.label ?? f.label;
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
    const text = options.caption ? options.caption(f, i) : `${label ? `${label} ` : ""}${f.score.toFixed(2)}`;
    const ty = y1 - stroke > font ? y1 - stroke : y2 + font + stroke;
    parts.push(
      `<text x="${x1}" y="${ty}" font-family="sans-serif" font-size="${font}" fill="${colour}" stroke="#000" stroke-width="${font / 12}" paint-order="stroke">${escapeXml(text)}</text>`,
    );
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${image.width}" height="${image.height}">${parts.join("")}</svg>`;
  const img = sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length), {
    raw: { width: image.width, height: image.height, channels: 3 },
  }).composite([{ input: Buffer.from(svg), top: 0, left: 0 }]);
  return options.format === "png"
    ? img.png().toBuffer()
    : img.jpeg({ quality: options.quality ?? 85 }).toBuffer();
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
