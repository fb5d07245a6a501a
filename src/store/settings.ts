/**
 * Runtime settings: a key → JSON value table, the `settings` repository.
 */
import type { Database } from "./db.ts";
import { StoreError } from "./sources.ts";

export const SETTING_KEY_PATTERN = /^[a-z0-9][a-z0-9._:-]{0,127}$/i;
const MAX_VALUE_LENGTH = 1024 * 1024;

export interface SettingRecord {
  key: string;
  value: unknown;
  /** Epoch milliseconds. */
  updatedAt: number;
}

interface Row {
  key: string;
  value: string;
  updated_at: number;
}

function checkKey(key: unknown): string {
  if (typeof key !== "string" || !SETTING_KEY_PATTERN.test(key)) {
    throw new StoreError(
      "invalid_key",
      "a setting key is 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
    );
  }
  return key;
}

function parse(r: Row): unknown {
  try {
    return JSON.parse(r.value) as unknown;
  } catch {
    return undefined;
  }
}

/** The value of `key` (parsed JSON, not validated against T), or undefined when unset. */
export async function getSetting<T = unknown>(db: Database, key: string): Promise<T | undefined> {
  const rows = await db.query<Row>("SELECT key, value, updated_at FROM settings WHERE key = ?", [
    checkKey(key),
  ]);
  return rows[0] ? (parse(rows[0]) as T | undefined) : undefined;
}

/**
 * Set `key` to `value` (stored as JSON; insert or replace in one statement). Throws `invalid_key`, and
 * `invalid_value` for what JSON cannot hold (undefined, functions, cycles, BigInt) or over 1 MiB of JSON.
 */
export async function setSetting(db: Database, key: string, value: unknown, now: number = Date.now()) {
  const k = checkKey(key);
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (e) {
    throw new StoreError(
      "invalid_value",
      `setting ${k} is not JSON: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (json === undefined) throw new StoreError("invalid_value", `setting ${k} needs a JSON value`);
  if (json.length > MAX_VALUE_LENGTH) {
    throw new StoreError("invalid_value", `setting ${k} is over ${MAX_VALUE_LENGTH} bytes of JSON`);
  }
  await db.run(
    `INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
    [k, json, now],
  );
}

/** All settings, by key. */
export async function listSettings(db: Database): Promise<SettingRecord[]> {
  const rows = await db.query<Row>("SELECT key, value, updated_at FROM settings ORDER BY key");
  return rows.map((r) => ({ key: r.key, value: parse(r), updatedAt: Number(r.updated_at) }));
}

/** Remove `key`; whether it was set. */
export async function deleteSetting(db: Database, key: string): Promise<boolean> {
  const { changes } = await db.run("DELETE FROM settings WHERE key = ?", [checkKey(key)]);
  return changes > 0;
}

/**
 * Moves `key` forward to `value` (a string that sorts later, such as an ISO date) unless it is already
 * there or beyond; true only for the one caller that moved it, whatever the number of replicas.
 */
export async function claimSetting(db: Database, key: string, value: string, now: number = Date.now()) {
  const { changes } = await db.run(
    `INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
     WHERE settings.value < excluded.value`,
    [checkKey(key), JSON.stringify(value), now],
  );
  return changes === 1;
}
