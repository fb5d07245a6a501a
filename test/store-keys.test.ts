/**
 * The store (db abstraction, migrations, API keys, `maskwatch keys`) against both engines: SQLite in a temp
 * dir always; PostgreSQL when MASKWATCH_TEST_DATABASE_URL is set (a fresh database per run, dropped
 * afterwards, and a fresh schema in it per test).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Command } from "commander";
import { registerKeysCommand } from "../src/cli/keys.ts";
import {
  API_KEY_SCOPES,
  ApiKeyError,
  createKey,
  generateApiKey,
  hashApiKey,
  hasScope,
  LAST_USED_RESOLUTION_MS,
  listKeys,
  parseScopes,
  revokeKey,
  verifyKey,
} from "../src/store/api-keys.ts";
import {
  type Database,
  DatabaseOpenError,
  isUniqueViolation,
  openDatabase,
  SQLITE_FILE,
  toPostgresPlaceholders,
} from "../src/store/db.ts";
import { appliedMigrations, MigrationError, migrate, migrations } from "../src/store/migrations.ts";
import { skipUnlessCI } from "./support/ci.ts";
import {
  createTestDatabase,
  createTestSchema,
  PG_SKIP_MESSAGE,
  type PgTestDatabase,
  pgTestUrl,
} from "./support/pg.ts";

/** One empty database: open it (as often as wanted), then clean up. */
interface Target {
  open(): Promise<Database>;
  /** The environment `maskwatch keys` would need to reach this database. */
  env: NodeJS.ProcessEnv;
  cleanup(): Promise<void>;
}

interface Engine {
  name: "sqlite" | "postgres";
  skip: string | false;
  fresh(): Promise<Target>;
}

const pgUrl = pgTestUrl();
if (!pgUrl) console.log(`# store-keys: PostgreSQL tests skipped: ${PG_SKIP_MESSAGE}`);

/** One database for the whole run; each test gets a fresh schema in it. */
let sharedPg: Promise<PgTestDatabase> | undefined;
after(async () => {
  if (sharedPg) await (await sharedPg).drop();
});

const engines: Engine[] = [
  {
    name: "sqlite",
    skip: false,
    async fresh() {
      const dir = await mkdtemp(join(tmpdir(), "maskwatch-store-"));
      return {
        open: () => openDatabase({ dataDir: dir }),
        env: { MASKWATCH_DATA_DIR: dir },
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: "postgres",
    skip: pgUrl ? false : PG_SKIP_MESSAGE,
    async fresh() {
      sharedPg ??= createTestDatabase(pgUrl!);
      const schema = await createTestSchema((await sharedPg).url);
      return {
        open: () => openDatabase({ url: schema.url }),
        env: { DATABASE_URL: schema.url },
        cleanup: () => schema.drop(),
      };
    },
  },
];

/** Run `fn` with a fresh database opened once; everything is closed and removed afterwards. */
async function withFresh(engine: Engine, fn: (db: Database, target: Target) => Promise<void>): Promise<void> {
  const target = await engine.fresh();
  const opened: Database[] = [];
  const open = async () => {
    const db = await target.open();
    opened.push(db);
    return db;
  };
  try {
    await fn(await open(), { ...target, open });
  } finally {
    for (const db of opened) await db.close();
    await target.cleanup();
  }
}

async function runCli(env: NodeJS.ProcessEnv, ...args: string[]) {
  let stdout = "";
  let stderr = "";
  let code = 0;
  const program = new Command("maskwatch").exitOverride();
  registerKeysCommand(program, {
    env,
    stdout: (s) => {
      stdout += s;
    },
    stderr: (s) => {
      stderr += s;
    },
    setExitCode: (c) => {
      code = c;
    },
  });
  await program.parseAsync(["node", "maskwatch", ...args]);
  return { code, stdout, stderr };
}

// ------------------------------------------------------------ engine-independent

test("generateApiKey: mw_ + 32 bytes base64url, random; hashApiKey: sha256 hex", () => {
  const a = generateApiKey();
  const b = generateApiKey();
  assert.match(a, /^mw_[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b);
  assert.equal(Buffer.from(a.slice(3), "base64url").length, 32);
  assert.equal(hashApiKey("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert.match(hashApiKey(a), /^[0-9a-f]{64}$/);
});

test("parseScopes validates, splits commas, dedupes; hasScope: admin grants all", () => {
  assert.deepEqual(parseScopes("detect"), ["detect"]);
  assert.deepEqual(parseScopes(["admin", "detect,admin"]), ["detect", "admin"]);
  assert.throws(
    () => parseScopes(["detect", "root"]),
    (e: unknown) => {
      assert.ok(e instanceof ApiKeyError);
      assert.equal(e.code, "invalid_scope");
      assert.match(e.message, /unknown scope "root"; valid scopes: detect, events:read, admin/);
      return true;
    },
  );
  assert.throws(() => parseScopes([]), /at least one scope/);
  assert.throws(() => parseScopes(" , "), /at least one scope/);
  assert.ok(hasScope({ scopes: ["admin"] }, "detect"));
  assert.ok(!hasScope({ scopes: ["detect"] }, "admin"));
  assert.deepEqual(API_KEY_SCOPES, ["detect", "events:read", "admin"]);
});

test("toPostgresPlaceholders numbers ? outside quotes and comments", () => {
  assert.equal(toPostgresPlaceholders("SELECT ? , ?"), "SELECT $1 , $2");
  assert.equal(
    toPostgresPlaceholders(`SELECT '?', "a?b", ? -- ?\n/* ? */ FROM t WHERE x = ?`),
    `SELECT '?', "a?b", $1 -- ?\n/* ? */ FROM t WHERE x = $2`,
  );
});

test("openDatabase: a non-postgres DATABASE_URL is a clear error", async () => {
  await assert.rejects(
    openDatabase({ url: "mysql://root@localhost/db" }),
    (e: unknown) =>
      e instanceof DatabaseOpenError &&
      /DATABASE_URL must be a postgres:\/\/ URL \(got a mysql: URL\)/.test(e.message),
  );
});

test("openDatabase: an unreachable PostgreSQL names DATABASE_URL and hides the password", async () => {
  await assert.rejects(
    openDatabase({ url: "postgres://u:secret@127.0.0.1:1/none", connectTimeoutMs: 3000 }),
    (e: unknown) => {
      assert.ok(e instanceof DatabaseOpenError);
      assert.match(
        e.message,
        /cannot connect to PostgreSQL at DATABASE_URL=postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/none/,
      );
      assert.doesNotMatch(e.message, /secret/);
      return true;
    },
  );
});

test("sqlite: file under the data dir, WAL, synchronous=FULL, foreign keys, busy timeout", async () => {
  const dir = await mkdtemp(join(tmpdir(), "maskwatch-store-"));
  const dataDir = join(dir, "nested", "data");
  const db = await openDatabase({ dataDir });
  try {
    assert.ok(existsSync(join(dataDir, SQLITE_FILE)));
    const one = async (sql: string) => Object.values((await db.query(sql))[0]!)[0];
    assert.equal(await one("PRAGMA journal_mode"), "wal");
    assert.equal(await one("PRAGMA synchronous"), 2);
    assert.equal(await one("PRAGMA foreign_keys"), 1);
    assert.equal(await one("PRAGMA busy_timeout"), 5000);
  } finally {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------ the same suite on each engine

for (const engine of engines) {
  describe(`store on ${engine.name}`, { skip: skipUnlessCI(engine.skip) }, () => {
    test("migrations apply at open and are idempotent (open twice)", () =>
      withFresh(engine, async (db, target) => {
        assert.equal(db.kind, engine.name);
        assert.deepEqual(
          await appliedMigrations(db),
          migrations.map((m) => m.id),
        );
        assert.deepEqual(await migrate(db), []);
        const again = await target.open();
        assert.deepEqual(
          await appliedMigrations(again),
          migrations.map((m) => m.id),
        );
        const rows = await again.query<{ n: number }>("SELECT COUNT(*) AS n FROM schema_migrations");
        assert.equal(rows[0]!.n, migrations.length);
        assert.equal(typeof rows[0]!.n, "number");
      }));

    test("a failing migration rolls back entirely; a newer schema is refused", () =>
      withFresh(engine, async (db) => {
        const bad = [
          ...migrations,
          { id: migrations.length + 1, name: "bad", up: ["CREATE TABLE t2 (x INTEGER)", "NOT SQL"] },
        ];
        await assert.rejects(
          migrate(db, bad),
          (e: unknown) =>
            e instanceof MigrationError &&
            new RegExp(`migration ${migrations.length + 1} \\(bad\\)`).test(e.message),
        );
        assert.deepEqual(
          await appliedMigrations(db),
          migrations.map((m) => m.id),
        );
        await assert.rejects(db.query("SELECT * FROM t2"));
        await assert.rejects(migrate(db, []), /newer than this maskwatch knows/);
      }));

    if (engine.name === "postgres") {
      test("concurrent opens migrate once (advisory lock)", async () => {
        const target = await engine.fresh();
        try {
          const dbs = await Promise.all([target.open(), target.open(), target.open()]);
          for (const d of dbs)
            assert.deepEqual(
              await appliedMigrations(d),
              migrations.map((m) => m.id),
            );
          for (const d of dbs) await d.close();
        } finally {
          await target.cleanup();
        }
      });
    }

    test("transactions commit, roll back on throw, and nest with savepoints", () =>
      withFresh(engine, async (db) => {
        await db.run("CREATE TABLE tx_t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
        await db.transaction(async (tx) => {
          await tx.run("INSERT INTO tx_t (id, v) VALUES (?, ?)", [1, "a"]);
        });
        await assert.rejects(
          db.transaction(async (tx) => {
            await tx.run("INSERT INTO tx_t (id, v) VALUES (?, ?)", [2, "b"]);
            throw new Error("boom");
          }),
          /boom/,
        );
        await db.transaction(async (tx) => {
          await tx.run("INSERT INTO tx_t (id, v) VALUES (?, ?)", [3, "c"]);
          await assert.rejects(
            tx.transaction(async (inner) => {
              await inner.run("INSERT INTO tx_t (id, v) VALUES (?, ?)", [4, "d"]);
              throw new Error("inner");
            }),
          );
        });
        const rows = await db.query<{ id: number }>("SELECT id FROM tx_t ORDER BY id");
        assert.deepEqual(
          rows.map((r) => r.id),
          [1, 3],
        );
        const { changes } = await db.run("UPDATE tx_t SET v = ? WHERE id > ?", ["z", 0]);
        assert.equal(changes, 2);
      }));

    test("create / list / verify / revoke", () =>
      withFresh(engine, async (db) => {
        const a = await createKey(db, { name: "ci", scopes: ["detect"] });
        const b = await createKey(db, { name: " ops ", scopes: "admin,detect" });
        assert.match(a.id, /^key_[0-9a-f]{16}$/);
        assert.equal(a.prefix, a.key.slice(0, 8));
        assert.deepEqual(a.scopes, ["detect"]);
        assert.deepEqual(b.scopes, ["detect", "admin"]);
        assert.equal(b.name, "ops");
        assert.equal(typeof a.createdAt, "number");

        const listed = await listKeys(db);
        assert.deepEqual(listed.map((k) => k.id).sort(), [a.id, b.id].sort());
        for (const k of listed) {
          assert.equal("key" in k, false);
          assert.equal("hash" in k, false);
          assert.equal(k.revokedAt, null);
        }
        // the plain key is never stored
        const raw = await db.query<Record<string, unknown>>("SELECT * FROM api_keys");
        assert.ok(!JSON.stringify(raw).includes(a.key));
        assert.equal(raw.find((r) => r["id"] === a.id)!["hash"], hashApiKey(a.key));

        const v = await verifyKey(db, a.key);
        assert.equal(v?.id, a.id);
        assert.deepEqual(v?.scopes, ["detect"]);

        const revoked = await revokeKey(db, a.id);
        assert.equal(typeof revoked.revokedAt, "number");
        assert.equal(await verifyKey(db, a.key), null);
        assert.equal((await verifyKey(db, b.key))?.id, b.id);
        const after = await listKeys(db);
        assert.equal(after.find((k) => k.id === a.id)!.revokedAt, revoked.revokedAt);
        assert.equal(after.find((k) => k.id === b.id)!.revokedAt, null);
      }));

    test("revoke by prefix; unknown id is an error; revoking twice keeps the first time", () =>
      withFresh(engine, async (db) => {
        const k = await createKey(db, { name: "p", scopes: ["detect"] });
        const r1 = await revokeKey(db, k.prefix, 1_000);
        assert.equal(r1.id, k.id);
        assert.equal(r1.revokedAt, 1_000);
        const r2 = await revokeKey(db, k.id, 2_000);
        assert.equal(r2.revokedAt, 1_000);
        await assert.rejects(
          revokeKey(db, "key_doesnotexist"),
          (e: unknown) =>
            e instanceof ApiKeyError && e.code === "not_found" && /key_doesnotexist/.test(e.message),
        );
      }));

    test("revoked, unknown and malformed keys fail verification", () =>
      withFresh(engine, async (db) => {
        const k = await createKey(db, { name: "x", scopes: ["detect"] });
        await revokeKey(db, k.id);
        assert.equal(await verifyKey(db, k.key), null);
        assert.equal(await verifyKey(db, generateApiKey()), null);
        assert.equal(await verifyKey(db, ""), null);
        assert.equal(await verifyKey(db, "mw_short"), null);
        assert.equal(await verifyKey(db, `${k.key}x`), null);
        assert.equal(await verifyKey(db, k.key.toUpperCase()), null);
      }));

    test("verify updates last_used_at, at most once per minute", () =>
      withFresh(engine, async (db) => {
        const k = await createKey(db, { name: "u", scopes: ["detect"] });
        const t0 = 1_700_000_000_000;
        assert.equal((await listKeys(db))[0]!.lastUsedAt, null);
        assert.equal((await verifyKey(db, k.key, t0))?.lastUsedAt, t0);
        assert.equal((await verifyKey(db, k.key, t0 + 30_000))?.lastUsedAt, t0);
        assert.equal((await listKeys(db))[0]!.lastUsedAt, t0);
        const t1 = t0 + LAST_USED_RESOLUTION_MS + 1;
        assert.equal((await verifyKey(db, k.key, t1))?.lastUsedAt, t1);
        assert.equal((await listKeys(db))[0]!.lastUsedAt, t1);
        assert.equal(typeof (await listKeys(db))[0]!.lastUsedAt, "number");
      }));

    test("the hash is unique", () =>
      withFresh(engine, async (db) => {
        const k = await createKey(db, { name: "h", scopes: ["detect"] });
        await assert.rejects(
          db.run(
            "INSERT INTO api_keys (id, name, prefix, hash, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ["key_other", "dup", k.prefix, hashApiKey(k.key), "detect", Date.now()],
          ),
          (e: unknown) => isUniqueViolation(e),
        );
        assert.equal((await listKeys(db)).length, 1);
      }));

    test("bad scopes and names are clear errors and store nothing", () =>
      withFresh(engine, async (db) => {
        await assert.rejects(
          createKey(db, { name: "x", scopes: ["root"] }),
          (e: unknown) =>
            e instanceof ApiKeyError &&
            e.code === "invalid_scope" &&
            /valid scopes: detect, events:read, admin/.test(e.message),
        );
        await assert.rejects(createKey(db, { name: "x", scopes: [] }), /at least one scope/);
        await assert.rejects(
          createKey(db, { name: "  ", scopes: ["detect"] }),
          (e: unknown) => e instanceof ApiKeyError && e.code === "invalid_name",
        );
        assert.deepEqual(await listKeys(db), []);
      }));

    test("data survives close and reopen", () =>
      withFresh(engine, async (db, target) => {
        const k = await createKey(db, { name: "durable", scopes: ["admin"] });
        await db.close();
        const again = await target.open();
        const listed = await listKeys(again);
        assert.equal(listed.length, 1);
        assert.equal(listed[0]!.name, "durable");
        assert.equal((await verifyKey(again, k.key))?.id, k.id);
      }));

    test("maskwatch keys create / list / revoke", () =>
      withFresh(engine, async (db, target) => {
        const created = await runCli(
          target.env,
          "keys",
          "create",
          "--name",
          "cli",
          "--scope",
          "detect",
          "--scope",
          "admin",
          "--json",
        );
        assert.equal(created.code, 0, created.stderr);
        const k = JSON.parse(created.stdout) as { id: string; key: string; prefix: string; scopes: string[] };
        assert.deepEqual(k.scopes, ["detect", "admin"]);
        assert.match(created.stderr, /cannot be shown again/);
        assert.equal((await verifyKey(db, k.key))?.id, k.id);

        const human = await runCli(target.env, "keys", "create", "--name", "second");
        assert.equal(human.code, 0, human.stderr);
        assert.match(human.stdout, /mw_[A-Za-z0-9_-]{43}/);
        assert.match(human.stdout, /cannot be shown again/);
        assert.match(human.stdout, /scopes: detect\)/);

        const list = await runCli(target.env, "keys", "list");
        assert.equal(list.code, 0, list.stderr);
        assert.match(list.stdout, /^ID\s+PREFIX\s+NAME/);
        assert.ok(list.stdout.includes(k.prefix));
        assert.ok(!list.stdout.includes(k.key));
        const listJson = JSON.parse((await runCli(target.env, "keys", "list", "--json")).stdout) as unknown[];
        assert.equal(listJson.length, 2);

        const rev = await runCli(target.env, "keys", "revoke", k.prefix);
        assert.equal(rev.code, 0, rev.stderr);
        assert.match(rev.stdout, new RegExp(`Revoked API key ${k.id}`));
        assert.equal(await verifyKey(db, k.key), null);
        const rev2 = await runCli(target.env, "keys", "revoke", k.id);
        assert.match(rev2.stdout, /already revoked/);

        const missing = await runCli(target.env, "keys", "revoke", "key_nope");
        assert.equal(missing.code, 1);
        assert.match(missing.stderr, /^maskwatch: no API key with id or prefix "key_nope"\n$/);
        const badScope = await runCli(target.env, "keys", "create", "--name", "z", "--scope", "root");
        assert.equal(badScope.code, 1);
        assert.match(badScope.stderr, /unknown scope "root"/);
      }));
  });
}

test("maskwatch keys: a bad DATABASE_URL is one clear line", async () => {
  const r = await runCli({ DATABASE_URL: "sqlite:///tmp/x.db" }, "keys", "list");
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^maskwatch: DATABASE_URL must be a postgres:\/\/ URL/);
});
