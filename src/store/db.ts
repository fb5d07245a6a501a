/**
 * The one database abstraction of maskwatch: the same async API over SQLite (better-sqlite3, the embedded
 * default) and PostgreSQL (pg, when DATABASE_URL says so).
 *
 * SQL is written once, portably, with `?` placeholders; for PostgreSQL they become `$1, $2, …`.
 * Portable types only: TEXT, INTEGER/BIGINT (timestamps are BIGINT epoch milliseconds). BIGINT columns come
 * back as JS numbers from both engines. Unquoted identifiers: use snake_case column names and aliases
 * (PostgreSQL folds unquoted names to lower case).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { existsSync, mkdirSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import pg from "pg";
import { migrate } from "./migrations.ts";

export type DatabaseKind = "sqlite" | "postgres";

/** A bound parameter. Booleans are stored as 1/0 on both engines. */
export type Param = string | number | bigint | boolean | null | Uint8Array;

export interface RunResult {
  /** Rows inserted, updated or deleted. */
  changes: number;
}

export interface Database {
  readonly kind: DatabaseKind;
  /** Rows of a statement (SELECT, or anything with RETURNING). */
  query<T = Record<string, unknown>>(sql: string, params?: readonly Param[]): Promise<T[]>;
  /** A statement run for its effect. */
  run(sql: string, params?: readonly Param[]): Promise<RunResult>;
  /**
   * Run `fn` in one transaction: committed when it resolves, rolled back when it throws. Use the `tx`
   * handle it is given for the statements of the transaction. Nested calls use savepoints.
   */
  transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T>;
  /**
   * Write a consistent copy of the database to `file` while it stays in use (SQLite only: an online backup,
   * written to `file`.tmp and renamed into place, creating the parent folder). PostgreSQL rejects with
   * BackupUnsupportedError (use pg_dump). Transaction handles reject on both engines: call it on the database
   * (a SQLite backup waits for open write transactions to end, so one started inside a transaction would never
   * finish).
   */
  backup(file: string): Promise<void>;
  /** Close the connection(s); the handle is unusable afterwards. Idempotent. */
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A postgres:// (or postgresql://) URL, normally DATABASE_URL. Empty/absent: SQLite. */
  url?: string;
  /** Where the SQLite file (maskwatch.db) lives; default `./data` (MASKWATCH_DATA_DIR). */
  dataDir?: string;
  /** Apply pending migrations at open (default true). */
  migrate?: boolean;
  /** PostgreSQL pool size (default 10). */
  poolSize?: number;
  /** PostgreSQL connect timeout in ms (default 10000). */
  connectTimeoutMs?: number;
}

export const SQLITE_FILE = "maskwatch.db";
/** How long a SQLite backup keeps retrying while another process holds the write lock. */
const BACKUP_BUSY_MS = 5000;
/** Pages a backup step copies (better-sqlite3's default); the connection serves other work between steps. */
const BACKUP_PAGES_PER_STEP = 100;
export const DEFAULT_DATA_DIR = "./data";

/** Raised when the database cannot be opened (bad DATABASE_URL, unreachable server, unwritable data dir). */
export class DatabaseOpenError extends Error {
  override name = "DatabaseOpenError";
}

/** Raised by backup() on PostgreSQL, whose backups are pg_dump's job. */
export class BackupUnsupportedError extends Error {
  override name = "BackupUnsupportedError";
  constructor(file?: string) {
    const dump = file ? (/\.sql$/i.test(file) ? file : `${file.replace(/\.db$/i, "")}.sql`) : "file.sql";
    super(
      `backup() copies SQLite databases only; back up PostgreSQL with: pg_dump "$DATABASE_URL" > ${dump}`,
    );
  }
}

/** Raised by backup() on a transaction handle. */
const backupInTransaction = () =>
  new Error("backup() is not available inside a transaction; call it on the database, outside transactions");

/** Open the database chosen by `url` (PostgreSQL) or else the SQLite file under `dataDir`, and migrate it. */
export async function openDatabase(opts: OpenDatabaseOptions = {}): Promise<Database> {
  const url = opts.url?.trim();
  const db = url ? await openPostgres(url, opts) : openSqlite(opts.dataDir ?? DEFAULT_DATA_DIR);
  if (opts.migrate !== false) {
    try {
      await migrate(db);
    } catch (e) {
      await db.close().catch(() => {});
      throw e;
    }
  }
  return db;
}

/** Whether `err` is a unique-constraint violation, on either engine. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "23505" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY";
}

/** `?` placeholders → `$1, $2, …`, leaving quoted strings, identifiers and comments alone. */
export function toPostgresPlaceholders(sql: string): string {
  let out = "";
  let n = 0;
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i]!;
    if (c === "'" || c === '"') {
      const end = sql.indexOf(c, i + 1);
      const stop = end === -1 ? sql.length : end + 1;
      out += sql.slice(i, stop);
      i = stop - 1;
    } else if (c === "-" && sql[i + 1] === "-") {
      const end = sql.indexOf("\n", i);
      const stop = end === -1 ? sql.length : end;
      out += sql.slice(i, stop);
      i = stop - 1;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      const stop = end === -1 ? sql.length : end + 2;
      out += sql.slice(i, stop);
      i = stop - 1;
    } else if (c === "?") {
      out += `$${++n}`;
    } else {
      out += c;
    }
  }
  return out;
}

/** The URL with its password masked, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable URL)";
  }
}

function normaliseParams(params: readonly Param[]): unknown[] {
  return params.map((p) => (typeof p === "boolean" ? (p ? 1 : 0) : p));
}

// ---------------------------------------------------------------- SQLite

function openSqlite(dataDir: string): Database {
  const dir = resolve(dataDir);
  const file = join(dir, SQLITE_FILE);
  let raw: BetterSqlite3.Database;
  try {
    mkdirSync(dir, { recursive: true });
    raw = new BetterSqlite3(file);
  } catch (e) {
    throw new DatabaseOpenError(
      `cannot open the SQLite database ${file} (MASKWATCH_DATA_DIR=${dataDir}): ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  raw.pragma("journal_mode = WAL");
  raw.pragma("synchronous = FULL"); // an acknowledged commit survives a kill or power loss
  raw.pragma("foreign_keys = ON");
  raw.pragma("busy_timeout = 5000");
  return new SqliteDatabase(raw);
}

/** Serialises work on the single SQLite connection so an async transaction is never interleaved. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async lock<T>(fn: () => Promise<T> | T): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => {
      release = r;
    });
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

class SqliteDatabase implements Database {
  readonly kind = "sqlite" as const;
  private readonly statements = new Map<string, BetterSqlite3.Statement>();
  private readonly mutex = new Mutex();
  /** Set while a transaction's callback runs: statements from it (on any handle) bypass the mutex. */
  private readonly inTx = new AsyncLocalStorage<SqliteTx>();
  /** Backups in progress; close() waits for them. */
  private readonly backups = new Set<Promise<unknown>>();
  private closed = false;

  constructor(private readonly raw: BetterSqlite3.Database) {}

  private stmt(sql: string): BetterSqlite3.Statement {
    if (this.closed) throw new Error("the database is closed");
    let s = this.statements.get(sql);
    if (!s) {
      s = this.raw.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  /** Direct execution, no locking (callers hold the mutex or are inside the transaction). */
  queryNow<T>(sql: string, params: readonly Param[]): T[] {
    const s = this.stmt(sql);
    const p = normaliseParams(params);
    if (s.reader) return s.all(...p) as T[];
    s.run(...p);
    return [];
  }

  runNow(sql: string, params: readonly Param[]): RunResult {
    const s = this.stmt(sql);
    const p = normaliseParams(params);
    if (s.reader) {
      s.all(...p);
      return { changes: 0 };
    }
    return { changes: s.run(...p).changes };
  }

  private guarded<T>(fn: () => T): Promise<T> {
    if (this.inTx.getStore()) return Promise.resolve().then(fn);
    return this.mutex.lock(fn);
  }

  query<T = Record<string, unknown>>(sql: string, params: readonly Param[] = []): Promise<T[]> {
    return this.guarded(() => this.queryNow<T>(sql, params));
  }

  run(sql: string, params: readonly Param[] = []): Promise<RunResult> {
    return this.guarded(() => this.runNow(sql, params));
  }

  transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    const current = this.inTx.getStore();
    if (current) return current.transaction(fn);
    return this.mutex.lock(async () => {
      const tx = new SqliteTx(this, 0);
      this.raw.exec("BEGIN IMMEDIATE");
      try {
        const result = await this.inTx.run(tx, () => fn(tx));
        this.raw.exec("COMMIT");
        return result;
      } catch (e) {
        if (this.raw.inTransaction) this.raw.exec("ROLLBACK");
        throw e;
      } finally {
        tx.done = true;
      }
    });
  }

  /** Used by SqliteTx for savepoints. */
  exec(sql: string): void {
    this.raw.exec(sql);
  }

  runInTx<T>(tx: SqliteTx, fn: () => Promise<T>): Promise<T> {
    return this.inTx.run(tx, fn);
  }

  /**
   * better-sqlite3's online backup on this connection. The database keeps serving statements meanwhile: writes
   * committed on this connection are carried into the copy, and a step that meets an open write transaction
   * is retried, so the copy holds committed data only. The mutex is held until the first step has run (no
   * transaction of ours is open then): better-sqlite3 treats a first step that meets a write transaction as
   * "nothing to copy" and quietly deletes the new file. Another process holding the write lock has the same
   * effect, so an attempt that leaves no file is retried for up to BACKUP_BUSY_MS.
   */
  async backup(file: string): Promise<void> {
    if (this.closed) throw new Error("the database is closed");
    if (this.inTx.getStore()) throw backupInTransaction();
    const target = resolve(file);
    if (target === resolve(this.raw.name)) {
      throw new Error(`cannot back up the database onto itself (${target})`);
    }
    const tmp = `${target}.tmp`;
    const work = (async () => {
      await mkdir(dirname(target), { recursive: true });
      const deadline = Date.now() + BACKUP_BUSY_MS;
      try {
        for (;;) {
          await rm(tmp, { force: true });
          await this.backupOnce(tmp);
          if (existsSync(tmp)) break;
          if (Date.now() > deadline) {
            throw new Error(`backup to ${target} failed: the database stayed locked by another writer`);
          }
          await new Promise((r) => setTimeout(r, 50));
        }
        await rename(tmp, target);
      } catch (e) {
        await rm(tmp, { force: true }).catch(() => {});
        throw e;
      }
    })();
    this.backups.add(work);
    try {
      await work;
    } finally {
      this.backups.delete(work);
    }
  }

  private async backupOnce(tmp: string): Promise<void> {
    let started!: () => void;
    const firstStep = new Promise<void>((r) => {
      started = r;
    });
    let finished!: Promise<unknown>;
    await this.mutex.lock(async () => {
      if (this.closed) throw new Error("the database is closed");
      finished = this.raw.backup(tmp, {
        progress: () => {
          started();
          return BACKUP_PAGES_PER_STEP;
        },
      });
      finished.then(started, started);
      await firstStep;
    });
    await finished;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.backups]);
    if (this.closed) return;
    await this.mutex.lock(() => {
      this.closed = true;
      this.statements.clear();
      this.raw.close();
    });
  }
}

class SqliteTx implements Database {
  readonly kind = "sqlite" as const;
  done = false;
  constructor(
    private readonly db: SqliteDatabase,
    private readonly depth: number,
  ) {}

  private check(): void {
    if (this.done) throw new Error("this transaction has already finished");
  }

  async query<T = Record<string, unknown>>(sql: string, params: readonly Param[] = []): Promise<T[]> {
    this.check();
    return this.db.queryNow<T>(sql, params);
  }

  async run(sql: string, params: readonly Param[] = []): Promise<RunResult> {
    this.check();
    return this.db.runNow(sql, params);
  }

  async transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    this.check();
    const name = `sp_${this.depth + 1}`;
    const inner = new SqliteTx(this.db, this.depth + 1);
    this.db.exec(`SAVEPOINT ${name}`);
    try {
      const result = await this.db.runInTx(inner, () => fn(inner));
      this.db.exec(`RELEASE ${name}`);
      return result;
    } catch (e) {
      this.db.exec(`ROLLBACK TO ${name}`);
      this.db.exec(`RELEASE ${name}`);
      throw e;
    } finally {
      inner.done = true;
    }
  }

  async backup(_file: string): Promise<void> {
    throw backupInTransaction();
  }

  async close(): Promise<void> {
    throw new Error("close() the database, not a transaction");
  }
}

// ---------------------------------------------------------------- PostgreSQL

const INT8_OID = 20;

/** BIGINT (int8) → number (bigint beyond 2^53, which epoch-ms timestamps never reach). */
const typesConfig: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (oid === INT8_OID && format !== "binary") {
      return (v: string) => {
        const n = Number(v);
        return Number.isSafeInteger(n) ? n : BigInt(v);
      };
    }
    return format === "binary" ? pg.types.getTypeParser(oid, "binary") : pg.types.getTypeParser(oid);
  }) as pg.CustomTypesConfig["getTypeParser"],
};

async function openPostgres(url: string, opts: OpenDatabaseOptions): Promise<Database> {
  if (!/^postgres(ql)?:\/\//i.test(url)) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
    throw new DatabaseOpenError(
      `DATABASE_URL must be a postgres:// URL${scheme ? ` (got a ${scheme}: URL)` : ""}; leave it unset to use the embedded SQLite database`,
    );
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.poolSize ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    types: typesConfig,
  });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on("error", () => {});
  try {
    const client = await pool.connect();
    client.release();
  } catch (e) {
    await pool.end().catch(() => {});
    throw new DatabaseOpenError(
      `cannot connect to PostgreSQL at DATABASE_URL=${redactUrl(url)}: ${e instanceof Error ? e.message || String((e as { code?: string }).code) : String(e)}`,
    );
  }
  return new PostgresDatabase(pool);
}

type Queryable = pg.Pool | pg.PoolClient;

async function pgQuery<T>(on: Queryable, sql: string, params: readonly Param[]): Promise<pg.QueryResult> {
  return on.query<T & pg.QueryResultRow>(toPostgresPlaceholders(sql), normaliseParams(params));
}

class PostgresDatabase implements Database {
  readonly kind = "postgres" as const;
  private closed = false;
  constructor(private readonly pool: pg.Pool) {}

  async query<T = Record<string, unknown>>(sql: string, params: readonly Param[] = []): Promise<T[]> {
    return (await pgQuery<T>(this.pool, sql, params)).rows as T[];
  }

  async run(sql: string, params: readonly Param[] = []): Promise<RunResult> {
    return { changes: (await pgQuery(this.pool, sql, params)).rowCount ?? 0 };
  }

  async transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const tx = new PostgresTx(client, 0);
    let broken = false;
    try {
      await client.query("BEGIN");
      const result = await fn(tx);
      await client.query("COMMIT");
      return result;
    } catch (e) {
      try {
        await client.query("ROLLBACK");
      } catch {
        broken = true; // connection lost: do not return it to the pool
      }
      throw e;
    } finally {
      tx.done = true;
      client.release(broken);
    }
  }

  async backup(file: string): Promise<void> {
    throw new BackupUnsupportedError(file);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

class PostgresTx implements Database {
  readonly kind = "postgres" as const;
  done = false;
  constructor(
    private readonly client: pg.PoolClient,
    private readonly depth: number,
  ) {}

  private check(): void {
    if (this.done) throw new Error("this transaction has already finished");
  }

  async query<T = Record<string, unknown>>(sql: string, params: readonly Param[] = []): Promise<T[]> {
    this.check();
    return (await pgQuery<T>(this.client, sql, params)).rows as T[];
  }

  async run(sql: string, params: readonly Param[] = []): Promise<RunResult> {
    this.check();
    return { changes: (await pgQuery(this.client, sql, params)).rowCount ?? 0 };
  }

  async transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    this.check();
    const name = `sp_${this.depth + 1}`;
    const inner = new PostgresTx(this.client, this.depth + 1);
    await this.client.query(`SAVEPOINT ${name}`);
    try {
      const result = await fn(inner);
      await this.client.query(`RELEASE SAVEPOINT ${name}`);
      return result;
    } catch (e) {
      await this.client.query(`ROLLBACK TO SAVEPOINT ${name}`);
      await this.client.query(`RELEASE SAVEPOINT ${name}`);
      throw e;
    } finally {
      inner.done = true;
    }
  }

  async backup(file: string): Promise<void> {
    throw new BackupUnsupportedError(file);
  }

  async close(): Promise<void> {
    throw new Error("close() the database, not a transaction");
  }
}
