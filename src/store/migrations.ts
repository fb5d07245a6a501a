/**
 * Schema migrations: an ordered list, applied at open in one transaction, recorded in `schema_migrations`.
 * Never edit or reorder a migration that has shipped; append a new one. SQL must run on SQLite and PostgreSQL
 * (TEXT, INTEGER/BIGINT, timestamps as BIGINT epoch ms; one statement per string).
 */
import type { Database } from "./db.ts";

export interface Migration {
  /** 1, 2, 3, … in order, no gaps. */
  id: number;
  name: string;
  /** Statements, run in order. */
  up: readonly string[];
}

export const migrations: readonly Migration[] = [
  {
    id: 1,
    name: "api_keys",
    up: [
      `CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT NULL,
        revoked_at BIGINT NULL
      )`,
      "CREATE INDEX api_keys_prefix_idx ON api_keys (prefix)",
    ],
  },
];

/** Any PostgreSQL advisory-lock key unique to maskwatch's migrator. */
const PG_MIGRATION_LOCK = 7_244_719_001;

export class MigrationError extends Error {
  override name = "MigrationError";
}

/**
 * Apply the pending migrations of `list` (default: all of maskwatch's) in one transaction; returns the ids
 * applied (empty when the schema is current). Concurrent starts are safe: SQLite takes the write lock
 * (BEGIN IMMEDIATE), PostgreSQL an advisory transaction lock.
 */
export async function migrate(db: Database, list: readonly Migration[] = migrations): Promise<number[]> {
  list.forEach((m, i) => {
    if (m.id !== i + 1)
      throw new MigrationError(`migration list out of order: position ${i + 1} has id ${m.id}`);
  });
  return db.transaction(async (tx) => {
    if (tx.kind === "postgres") await tx.query("SELECT pg_advisory_xact_lock(?)", [PG_MIGRATION_LOCK]);
    await tx.run(
      `CREATE TABLE IF NOT EXISTS schema_migrations (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at BIGINT NOT NULL
      )`,
    );
    const rows = await tx.query<{ id: number }>("SELECT id FROM schema_migrations ORDER BY id");
    const done = new Set(rows.map((r) => Number(r.id)));
    const newest = Math.max(0, ...done);
    if (newest > list.length) {
      throw new MigrationError(
        `the database schema is at migration ${newest}, newer than this maskwatch knows (${list.length}); upgrade maskwatch`,
      );
    }
    const applied: number[] = [];
    for (const m of list) {
      if (done.has(m.id)) continue;
      for (const sql of m.up) {
        try {
          await tx.run(sql);
        } catch (e) {
          throw new MigrationError(
            `migration ${m.id} (${m.name}) failed: ${e instanceof Error ? e.message : String(e)}`,
          );
        }
      }
      await tx.run("INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)", [
        m.id,
        m.name,
        Date.now(),
      ]);
      applied.push(m.id);
    }
    return applied;
  });
}

/** The ids recorded in schema_migrations, ascending. */
export async function appliedMigrations(db: Database): Promise<number[]> {
  const rows = await db.query<{ id: number }>("SELECT id FROM schema_migrations ORDER BY id");
  return rows.map((r) => Number(r.id));
}
