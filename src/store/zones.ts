/**
 * Zones: named polygons over a source's picture, in 0–1 frame coordinates (so they hold whatever
 * width the frames are scaled to). With any active zone, only faces inside one count.
 */
import { randomBytes } from "node:crypto";
import { type Database, isUniqueViolation } from "./db.ts";
import { StoreError } from "./sources.ts";

export type Point = [number, number];

export interface ZoneRecord {
  id: string;
  sourceId: string;
  name: string;
  /** 3 to 64 points, x and y in 0..1 of the frame's width and height. */
  polygon: Point[];
  active: boolean;
  createdAt: number;
  updatedAt: number;
}

export interface ZoneInput {
  name?: string;
  polygon?: Point[];
  active?: boolean;
}

const MAX_POINTS = 64;

function check(z: ZoneInput, partial: boolean): void {
  if (!partial || z.name !== undefined) {
    if (typeof z.name !== "string" || !z.name.trim() || z.name.length > 100 || /[\r\n]/.test(z.name))
      throw new StoreError("invalid_name", "a zone's name is 1 to 100 characters on one line");
  }
  if (!partial || z.polygon !== undefined) {
    const p = z.polygon;
    if (
      !Array.isArray(p) ||
      p.length < 3 ||
      p.length > MAX_POINTS ||
      !p.every(
        (pt) =>
          Array.isArray(pt) &&
          pt.length === 2 &&
          pt.every((v) => typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 1),
      )
    )
      throw new StoreError(
        "invalid_value",
        `polygon is 3 to ${MAX_POINTS} [x, y] points with x and y from 0 to 1 (fractions of the frame)`,
      );
    if (Math.abs(area(p)) < 1e-4) throw new StoreError("invalid_value", "the polygon encloses no area");
  }
}

/** Signed area (shoelace). */
function area(p: Point[]): number {
  let a = 0;
  for (let i = 0; i < p.length; i++) {
    const [x1, y1] = p[i];
    const [x2, y2] = p[(i + 1) % p.length];
    a += x1 * y2 - x2 * y1;
  }
  return a / 2;
}

interface Row {
  id: string;
  source_id: string;
  name: string;
  polygon: string;
  active: number | boolean;
  created_at: number;
  updated_at: number;
}

function toZone(r: Row): ZoneRecord {
  return {
    id: r.id,
    sourceId: r.source_id,
    name: r.name,
    polygon: JSON.parse(r.polygon) as Point[],
    active: Boolean(Number(r.active)),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

const duplicate = (name: string) =>
  new StoreError("conflict", `this source already has a zone named "${name}"`);

export async function createZone(
  db: Database,
  sourceId: string,
  z: ZoneInput,
  now = Date.now(),
): Promise<ZoneRecord> {
  check(z, false);
  const zone: ZoneRecord = {
    id: `zone_${randomBytes(5).toString("hex")}`,
    sourceId,
    name: (z.name as string).trim(),
    polygon: (z.polygon as Point[]).map(([x, y]) => [x, y]),
    active: z.active ?? true,
    createdAt: now,
    updatedAt: now,
  };
  try {
    await db.run(
      "INSERT INTO zones (id, source_id, name, polygon, active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      [zone.id, sourceId, zone.name, JSON.stringify(zone.polygon), zone.active ? 1 : 0, now, now],
    );
  } catch (err) {
    if (isUniqueViolation(err)) throw duplicate(zone.name);
    throw err;
  }
  return zone;
}

export async function listZones(db: Database, sourceId: string): Promise<ZoneRecord[]> {
  const rows = await db.query<Row>("SELECT * FROM zones WHERE source_id = ? ORDER BY created_at, id", [
    sourceId,
  ]);
  return rows.map(toZone);
}

export async function getZone(db: Database, sourceId: string, id: string): Promise<ZoneRecord> {
  const rows = await db.query<Row>("SELECT * FROM zones WHERE id = ? AND source_id = ?", [id, sourceId]);
  if (!rows[0]) throw new StoreError("not_found", `source ${sourceId} has no zone ${id}`);
  return toZone(rows[0]);
}

export async function updateZone(
  db: Database,
  sourceId: string,
  id: string,
  patch: ZoneInput,
  now = Date.now(),
): Promise<ZoneRecord> {
  check(patch, true);
  const z = await getZone(db, sourceId, id);
  const next: ZoneRecord = {
    ...z,
    name: patch.name === undefined ? z.name : patch.name.trim(),
    polygon: patch.polygon ?? z.polygon,
    active: patch.active ?? z.active,
    updatedAt: now,
  };
  try {
    await db.run("UPDATE zones SET name = ?, polygon = ?, active = ?, updated_at = ? WHERE id = ?", [
      next.name,
      JSON.stringify(next.polygon),
      next.active ? 1 : 0,
      now,
      id,
    ]);
  } catch (err) {
    if (isUniqueViolation(err)) throw duplicate(next.name);
    throw err;
  }
  return next;
}

export async function deleteZone(db: Database, sourceId: string, id: string): Promise<void> {
  const r = await db.run("DELETE FROM zones WHERE id = ? AND source_id = ?", [id, sourceId]);
  if (r.changes === 0) throw new StoreError("not_found", `source ${sourceId} has no zone ${id}`);
}
