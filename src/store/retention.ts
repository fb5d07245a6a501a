/**
 * Retention: events older than N days go, with their snapshot files. Rows first (one
 * transaction), files after, so a crash in between leaves only orphan files, never rows
 * pointing at missing images.
 */
import { rm } from "node:fs/promises";
import { isAbsolute, join, normalize } from "node:path";
import type { Database } from "./db.ts";
import { deleteEvents, type EventFilter } from "./events.ts";

const DAY_MS = 86_400_000;

export interface PruneResult {
  /** Events deleted. */
  deleted: number;
  /** Snapshot files removed. */
  files: number;
  /** Everything before this (epoch ms) was deleted. */
  before: number;
}

export async function pruneEvents(
  db: Database,
  dataDir: string,
  days: number,
  now = Date.now(),
): Promise<PruneResult> {
  if (!(days > 0)) throw new RangeError("retention days must be more than 0");
  const before = now - days * DAY_MS;
  const { deleted, files } = await eraseEvents(db, dataDir, { to: before });
  return { deleted, files, before };
}

/** Deletes the events `filter` selects (see deleteEvents), then their snapshot files. */
export async function eraseEvents(
  db: Database,
  dataDir: string,
  filter: EventFilter & { id?: number },
): Promise<{ deleted: number; files: number }> {
  const { deleted, snapshots } = await deleteEvents(db, filter);
  let files = 0;
  for (const rel of snapshots) {
    // Snapshot paths are written by the monitor under dataDir; refuse anything else.
    const path = normalize(rel);
    if (isAbsolute(path) || path.startsWith("..")) continue;
    try {
      await rm(join(dataDir, path));
      files++;
    } catch {
      // already gone
    }
  }
  return { deleted, files };
}
