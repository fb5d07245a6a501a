/**
 * Schema migrations: an ordered list, applied at open in one transaction, recorded in `schema_migrations`.
 * Never edit or reorder a migration that has shipped; append a new one. SQL must run on SQLite and PostgreSQL
 * (TEXT, INTEGER/BIGINT, timestamps as BIGINT epoch ms; one statement per string). Where the engines cannot share
 * a statement (auto-increment keys), a statement is `{ sqlite, postgres }` and the one for the engine runs.
 */
import type { Database, DatabaseKind } from "./db.ts";

/** One SQL statement: the same text for both engines, or one text per engine. */
export type MigrationStatement = string | Readonly<Record<DatabaseKind, string>>;

export interface Migration {
  /** 1, 2, 3, … in order, no gaps. */
  id: number;
  name: string;
  /** Statements, run in order. */
  up: readonly MigrationStatement[];
}

/** The text of `statement` for the engine `kind`. */
export function statementFor(statement: MigrationStatement, kind: DatabaseKind): string {
  return typeof statement === "string" ? statement : statement[kind];
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
  {
    id: 2,
    name: "monitoring",
    up: [
      `CREATE TABLE sources (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        url TEXT NULL,
        options TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      // No foreign key to sources: events outlive a deleted source.
      {
        sqlite: `CREATE TABLE events (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          at BIGINT NOT NULL,
          source_id TEXT NOT NULL,
          track_id INTEGER NOT NULL,
          kind TEXT NOT NULL,
          label TEXT NOT NULL,
          confidence DOUBLE PRECISION NOT NULL,
          box TEXT NOT NULL,
          snapshot TEXT NULL
        )`,
        postgres: `CREATE TABLE events (
          id BIGSERIAL PRIMARY KEY,
          at BIGINT NOT NULL,
          source_id TEXT NOT NULL,
          track_id INTEGER NOT NULL,
          kind TEXT NOT NULL,
          label TEXT NOT NULL,
          confidence DOUBLE PRECISION NOT NULL,
          box TEXT NOT NULL,
          snapshot TEXT NULL
        )`,
      },
      "CREATE INDEX events_at_idx ON events (at)",
      "CREATE INDEX events_source_at_idx ON events (source_id, at)",
      "CREATE INDEX events_label_at_idx ON events (label, at)",
      "CREATE INDEX events_kind_at_idx ON events (kind, at)",
      `CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_login_at BIGINT NULL
      )`,
      `CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
    ],
  },
  {
    id: 3,
    name: "sessions",
    up: [
      // Console sessions: only the token's sha256 is stored; deleting the user ends them.
      `CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
      )`,
      "CREATE INDEX sessions_user_idx ON sessions (user_id)",
      "CREATE INDEX sessions_expires_idx ON sessions (expires_at)",
    ],
  },
  {
    id: 4,
    name: "jobs",
    up: [
      // Batch jobs. The uploaded zip or video is kept in the row (replicas share the database, not disks)
      // until the job ends; results are one row per image or frame.
      { sqlite: jobsTable("BLOB"), postgres: jobsTable("BYTEA") },
      "CREATE INDEX jobs_created_idx ON jobs (created_at, id)",
      "CREATE INDEX jobs_state_idx ON jobs (state, created_at)",
      `CREATE TABLE job_results (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
      )`,
    ],
  },
  {
    id: 5,
    name: "snapshots",
    up: [
      // Violation snapshots live with their event, so every replica can serve them (no shared disk).
      {
        sqlite: `CREATE TABLE snapshots (
          event_id INTEGER PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
          jpeg BLOB NOT NULL
        )`,
        postgres: `CREATE TABLE snapshots (
          event_id BIGINT PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
          jpeg BYTEA NOT NULL
        )`,
      },
    ],
  },
  {
    id: 6,
    name: "source_owner",
    up: [
      // Who added a browser source (`user:<id>` or an API key's id): only they may send its frames.
      "ALTER TABLE sources ADD COLUMN owner TEXT",
      "CREATE INDEX sources_owner ON sources (owner, kind)",
    ],
  },
  {
    id: 7,
    name: "event_review",
    up: [
      // A violation can be acknowledged (when, by whom), and keeps the whole frame beside the face.
      "ALTER TABLE events ADD COLUMN acknowledged_at BIGINT",
      "ALTER TABLE events ADD COLUMN acknowledged_by TEXT",
      {
        sqlite: "ALTER TABLE snapshots ADD COLUMN frame BLOB",
        postgres: "ALTER TABLE snapshots ADD COLUMN frame BYTEA",
      },
    ],
  },
  {
    id: 8,
    name: "alerts",
    up: [
      // Webhooks: where alerts go, which events, signed with the secret (kept: it signs every delivery).
      `CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        source_id TEXT NULL,
        secret TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      // One row per alert per webhook: its payload, state and last answer; `claimed_until` is the lease
      // of the replica sending it, so several replicas never send the same delivery at once.
      {
        sqlite: deliveriesTable("INTEGER PRIMARY KEY AUTOINCREMENT"),
        postgres: deliveriesTable("BIGSERIAL PRIMARY KEY"),
      },
      "CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (state, next_attempt_at)",
      "CREATE INDEX webhook_deliveries_hook_idx ON webhook_deliveries (webhook_id, id)",
      // "Compliance under P % over the last N minutes": `firing` makes it alert once per dip.
      `CREATE TABLE alert_rules (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        source_id TEXT NULL,
        below_percent DOUBLE PRECISION NOT NULL,
        window_minutes INTEGER NOT NULL,
        min_faces INTEGER NOT NULL,
        enabled INTEGER NOT NULL,
        firing INTEGER NOT NULL,
        last_fired_at BIGINT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      // What admins changed: who, what, when.
      {
        sqlite: auditTable("INTEGER PRIMARY KEY AUTOINCREMENT"),
        postgres: auditTable("BIGSERIAL PRIMARY KEY"),
      },
      "CREATE INDEX audit_log_at_idx ON audit_log (at)",
    ],
  },
  {
    id: 9,
    name: "zones",
    up: [
      // Areas of a source's picture (polygons in 0–1 frame coordinates): with any active, only faces
      // inside one count, and each event records the zone it happened in.
      `CREATE TABLE zones (
        id TEXT PRIMARY KEY,
        source_id TEXT NOT NULL,
        name TEXT NOT NULL,
        polygon TEXT NOT NULL,
        active INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      "CREATE UNIQUE INDEX zones_source_name_idx ON zones (source_id, name)",
      "ALTER TABLE events ADD COLUMN zone TEXT",
      "CREATE INDEX events_zone_at_idx ON events (zone, at)",
      // A compliance rule may watch one zone (by name) instead of a whole source.
      "ALTER TABLE alert_rules ADD COLUMN zone TEXT",
    ],
  },
];

function deliveriesTable(key: string): string {
  return `CREATE TABLE webhook_deliveries (
          id ${key},
          webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
          event TEXT NOT NULL,
          payload TEXT NOT NULL,
          state TEXT NOT NULL,
          attempts INTEGER NOT NULL,
          response_status INTEGER NULL,
          error TEXT NULL,
          created_at BIGINT NOT NULL,
          next_attempt_at BIGINT NULL,
          last_attempt_at BIGINT NULL,
          delivered_at BIGINT NULL,
          claimed_until BIGINT NULL
        )`;
}

function auditTable(key: string): string {
  return `CREATE TABLE audit_log (
          id ${key},
          at BIGINT NOT NULL,
          actor TEXT NOT NULL,
          action TEXT NOT NULL,
          target TEXT NULL,
          detail TEXT NULL
        )`;
}

/** Migration 4's jobs table; the engines differ only in the type of the input bytes. */
function jobsTable(bytes: "BLOB" | "BYTEA"): string {
  return `CREATE TABLE jobs (
          id TEXT PRIMARY KEY,
          kind TEXT NOT NULL,
          state TEXT NOT NULL,
          options TEXT NOT NULL,
          input ${bytes} NULL,
          input_name TEXT NULL,
          input_size BIGINT NOT NULL,
          progress_done INTEGER NOT NULL,
          progress_total INTEGER NULL,
          faces INTEGER NOT NULL,
          errors INTEGER NOT NULL,
          attempts INTEGER NOT NULL,
          error TEXT NULL,
          created_by TEXT NULL,
          created_at BIGINT NOT NULL,
          started_at BIGINT NULL,
          finished_at BIGINT NULL
        )`;
}

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
      for (const statement of m.up) {
        try {
          await tx.run(statementFor(statement, tx.kind));
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
