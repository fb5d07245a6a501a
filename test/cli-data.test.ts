/** `maskwatch backup` and `maskwatch prune` run as a user runs them, on a real SQLite database. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { openDatabase } from "../src/store/db.ts";
import { getSnapshot, insertEvent, listEvents, SNAPSHOT_IN_DATABASE } from "../src/store/events.ts";
import { REPO } from "./support/paths.ts";

const BIN = join(REPO, "bin/maskwatch.js");
const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function run(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: REPO, env: { ...process.env, DATABASE_URL: "", ...env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const DAY = 86_400_000;

test("backup copies the live database; prune deletes old events with their snapshots", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "maskwatch-cli-data-"));
  dirs.push(dataDir);
  const db = await openDatabase({ dataDir });
  const now = Date.now();
  const event = (at: number, snapshot: string | null) => ({
    at,
    sourceId: "cam",
    trackId: 1,
    kind: "violation" as const,
    label: "no_mask" as const,
    confidence: 0.9,
    box: [1, 2, 3, 4] as [number, number, number, number],
    snapshot,
  });
  await mkdir(join(dataDir, "snapshots/cam"), { recursive: true });
  await writeFile(join(dataDir, "snapshots/cam/old.jpg"), "x");
  await writeFile(join(dataDir, "snapshots/cam/new.jpg"), "x");
  await insertEvent(db, event(now - 40 * DAY, "snapshots/cam/old.jpg"));
  await insertEvent(db, event(now - 1000, "snapshots/cam/new.jpg"));
  // Snapshots kept in the database go with their events.
  const jpeg = new Uint8Array([0xff, 0xd8, 0xff, 0xd9]);
  const oldInDb = await insertEvent(db, event(now - 41 * DAY, null), jpeg);
  const newInDb = await insertEvent(db, event(now - 2000, null), jpeg);

  // The database stays open (as under a running server) while it is copied.
  const target = join(dataDir, "copy", "backup.db");
  const backup = await run(["backup", target], { MASKWATCH_DATA_DIR: dataDir });
  assert.equal(backup.code, 0, backup.stderr);
  assert.equal(backup.stdout.trim(), target);
  const { default: Sqlite } = await import("better-sqlite3");
  const raw = new Sqlite(target, { readonly: true });
  assert.equal((raw.prepare("SELECT COUNT(*) AS n FROM events").get() as { n: number }).n, 4);
  assert.equal((raw.prepare("SELECT COUNT(*) AS n FROM snapshots").get() as { n: number }).n, 2);
  raw.close();

  const bad = await run(["prune", "--days", "0"], { MASKWATCH_DATA_DIR: dataDir });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--days/);

  const pruned = await run(["prune", "--days", "30"], { MASKWATCH_DATA_DIR: dataDir });
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.match(pruned.stdout, /deleted 2 events \(with their snapshots; 1 snapshot files\)/);
  const left = await listEvents(db, { order: "asc" });
  assert.deepEqual(
    left.events.map((e) => e.snapshot),
    [SNAPSHOT_IN_DATABASE, "snapshots/cam/new.jpg"],
  );
  assert.equal(await getSnapshot(db, oldInDb.id), undefined);
  assert.deepEqual(new Uint8Array((await getSnapshot(db, newInDb.id))!), jpeg);
  assert.equal(existsSync(join(dataDir, "snapshots/cam/old.jpg")), false);
  assert.equal(existsSync(join(dataDir, "snapshots/cam/new.jpg")), true);
  await db.close();
});

test("maskwatch users: add, list, reset a locked-out admin's password (ending sessions), remove", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "maskwatch-cli-users-"));
  dirs.push(dataDir);
  const env = { MASKWATCH_DATA_DIR: dataDir };
  const add = await run(["users", "add", "Boss", "--role", "admin"], {
    ...env,
    MASKWATCH_PASSWORD: "boss-pass-1",
  });
  assert.equal(add.code, 0, add.stderr);
  assert.equal(add.stdout, "added boss (admin)\n");
  const short = await run(["users", "add", "pat"], { ...env, MASKWATCH_PASSWORD: "short" });
  assert.equal(short.code, 1);
  assert.match(short.stderr, /password/);
  assert.equal((await run(["users", "add", "pat"], { ...env, MASKWATCH_PASSWORD: "pat-pass-12" })).code, 0);
  const list = await run(["users", "list"], env);
  assert.match(list.stdout, /^boss\tadmin\tnever signed in\npat\tviewer\tnever signed in\n$/);

  const db = await openDatabase({ dataDir });
  const { createSession, findSession } = await import("../src/store/sessions.ts");
  const { getUser, verifyUser } = await import("../src/store/users.ts");
  const boss = (await getUser(db, "boss"))!;
  const { token } = await createSession(db, boss.id, { ttlMs: 60_000 });
  const reset = await run(["users", "password", "boss"], { ...env, MASKWATCH_PASSWORD: "new-boss-pass" });
  assert.equal(reset.code, 0, reset.stderr);
  assert.equal(reset.stdout, "password of boss set; 1 sessions ended\n");
  assert.equal(await findSession(db, token, { ttlMs: 60_000 }), undefined);
  assert.ok(await verifyUser(db, "boss", "new-boss-pass"));

  const last = await run(["users", "remove", "boss"], env);
  assert.equal(last.code, 1);
  assert.match(last.stderr, /last admin/);
  assert.equal((await run(["users", "remove", "pat"], env)).stdout, "removed pat\n");
  assert.equal((await run(["users", "remove", "nobody"], env)).code, 1);
  await db.close();
});
