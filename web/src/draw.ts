/**
 * Boxes and captions on a canvas, the same on the Upload and Live pages: each caption sits on a
 * filled band in its box's colour, sized so that it reads at the size the canvas is shown at, kept
 * inside the frame and moved when another caption is already there.
 */
import type { Box } from "./api.ts";

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Annotation {
  box: Box;
  color: string;
  text: string;
  /** Landmark points, drawn as dots. */
  points?: [number, number][];
}

/** Amber needs dark text; the other label colours take white. */
const DARK_TEXT_ON = new Set(["#f59e0b", "#9ca3af"]);

export function overlaps(a: Rect, b: Rect): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/**
 * Draws `items` on `ctx` (the canvas is `width`×`height` image pixels, shown at `scale` CSS pixels
 * per image pixel) and returns where each caption went, in image pixels.
 */
export function drawAnnotations(
  ctx: CanvasRenderingContext2D,
  width: number,
  height: number,
  items: readonly Annotation[],
  scale: number,
): Rect[] {
  const s = scale > 0 && Number.isFinite(scale) ? scale : 1;
  const side = Math.max(width, height);
  const line = Math.max(2 / s, side / 400);
  // At least 13 CSS pixels on screen, never more than a tenth of the picture.
  const font = Math.min(Math.max(13 / s, side / 55), side / 10);
  const pad = Math.max(2, Math.round(font * 0.3));
  const height1 = Math.ceil(font + pad * 1.4);
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "middle";

  for (const item of items) {
    const [x1, y1, x2, y2] = item.box;
    ctx.strokeStyle = item.color;
    ctx.lineWidth = line;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = item.color;
    for (const [x, y] of item.points ?? []) {
      ctx.beginPath();
      ctx.arc(x, y, line * 1.2, 0, Math.PI * 2);
      ctx.fill();
    }
  }

  const placed: Rect[] = [];
  const order = items.map((item, i) => ({ item, i })).sort((a, b) => a.item.box[1] - b.item.box[1]);
  const rects: Rect[] = new Array(items.length);
  for (const { item, i } of order) {
    const text = fit(ctx, item.text, width - pad * 2);
    const w = Math.min(width, Math.ceil(ctx.measureText(text).width + pad * 2));
    const h = Math.min(height, height1);
    const [x1, y1, x2] = item.box;
    const clampX = (x: number) => Math.max(0, Math.min(x, width - w));
    const clampY = (y: number) => Math.max(0, Math.min(y, height - h));
    const candidates: Rect[] = [
      { x: clampX(x1 - line / 2), y: clampY(y1 - h), w, h }, // above the box
      { x: clampX(x1 - line / 2), y: clampY(item.box[3]), w, h }, // below it
      { x: clampX(x1 + line / 2), y: clampY(y1 + line / 2), w, h }, // inside, at the top
      { x: clampX(x2 - w), y: clampY(y1 - h), w, h }, // above, right-aligned
    ];
    let rect = candidates.find((c) => !placed.some((p) => overlaps(c, p)));
    if (!rect) {
      // Slide the first choice down (then up) a band at a time until it is free.
      const first = candidates[0];
      for (let step = 1; !rect && step * h <= height; step++) {
        for (const y of [first.y + step * h, first.y - step * h]) {
          if (y < 0 || y > height - h) continue;
          const c = { ...first, y };
          if (!placed.some((p) => overlaps(c, p))) {
            rect = c;
            break;
          }
        }
      }
      rect ??= first;
    }
    placed.push(rect);
    rects[i] = rect;
    ctx.fillStyle = item.color;
    ctx.fillRect(rect.x, rect.y, rect.w, rect.h);
    ctx.fillStyle = DARK_TEXT_ON.has(item.color) ? "#1f1300" : "#ffffff";
    ctx.fillText(text, rect.x + pad, rect.y + rect.h / 2);
  }
  return rects;
}

/** `text`, cut with an ellipsis to fit `max` pixels. */
function fit(ctx: CanvasRenderingContext2D, text: string, max: number): string {
  if (ctx.measureText(text).width <= max) return text;
  let cut = text;
  while (cut.length > 1 && ctx.measureText(`${cut}…`).width > max) cut = cut.slice(0, -1);
  return `${cut}…`;
}

/** CSS pixels per canvas pixel as the canvas is shown now (object-fit: contain). */
export function displayScale(canvas: HTMLCanvasElement): number {
  if (!canvas.width || !canvas.height || !canvas.clientWidth || !canvas.clientHeight) return 1;
  return Math.min(canvas.clientWidth / canvas.width, canvas.clientHeight / canvas.height);
}
