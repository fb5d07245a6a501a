/**
 * Migration 2 (monitoring) and its repositories (sources, events, users, settings) plus Database.backup, against
 * both engines: SQLite in a temp dir always; PostgreSQL when MASKWATCH_TEST_DATABASE_URL is set (a fresh
 * database per run, dropped afterwards, and a fresh schema in it per test).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { createKey, listKeys } from "../src/store/api-keys.ts";
import { BackupUnsupportedError, type Database, openDatabase, SQLITE_FILE } from "../src/store/db.ts";
import {
  acknowledgeEvent,
  decodeCursor,
  deleteEventsBefore,
  type EventRecord,
  encodeCursor,
  eventStats,
  eventTotals,
  getEvent,
  getFrame,
  getSnapshot,
  insertEvent,
  listEvents,
  type NewEvent,
  SNAPSHOT_IN_DATABASE,
} from "../src/store/events.ts";
import { appliedMigrations, migrate, migrations, statementFor } from "../src/store/migrations.ts";
import { deleteSetting, getSetting, listSettings, setSetting } from "../src/store/settings.ts";
import {
  countOwnedSources,
  createSource,
  deleteSource,
  getSource,
  listSources,
  StoreError,
  type StoreErrorCode,
  updateSource,
  upsertSource,
} from "../src/store/sources.ts";
import {
  createUser,
  deleteUser,
  getUser,
  hashPassword,
  listUsers,
  setPassword,
  verifyPassword,
  verifyUser,
} from "../src/store/users.ts";
import { skipUnlessCI } from "./support/ci.ts";
import {
  createTestDatabase,
  createTestSchema,
  PG_SKIP_MESSAGE,
  type PgTestDatabase,
  pgTestUrl,
} from "./support/pg.ts";

interface Target {
  open(opts?: { migrate?: boolean }): Promise<Database>;
  cleanup(): Promise<void>;
}

interface Engine {
  name: "sqlite" | "postgres";
  skip: string | false;
  fresh(): Promise<Target>;
}

const pgUrl = pgTestUrl();
if (!pgUrl) console.log(`# store-monitoring: PostgreSQL tests skipped: ${PG_SKIP_MESSAGE}`);

let sharedPg: Promise<PgTestDatabase> | undefined;
after(async () => {
  if (sharedPg) await (await sharedPg).drop();
});

const engines: Engine[] = [
  {
    name: "sqlite",
    skip: false,
    async fresh() {
      const dir = await mkdtemp(join(tmpdir(), "maskwatch-monitoring-"));
      return {
        open: (opts) => openDatabase({ dataDir: dir, ...opts }),
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
        open: (opts) => openDatabase({ url: schema.url, ...opts }),
        cleanup: () => schema.drop(),
      };
    },
  },
];

async function withFresh(
  engine: Engine,
  fn: (db: Database, target: Target) => Promise<void>,
  opts: { migrate?: boolean } = {},
): Promise<void> {
  const target = await engine.fresh();
  const opened: Database[] = [];
  const open = async (o?: { migrate?: boolean }) => {
    const db = await target.open(o);
    opened.push(db);
    return db;
  };
  try {
    await fn(await open(opts), { ...target, open });
  } finally {
    for (const db of opened) await db.close();
    await target.cleanup();
  }
}

/** A predicate for assert.rejects/throws: a StoreError with `code`. */
const storeError = (code: StoreErrorCode) => (e: unknown) => {
  assert.ok(e instanceof StoreError, `expected a StoreError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return true;
};

const T0 = Date.UTC(2024, 0, 1); // 1704067200000: beyond 32 bits, on a UTC day boundary
const H = 3_600_000;
const D = 24 * H;

function ev(overrides: Partial<NewEvent> = {}): NewEvent {
  return {
    at: T0,
    sourceId: "cam1",
    trackId: 1,
    kind: "observation",
    label: "mask",
    confidence: 0.9,
    box: [1, 2, 30.5, 40.25],
    snapshot: null,
    ...overrides,
  };
}

/** Insert many events in one transaction (fast on both engines). */
async function insertMany(db: Database, events: NewEvent[]): Promise<EventRecord[]> {
  return db.transaction(async (tx) => {
    const out: EventRecord[] = [];
    for (const e of events) out.push(await insertEvent(tx, e));
    return out;
  });
}

/** Every page of a listing, following nextCursor. */
async function allPages(db: Database, opts: Parameters<typeof listEvents>[1]) {
  const pages: EventRecord[][] = [];
  let cursor: string | null = null;
  do {
    const page = await listEvents(db, { ...opts, cursor });
    pages.push(page.events);
    cursor = page.nextCursor;
    assert.ok(pages.length < 100, "runaway pagination");
  } while (cursor);
  return pages;
}

// ------------------------------------------------------------ engine-independent

test("the migrations in order; migration 2 has a statement per engine for events", () => {
  assert.deepEqual(
    migrations.map((m) => [m.id, m.name]),
    [
      [1, "api_keys"],
      [2, "monitoring"],
      [3, "sessions"],
      [4, "jobs"],
      [5, "snapshots"],
      [6, "source_owner"],
      [7, "event_review"],
      [8, "alerts"],
      [9, "zones"],
    ],
  );
  const perEngine = migrations[1]!.up.filter((s) => typeof s !== "string");
  assert.equal(perEngine.length, 1);
  assert.match(statementFor(perEngine[0]!, "sqlite"), /INTEGER PRIMARY KEY AUTOINCREMENT/);
  assert.match(statementFor(perEngine[0]!, "postgres"), /BIGSERIAL PRIMARY KEY/);
  assert.equal(statementFor("SELECT 1", "postgres"), "SELECT 1");
});

test("cursors round-trip; anything else is invalid_cursor", () => {
  const c = { order: "asc" as const, at: T0, id: 42 };
  const s = encodeCursor(c);
  assert.match(s, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(decodeCursor(s), c);
  const bad = [
    "",
    "not a cursor!",
    "x",
    Buffer.from("z.1.2").toString("base64url"),
    Buffer.from("a.1").toString("base64url"),
    Buffer.from("a.-1.2").toString("base64url"),
    Buffer.from("d.99999999999999999.2").toString("base64url"),
    `${s}=`,
    `${s}A`,
    "A".repeat(200),
  ];
  for (const b of bad) assert.throws(() => decodeCursor(b), storeError("invalid_cursor"), b);
});

test("hashPassword: scrypt$N$r$p$salt$hash, salted; verifyPassword", async () => {
  const a = await hashPassword("correct horse");
  const b = await hashPassword("correct horse");
  assert.match(a, /^scrypt\$32768\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b);
  assert.equal(await verifyPassword("correct horse", a), true);
  assert.equal(await verifyPassword("correct horse", b), true);
  assert.equal(await verifyPassword("correct horsf", a), false);
  assert.equal(await verifyPassword("correct horse", "plain"), false);
  assert.equal(await verifyPassword("correct horse", a.replace("$32768$", "$1073741824$")), false);
});

// ------------------------------------------------------------ the same suite on each engine

for (const engine of engines) {
  describe(`monitoring store on ${engine.name}`, { skip: skipUnlessCI(engine.skip) }, () => {
    test("migrates a database that has only migration 1; api keys survive", () =>
      withFresh(
        engine,
        async (db, target) => {
          assert.deepEqual(await migrate(db, migrations.slice(0, 1)), [1]);
          const key = await createKey(db, { name: "old", scopes: ["detect"] });
          await assert.rejects(db.query("SELECT * FROM events"));
          await db.close();

          const again = await target.open(); // migrates at open
          assert.deepEqual(
            await appliedMigrations(again),
            migrations.map((m) => m.id),
          );
          assert.deepEqual(
            (await listKeys(again)).map((k) => k.id),
            [key.id],
          );
          for (const table of ["sources", "events", "users", "settings"]) {
            assert.deepEqual(await again.query(`SELECT * FROM ${table}`), [], table);
          }
          assert.deepEqual(await migrate(again), []);
        },
        { migrate: false },
      ));

    test("sources: create, get, list, update, delete; conflict, not_found, bad input", () =>
      withFresh(engine, async (db) => {
        const a = await createSource(db, { name: " Lobby ", kind: "stream", url: "rtsp://cam/1", now: 1000 });
        assert.match(a.id, /^src_[0-9a-f]{10}$/);
        assert.deepEqual(a, {
          id: a.id,
          name: "Lobby",
          kind: "stream",
          url: "rtsp://cam/1",
          options: {},
          enabled: true,
          owner: null,
          createdAt: 1000,
          updatedAt: 1000,
        });
        const b = await createSource(db, {
          id: "door-2",
          name: "Door",
          kind: "device",
          options: { deviceId: "abc", fps: 5, roi: { x: 1, y: [2, 3] } },
          enabled: false,
          now: 2000,
        });
        assert.equal(b.url, null);
        assert.deepEqual(await getSource(db, "door-2"), b);
        assert.equal(await getSource(db, "nope"), undefined);
        assert.deepEqual(
          (await listSources(db)).map((s) => s.id),
          [a.id, "door-2"],
        );
        assert.equal(typeof (await getSource(db, a.id))!.createdAt, "number");
        assert.equal((await getSource(db, "door-2"))!.enabled, false);
        const owned = await createSource(db, {
          id: "cam-u7",
          name: "Mine",
          kind: "browser",
          owner: "user:7",
        });
        assert.equal((await getSource(db, "cam-u7"))!.owner, "user:7");
        assert.equal(await countOwnedSources(db, "user:7", "browser"), 1);
        assert.equal(await countOwnedSources(db, "user:8", "browser"), 0);
        assert.equal(await countOwnedSources(db, "user:7", "stream"), 0);
        assert.equal(await deleteSource(db, owned.id), true);

        await assert.rejects(
          createSource(db, { id: "door-2", name: "Dup", kind: "file" }),
          storeError("conflict"),
        );
        for (const id of ["-x", "a b", "x".repeat(65), "", "ü"]) {
          await assert.rejects(
            createSource(db, { id, name: "n", kind: "file" }),
            storeError("invalid_id"),
            id,
          );
        }
        await assert.rejects(
          createSource(db, { name: "n", kind: "webcam" as "device" }),
          storeError("invalid_kind"),
        );
        await assert.rejects(createSource(db, { name: "  ", kind: "file" }), storeError("invalid_name"));
        await assert.rejects(
          createSource(db, { name: "n", kind: "file", options: [] as unknown as Record<string, unknown> }),
          storeError("invalid_options"),
        );
        assert.equal((await listSources(db)).length, 2);

        const u = await updateSource(db, "door-2", {
          name: "Front door",
          enabled: true,
          url: "file:///x.mp4",
          options: { fps: 10 },
          now: 3000,
        });
        assert.deepEqual(u, {
          ...b,
          name: "Front door",
          enabled: true,
          url: "file:///x.mp4",
          options: { fps: 10 },
          updatedAt: 3000,
        });
        assert.deepEqual(await getSource(db, "door-2"), u);
        const cleared = await updateSource(db, "door-2", { url: null, now: 4000 });
        assert.equal(cleared.url, null);
        assert.equal(cleared.name, "Front door");
        await assert.rejects(updateSource(db, "ghost", { name: "x" }), storeError("not_found"));
        await assert.rejects(
          updateSource(db, "door-2", { kind: "tv" as "file" }),
          storeError("invalid_kind"),
        );

        assert.equal(await deleteSource(db, "door-2"), true);
        assert.equal(await deleteSource(db, "door-2"), false);
        assert.equal(await getSource(db, "door-2"), undefined);
      }));

    test("sources: upsert creates, then replaces and keeps createdAt (and enabled unless given)", () =>
      withFresh(engine, async (db) => {
        const created = await upsertSource(db, {
          id: "browser-1",
          name: "Tab",
          kind: "browser",
          options: { a: 1 },
          enabled: false,
          owner: "user:7",
          now: 100,
        });
        assert.deepEqual(created, {
          id: "browser-1",
          name: "Tab",
          kind: "browser",
          url: null,
          options: { a: 1 },
          enabled: false,
          owner: "user:7",
          createdAt: 100,
          updatedAt: 100,
        });
        const replaced = await upsertSource(db, {
          id: "browser-1",
          name: "Tab 2",
          kind: "stream",
          url: "http://x/y.m3u8",
          now: 200,
        });
        assert.deepEqual(replaced, {
          id: "browser-1",
          name: "Tab 2",
          kind: "stream",
          url: "http://x/y.m3u8",
          options: {},
          enabled: false,
          owner: "user:7",
          createdAt: 100,
          updatedAt: 200,
        });
        const enabled = await upsertSource(db, {
          id: "browser-1",
          name: "Tab 2",
          kind: "stream",
          enabled: true,
        });
        assert.equal(enabled.enabled, true);
        assert.equal(enabled.url, null);
        assert.equal((await listSources(db)).length, 1);
        await assert.rejects(
          upsertSource(db, { id: "bad id", name: "x", kind: "file" }),
          storeError("invalid_id"),
        );
      }));

    test("events: a violation keeps its face and the whole frame; acknowledged once, the first word stands", () =>
      withFresh(engine, async (db) => {
        const a = await insertEvent(
          db,
          ev({ kind: "violation", label: "no_mask" }),
          new Uint8Array([0xff, 0xd8]),
        );
        assert.equal(a.hasFrame, false, "a face without its frame");
        const face = new Uint8Array([0xff, 0xd8, 1, 2]);
        const frame = new Uint8Array([0xff, 0xd8, 3, 4, 5]);
        const c = await insertEvent(
          db,
          ev({ at: T0 + 2, kind: "violation", label: "incorrect" }),
          face,
          frame,
        );
        assert.equal(c.hasFrame, true);
        assert.equal((await getEvent(db, c.id))!.hasFrame, true);
        assert.deepEqual([...(await getFrame(db, c.id))!], [...frame]);
        assert.deepEqual([...(await getSnapshot(db, c.id))!], [...face]);
        assert.equal(await getFrame(db, a.id), undefined);
        const acked = await acknowledgeEvent(db, c.id, "guard", T0 + 10);
        assert.deepEqual([acked!.acknowledgedAt, acked!.acknowledgedBy], [T0 + 10, "guard"]);
        const later = await acknowledgeEvent(db, c.id, "admin", T0 + 20);
        assert.deepEqual([later!.acknowledgedAt, later!.acknowledgedBy], [T0 + 10, "guard"]);
        assert.equal(await acknowledgeEvent(db, 987654321, "guard"), undefined);
      }));

    test("events: insert returns numeric ids, committed at resolve; get; validation; outlive their source", () =>
      withFresh(engine, async (db, target) => {
        await createSource(db, { id: "cam1", name: "Cam", kind: "device" });
        const a = await insertEvent(
          db,
          ev({ kind: "violation", label: "no_mask", confidence: 0.75, snapshot: "snapshots/2024/a.jpg" }),
        );
        const b = await insertEvent(db, ev({ at: T0 + 1, trackId: 2_000_000_000 }));
        assert.equal(typeof a.id, "number");
        assert.ok(b.id > a.id);
        assert.deepEqual(await getEvent(db, a.id), a);
        assert.deepEqual(a, {
          id: a.id,
          ...ev({ kind: "violation", label: "no_mask", confidence: 0.75, snapshot: "snapshots/2024/a.jpg" }),
          acknowledgedAt: null,
          acknowledgedBy: null,
          hasFrame: false,
        });
        assert.equal(await getEvent(db, 987654321), undefined);

        // committed: another connection sees it at once
        const other = await target.open();
        assert.deepEqual(await getEvent(other, b.id), b);

        const invalid: Partial<NewEvent>[] = [
          { at: -1 },
          { at: 1.5 },
          { sourceId: "" },
          { trackId: 2 ** 31 },
          { trackId: 0.5 },
          { kind: "alert" as "violation" },
          { label: "masked" as "mask" },
          { confidence: 1.5 },
          { confidence: Number.NaN },
          { box: [1, 2, 3] as unknown as NewEvent["box"] },
          { box: [1, 2, 3, Number.POSITIVE_INFINITY] },
          { snapshot: "../etc/passwd" },
          { snapshot: "/abs/a.jpg" },
          { snapshot: "a/../../b.jpg" },
          { snapshot: "C:\\x.jpg" },
        ];
        for (const bad of invalid) {
          await assert.rejects(insertEvent(db, ev(bad)), storeError("invalid_event"), JSON.stringify(bad));
        }
        assert.equal((await listEvents(db)).events.length, 2);

        assert.equal(await deleteSource(db, "cam1"), true);
        assert.equal((await listEvents(db, { sourceId: "cam1" })).events.length, 2);
      }));

    test("listEvents: time range [from, to), source, label, kind filters; default order newest first", () =>
      withFresh(engine, async (db) => {
        const e = await insertMany(db, [
          ev({ at: T0, sourceId: "a", label: "mask" }),
          ev({ at: T0 + 10, sourceId: "a", label: "no_mask", kind: "violation" }),
          ev({ at: T0 + 10, sourceId: "b", label: "incorrect", kind: "violation" }),
          ev({ at: T0 + 20, sourceId: "b", label: "mask" }),
          ev({ at: T0 + 30, sourceId: "a", label: "no_mask" }),
        ]);
        const ids = async (opts: Parameters<typeof listEvents>[1]) =>
          (await listEvents(db, opts)).events.map((x) => e.findIndex((y) => y.id === x.id));
        assert.deepEqual(await ids({}), [4, 3, 2, 1, 0]);
        assert.deepEqual(await ids({ order: "asc" }), [0, 1, 2, 3, 4]);
        assert.deepEqual(await ids({ from: T0 + 10 }), [4, 3, 2, 1]);
        assert.deepEqual(await ids({ to: T0 + 10 }), [0]);
        assert.deepEqual(await ids({ from: T0 + 10, to: T0 + 30 }), [3, 2, 1]);
        assert.deepEqual(await ids({ from: T0 + 10, to: T0 + 10 }), []);
        assert.deepEqual(await ids({ sourceId: "a" }), [4, 1, 0]);
        assert.deepEqual(await ids({ label: "no_mask" }), [4, 1]);
        assert.deepEqual(await ids({ kind: "violation" }), [2, 1]);
        assert.deepEqual(await ids({ kind: "observation", sourceId: "b" }), [3]);
        assert.deepEqual(await ids({ label: "mask", from: T0 + 1, to: T0 + 21 }), [3]);
        assert.deepEqual(await ids({ sourceId: "zzz" }), []);
        const page = await listEvents(db, { limit: 5 });
        assert.equal(page.nextCursor, null);
        const first = await listEvents(db, { limit: 2 });
        assert.equal(first.events.length, 2);
        assert.equal(typeof first.nextCursor, "string");

        await assert.rejects(listEvents(db, { limit: 0 }), storeError("invalid_limit"));
        await assert.rejects(listEvents(db, { limit: 1001 }), storeError("invalid_limit"));
        await assert.rejects(listEvents(db, { limit: 2.5 }), storeError("invalid_limit"));
        assert.equal((await listEvents(db, { limit: 1000 })).events.length, 5);
        await assert.rejects(listEvents(db, { label: "x" as "mask" }), storeError("invalid_filter"));
        await assert.rejects(listEvents(db, { from: Number.NaN }), storeError("invalid_filter"));
      }));

    test("listEvents: keyset pagination over 250 events sharing `at`s, both orders, no dupes or skips", () =>
      withFresh(engine, async (db) => {
        // 20 distinct times, ids interleaved across them, so id order differs from time order
        const inserted = await insertMany(
          db,
          Array.from({ length: 250 }, (_, i) =>
            ev({
              at: T0 + ((i * 37) % 20) * 1000,
              trackId: i,
              sourceId: i % 3 === 0 ? "s3" : "other",
              label: i % 2 ? "mask" : "no_mask",
            }),
          ),
        );
        const byKey = (a: EventRecord, b: EventRecord) => a.at - b.at || a.id - b.id;
        const asc = [...inserted].sort(byKey).map((e) => e.id);
        const desc = [...asc].reverse();

        for (const [order, expected] of [
          ["desc", desc],
          ["asc", asc],
        ] as const) {
          const pages = await allPages(db, { order, limit: 33 });
          assert.deepEqual(
            pages.map((p) => p.length),
            [33, 33, 33, 33, 33, 33, 33, 19],
          );
          const got = pages.flat().map((e) => e.id);
          assert.equal(new Set(got).size, 250);
          assert.deepEqual(got, expected, order);
        }
        // exact multiple of the page size: the last full page has no next cursor
        const fifty = await allPages(db, { limit: 50 });
        assert.deepEqual(
          fifty.map((p) => p.length),
          [50, 50, 50, 50, 50],
        );

        // with filters, the cursor keeps them
        const s3 = (await allPages(db, { sourceId: "s3", limit: 7, order: "asc", from: T0 + 3000 })).flat();
        const s3Expected = inserted
          .filter((e) => e.sourceId === "s3" && e.at >= T0 + 3000)
          .sort(byKey)
          .map((e) => e.id);
        assert.deepEqual(
          s3.map((e) => e.id),
          s3Expected,
        );

        // a cursor carries its order; rows inserted between pages do not shift a page
        const p1 = await listEvents(db, { order: "asc", limit: 100 });
        await insertEvent(db, ev({ at: T0 - 5000 })); // before everything: would shift an offset
        await insertEvent(db, ev({ at: T0 + 5000 })); // inside page 2's range: appears there, once
        const p2 = await listEvents(db, { cursor: p1.nextCursor!, limit: 100 });
        assert.equal(p2.events[0]!.id, asc[100]);
        assert.ok(p2.events.every((e) => byKey(e, p1.events.at(-1)!) > 0));
        await assert.rejects(
          listEvents(db, { cursor: p1.nextCursor!, order: "desc" }),
          storeError("invalid_cursor"),
        );
      }));

    test("listEvents: a malformed cursor is invalid_cursor", () =>
      withFresh(engine, async (db) => {
        await insertEvent(db, ev());
        for (const cursor of [
          "garbage!",
          "eyJ9",
          Buffer.from("d.1.x").toString("base64url"),
          "A".repeat(70),
        ]) {
          await assert.rejects(listEvents(db, { cursor }), storeError("invalid_cursor"), cursor);
        }
      }));

    test("eventStats: hour and day buckets, counts by kind and label, compliance rate; totals", () =>
      withFresh(engine, async (db) => {
        await insertMany(db, [
          ev({ at: T0 + 10 * 60_000, kind: "violation", label: "no_mask", sourceId: "a" }),
          ev({ at: T0 + 20 * 60_000, kind: "observation", label: "mask", sourceId: "a" }),
          ev({ at: T0 + H - 1, kind: "observation", label: "mask", sourceId: "b" }),
          ev({ at: T0 + H, kind: "violation", label: "incorrect", sourceId: "a" }),
          ev({ at: T0 + H + 30 * 60_000, kind: "observation", label: "mask", sourceId: "a" }),
          ev({ at: T0 + 5 * H, kind: "observation", label: "no_mask", sourceId: "b" }),
          ev({ at: T0 + D + 1, kind: "violation", label: "no_mask", sourceId: "a" }),
          ev({ at: T0 + D + 2 * H, kind: "observation", label: "mask", sourceId: "a" }),
        ]);
        const row = (
          start: number,
          events: number,
          violations: number,
          mask: number,
          noMask: number,
          incorrect: number,
        ) => ({
          start,
          events,
          violations,
          observations: events - violations,
          mask,
          noMask,
          incorrect,
          complianceRate: mask / (mask + noMask + incorrect),
        });
        assert.deepEqual(await eventStats(db, { bucket: "hour" }), [
          row(T0, 3, 1, 2, 1, 0),
          row(T0 + H, 2, 1, 1, 0, 1),
          row(T0 + 5 * H, 1, 0, 0, 1, 0),
          row(T0 + D, 1, 1, 0, 1, 0),
          row(T0 + D + 2 * H, 1, 0, 1, 0, 0),
        ]);
        const days = await eventStats(db, { bucket: "day" });
        assert.deepEqual(days, [row(T0, 6, 2, 3, 2, 1), row(T0 + D, 2, 1, 1, 1, 0)]);
        assert.equal(days[0]!.complianceRate, 0.5);
        assert.equal(typeof days[0]!.start, "number");
        assert.deepEqual(await eventStats(db, { bucket: "hour", sourceId: "b" }), [
          row(T0, 1, 0, 1, 0, 0),
          row(T0 + 5 * H, 1, 0, 0, 1, 0),
        ]);
        assert.deepEqual(await eventStats(db, { bucket: "hour", from: T0 + H, to: T0 + D }), [
          row(T0 + H, 2, 1, 1, 0, 1),
          row(T0 + 5 * H, 1, 0, 0, 1, 0),
        ]);
        assert.deepEqual(await eventStats(db, { bucket: "day", from: T0 + 2 * D }), []);
        await assert.rejects(eventStats(db, { bucket: "week" as "day" }), storeError("invalid_bucket"));

        assert.deepEqual(await eventTotals(db), {
          events: 8,
          violations: 3,
          observations: 5,
          mask: 4,
          noMask: 3,
          incorrect: 1,
        });
        assert.deepEqual(await eventTotals(db, { sourceId: "a", from: T0 + H }), {
          events: 4,
          violations: 2,
          observations: 2,
          mask: 2,
          noMask: 1,
          incorrect: 1,
        });
        assert.deepEqual(await eventTotals(db, { from: T0 + 3 * D }), {
          events: 0,
          violations: 0,
          observations: 0,
          mask: 0,
          noMask: 0,
          incorrect: 0,
        });
      }));

    test("deleteEventsBefore: deletes older rows, returns their snapshots, keeps newer ones", () =>
      withFresh(engine, async (db) => {
        const e = await insertMany(db, [
          ev({ at: T0, snapshot: "snap/0.jpg" }),
          ev({ at: T0 + 1, snapshot: null }),
          ev({ at: T0 + 2, snapshot: "snap/2.jpg" }),
          ev({ at: T0 + 3, snapshot: "snap/3.jpg" }),
          ev({ at: T0 + 4, snapshot: null }),
        ]);
        const r = await deleteEventsBefore(db, T0 + 3);
        assert.equal(r.deleted, 3);
        assert.deepEqual([...r.snapshots].sort(), ["snap/0.jpg", "snap/2.jpg"]);
        assert.deepEqual(
          (await listEvents(db, { order: "asc" })).events.map((x) => x.id),
          [e[3]!.id, e[4]!.id],
        );
        assert.deepEqual(await deleteEventsBefore(db, T0 + 3), { deleted: 0, snapshots: [] });
        await assert.rejects(deleteEventsBefore(db, Number.NaN), storeError("invalid_filter"));
      }));

    test("snapshots in the database: committed with their event, read back byte for byte, deleted with it", () =>
      withFresh(engine, async (db) => {
        const jpeg = new Uint8Array(4096).map((_, i) => (i * 7) % 256);
        const old = await insertEvent(db, ev({ at: T0, kind: "violation", label: "no_mask" }), jpeg);
        const kept = await insertEvent(db, ev({ at: T0 + 10, kind: "violation", label: "no_mask" }), jpeg);
        assert.equal(old.snapshot, SNAPSHOT_IN_DATABASE);
        assert.equal((await getEvent(db, kept.id))?.snapshot, SNAPSHOT_IN_DATABASE);
        assert.deepEqual(new Uint8Array((await getSnapshot(db, old.id))!), jpeg);
        assert.equal(await getSnapshot(db, 999_999), undefined);
        const r = await deleteEventsBefore(db, T0 + 5);
        assert.deepEqual(r, { deleted: 1, snapshots: [] }, "no file to remove for an image in the database");
        assert.equal(await getSnapshot(db, old.id), undefined);
        assert.deepEqual(new Uint8Array((await getSnapshot(db, kept.id))!), jpeg);
      }));

    test("users: create, verify right/wrong password, duplicate, bad input, set password, delete", () =>
      withFresh(engine, async (db) => {
        const alice = await createUser(db, {
          username: "Alice",
          password: "s3cret-pass",
          role: "admin",
          now: 5,
        });
        assert.match(alice.id, /^usr_[0-9a-f]{16}$/);
        assert.deepEqual(alice, {
          id: alice.id,
          username: "alice",
          role: "admin",
          createdAt: 5,
          lastLoginAt: null,
        });
        const raw = await db.query<{ password_hash: string }>("SELECT password_hash FROM users");
        assert.match(raw[0]!.password_hash, /^scrypt\$/);
        assert.ok(!raw[0]!.password_hash.includes("s3cret-pass"));

        const v = await verifyUser(db, "ALICE", "s3cret-pass", 1234);
        assert.deepEqual(v, { ...alice, lastLoginAt: 1234 });
        assert.equal(await verifyUser(db, "alice", "s3cret-pasS"), undefined);
        assert.equal(await verifyUser(db, "alice", ""), undefined);
        assert.equal(await verifyUser(db, "bob", "s3cret-pass"), undefined);
        assert.equal(await verifyUser(db, "no such user!", "s3cret-pass"), undefined);
        const listed = await listUsers(db);
        assert.deepEqual(listed, [{ ...alice, lastLoginAt: 1234 }]);
        for (const u of listed) assert.ok(!("passwordHash" in u) && !("password_hash" in u));

        await assert.rejects(
          createUser(db, { username: "alice", password: "another-pass", role: "viewer" }),
          storeError("conflict"),
        );
        await assert.rejects(
          createUser(db, { username: "bob", password: "short", role: "viewer" }),
          storeError("invalid_password"),
        );
        await assert.rejects(
          createUser(db, { username: "bob smith", password: "long enough", role: "viewer" }),
          storeError("invalid_username"),
        );
        await assert.rejects(
          createUser(db, { username: "bob", password: "long enough", role: "root" as "admin" }),
          storeError("invalid_role"),
        );
        const bob = await createUser(db, { username: "bob.s_1-x", password: "12345678", role: "viewer" });
        assert.equal(bob.role, "viewer");
        assert.equal((await listUsers(db)).length, 2);
        assert.deepEqual(await getUser(db, bob.id), bob);
        assert.deepEqual(await getUser(db, "BOB.S_1-X"), bob);

        const changed = await setPassword(db, "alice", "new-password");
        assert.equal(changed.id, alice.id);
        assert.equal(await verifyUser(db, "alice", "s3cret-pass"), undefined);
        assert.equal((await verifyUser(db, "alice", "new-password"))?.id, alice.id);
        await assert.rejects(setPassword(db, "alice", "short"), storeError("invalid_password"));
        await assert.rejects(setPassword(db, "nobody", "long enough"), storeError("not_found"));

        assert.equal(await deleteUser(db, bob.id), true);
        assert.equal(await deleteUser(db, "alice"), true);
        assert.equal(await deleteUser(db, "alice"), false);
        assert.deepEqual(await listUsers(db), []);
      }));

    test("settings: upsert round-trip with nested JSON, list, delete, bad keys and values", () =>
      withFresh(engine, async (db) => {
        assert.equal(await getSetting(db, "alerts"), undefined);
        const nested = {
          email: { to: ["a@x", "b@x"], throttleMs: 60000 },
          on: true,
          ratio: 0.25,
          none: null,
        };
        await setSetting(db, "alerts", nested, 10);
        assert.deepEqual(await getSetting<typeof nested>(db, "alerts"), nested);
        await setSetting(db, "alerts", { on: false }, 20);
        assert.deepEqual(await getSetting(db, "alerts"), { on: false });
        await setSetting(db, "retention.days", 30, 30);
        await setSetting(db, "ui:theme", "dark", 40);
        await setSetting(db, "empty", [], 50);
        assert.deepEqual(await listSettings(db), [
          { key: "alerts", value: { on: false }, updatedAt: 20 },
          { key: "empty", value: [], updatedAt: 50 },
          { key: "retention.days", value: 30, updatedAt: 30 },
          { key: "ui:theme", value: "dark", updatedAt: 40 },
        ]);
        assert.equal(await deleteSetting(db, "ui:theme"), true);
        assert.equal(await deleteSetting(db, "ui:theme"), false);
        assert.equal(await getSetting(db, "ui:theme"), undefined);
        await assert.rejects(setSetting(db, "bad key", 1), storeError("invalid_key"));
        await assert.rejects(setSetting(db, "", 1), storeError("invalid_key"));
        await assert.rejects(setSetting(db, "x", undefined), storeError("invalid_value"));
        await assert.rejects(setSetting(db, "x", 10n), storeError("invalid_value"));
        const cyclic: Record<string, unknown> = {};
        cyclic["self"] = cyclic;
        await assert.rejects(setSetting(db, "x", cyclic), storeError("invalid_value"));
        assert.equal((await listSettings(db)).length, 3);
      }));

    if (engine.name === "sqlite") {
      test("backup: a consistent copy that openDatabase opens, while the source keeps taking writes", async () => {
        const out = await mkdtemp(join(tmpdir(), "maskwatch-backup-"));
        try {
          await withFresh(engine, async (db) => {
            const N = 20_000; // ~1000 pages: the backup takes several steps, writes interleave with them
            const before = await insertMany(
              db,
              Array.from({ length: N }, (_, i) =>
                ev({ at: T0 + i, trackId: i, snapshot: `snapshots/${"x".repeat(100)}/${i}.jpg` }),
              ),
            );
            await createUser(db, { username: "carol", password: "carol-pass", role: "admin" });
            await setSetting(db, "k", { v: 1 });

            // 1) a quiet backup holds exactly the same events
            const first = join(out, "one", "nested", SQLITE_FILE);
            await db.backup(first);
            assert.ok(!existsSync(`${first}.tmp`));
            const copy = await openDatabase({ dataDir: join(out, "one", "nested") });
            try {
              assert.deepEqual(
                await appliedMigrations(copy),
                migrations.map((m) => m.id),
              );
              const all = (await allPages(copy, { order: "asc", limit: 1000 })).flat();
              assert.deepEqual(all, before);
              assert.equal((await verifyUser(copy, "carol", "carol-pass"))?.username, "carol");
              assert.deepEqual(await getSetting(copy, "k"), { v: 1 });
            } finally {
              await copy.close();
            }

            // 2) writes during a backup all succeed; the copy is a consistent prefix of them
            const second = join(out, "two", SQLITE_FILE);
            const writer = async () => {
              const out: EventRecord[] = [];
              for (let i = 0; i < 200; i++) {
                out.push(await insertEvent(db, ev({ at: T0 + N + i })));
                await new Promise((r) => setImmediate(r));
              }
              return out;
            };
            const [, written] = await Promise.all([db.backup(second), writer()]);
            const source = (await allPages(db, { order: "asc", limit: 1000 })).flat();
            assert.equal(source.length, N + 200);
            assert.deepEqual(source.slice(N), written);
            const copy2 = await openDatabase({ dataDir: join(out, "two") });
            try {
              const got = (await allPages(copy2, { order: "asc", limit: 1000 })).flat();
              assert.ok(got.length >= N && got.length <= N + 200, String(got.length));
              console.log(
                `# backup during writes: the copy holds ${got.length - N} of the 200 concurrent events`,
              );
              assert.deepEqual(got, source.slice(0, got.length));
              await insertEvent(copy2, ev()); // the copy is an ordinary, writable database
            } finally {
              await copy2.close();
            }

            // overwriting an existing backup works; the source still accepts writes afterwards
            await db.backup(first);
            assert.ok((await insertEvent(db, ev())).id > N + 200);

            // 3) a backup started while another task's transaction is open waits for it to end: rolled-back
            // rows never reach the copy, committed ones do
            for (const outcome of ["rollback", "commit"] as const) {
              const file = join(out, outcome, SQLITE_FILE);
              const pending = db.transaction(async (tx) => {
                for (let i = 0; i < 50; i++) await insertEvent(tx, ev({ at: T0 + 2 * N + i }));
                await new Promise((r) => setTimeout(r, 100));
                if (outcome === "rollback") throw new Error("rolled back");
              });
              await new Promise((r) => setTimeout(r, 10));
              const [txResult] = await Promise.allSettled([pending, db.backup(file)]);
              assert.equal(txResult.status, outcome === "rollback" ? "rejected" : "fulfilled");
              const copy3 = await openDatabase({ dataDir: join(out, outcome) });
              try {
                assert.deepEqual(await eventTotals(copy3), await eventTotals(db), outcome);
              } finally {
                await copy3.close();
              }
            }

            // not inside a transaction (it would wait for itself)
            await assert.rejects(
              db.transaction((tx) => tx.backup(join(out, "three.db"))),
              /not available inside a transaction/,
            );
            await assert.rejects(
              db.transaction(() => db.backup(join(out, "three.db"))),
              /not available inside a transaction/,
            );
            assert.ok(!existsSync(join(out, "three.db")));
          });
        } finally {
          await rm(out, { recursive: true, force: true });
        }
      });
    } else {
      test("backup: PostgreSQL says to use pg_dump", () =>
        withFresh(engine, async (db) => {
          await assert.rejects(db.backup("/tmp/x/maskwatch.db"), (e: unknown) => {
            assert.ok(e instanceof BackupUnsupportedError);
            assert.match(e.message, /pg_dump "\$DATABASE_URL" > \/tmp\/x\/maskwatch\.sql/);
            return true;
          });
          await assert.rejects(
            db.transaction((tx) => tx.backup("b.sql")),
            (e: unknown) => e instanceof BackupUnsupportedError && /> b\.sql$/.test(e.message),
          );
          assert.match(new BackupUnsupportedError().message, /pg_dump "\$DATABASE_URL" > file\.sql/);
        }));
    }
  });
}
