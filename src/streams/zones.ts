/** Which zone a face is in: the centre of its box, against polygons in 0–1 frame coordinates. */
import type { Point } from "../store/zones.ts";

export interface ActiveZone {
  name: string;
  polygon: readonly Point[];
}

/** Even-odd rule: whether (x, y) is inside the polygon. */
export function insidePolygon(x: number, y: number, polygon: readonly Point[]): boolean {
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i];
    const [xj, yj] = polygon[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** The first zone holding the centre of `box` (frame pixels), or undefined. */
export function zoneOf(
  box: readonly [number, number, number, number] | readonly number[],
  width: number,
  height: number,
  zones: readonly ActiveZone[],
): string | undefined {
  const x = (box[0] + box[2]) / 2 / width;
  const y = (box[1] + box[3]) / 2 / height;
  return zones.find((z) => insidePolygon(x, y, z.polygon))?.name;
}
