/**
 * Events are committed before they are pushed: the real `maskwatch serve` process watches a
 * scene video on a loop, and is killed with SIGKILL as soon as the SSE feed has pushed an event.
 * Every event pushed must then be in the SQLite file, field for field, with its snapshot.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { type Database, openDatabase } from "../src/store/db.ts";
import { getEvent, getSnapshot, SNAPSHOT_IN_DATABASE } from "../src/store/events.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { REPO } from "./support/paths.ts";
import { maskOffScene, videoSkipReason, writeVideo } from "./support/video.ts";

let skip: string | null = videoSkipReason();
if (skip) console.log(`# monitor-kill: skipped: ${skip}`);
let dir = "";
let video = "";
const children: ChildProcess[] = [];
const dbs: Database[] = [];

before(async () => {
  skip ??= await ensureModels(["blazeface-back-256"]);
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), "maskwatch-kill-"));
  video = join(dir, "scene.mkv");
  const { count, scene } = await maskOffScene();
  await writeVideo(video, count, scene);
});

after(async () => {
  for (const child of children) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }
  for (const db of dbs) await db.close();
  // An ffmpeg the server left behind would still be reading the video.
  for (const pid of await processesUsing(video)) process.kill(pid, "SIGKILL");
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Processes (other than this one) whose command line mentions `path`. */
async function processesUsing(path: string): Promise<number[]> {
  if (!path) return [];
  const pids: number[] = [];
  for (const name of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "");
    if (cmdline.split("\0").includes(path)) pids.push(Number(name));
  }
  return pids;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Settles with `p`, or rejects after `ms` saying what was awaited. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

interface PushedEvent {
  id: number;
  time: string;
  source_id: string;
  track_id: number;
  kind: string;
  label: string;
  confidence: number;
  box: number[];
  snapshot_url: string | null;
}

/**
 * Runs `maskwatch serve` on the looping scene, SIGKILLs it as soon as the SSE feed has pushed an
 * event `killOn` accepts, and checks every pushed event against the database file.
 */
async function killDuringEvents(
  t: { diagnostic(message: string): void },
  name: string,
  killOn: (e: PushedEvent) => boolean,
): Promise<PushedEvent[]> {
  const started = Date.now();
  const dataDir = join(dir, `data-${name}`);
  const proc = spawn(process.execPath, [join(REPO, "bin/maskwatch.js"), "serve"], {
    cwd: dir, // no .env here
    env: {
      ...process.env,
      PORT: "0",
      HOST: "127.0.0.1",
      MASKWATCH_DATA_DIR: dataDir,
      DATABASE_URL: "", // SQLite, whatever the environment says
      MASKWATCH_AUTH: "off",
      MASKWATCH_API_KEY: "",
      APP_TOKEN: "",
      MASKWATCH_SOURCE: video,
      MASKWATCH_WORKERS: "1",
      MASKWATCH_DETECTOR: "blazeface", // the only model the live loop needs
      MASKWATCH_LOG_FILE: "",
      MASKWATCH_RETENTION_DAYS: "0",
      LOG_LEVEL: "info",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(proc);
  let stderr = "";
  proc.stderr!.on("data", (c) => {
    stderr += c;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => resolve({ code, signal })),
  );

  // The port (PORT=0) comes from Fastify's "Server listening at …" log line.
  const lines = createInterface({ input: proc.stdout! });
  const base = await within(
    Promise.race([
      new Promise<string>((resolve) => {
        lines.on("line", (line) => {
          const url = /"msg":"Server listening at (http:\/\/127\.0\.0\.1:\d+)"/.exec(line)?.[1];
          if (url) resolve(url);
        });
      }),
      exited.then(({ code, signal }) => {
        throw new Error(`serve exited (${signal ?? code}) before listening: ${stderr}`);
      }),
    ]),
    30_000,
    "the server to listen",
  );
  for (;;) {
    const r = await fetch(`${base}/ready`).catch(() => null);
    if (r?.status === 200) break;
    assert.ok(Date.now() - started < 30_000, `the models did not load: ${stderr}`);
    await sleep(100);
  }

  // As fast as the analysis goes, round and round: new people (tracks), new events, all the time.
  const patched = await fetch(`${base}/api/v1/sources/default`, {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ options: { realtime: false, loop: true } }),
  });
  assert.equal(patched.status, 200, await patched.text());

  const sse = await fetch(`${base}/api/v1/live?frames=false`);
  assert.equal(sse.status, 200);
  assert.equal(sse.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const reader = sse.body!.getReader();
  const start = await fetch(`${base}/start_detection`, { method: "POST" });
  assert.equal(start.status, 200, await start.text());

  // Read the feed; the moment an event is pushed, SIGKILL. Whatever was already on its way to us is
  // read too (every pushed event was committed first), until the dead server's socket closes.
  const pushed: PushedEvent[] = [];
  let text = "";
  let killedAt = 0;
  const decoder = new TextDecoder();
  await within(
    (async () => {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (killedAt) break; // the connection died with the server
          throw err;
        }
        if (chunk.done) break;
        text += decoder.decode(chunk.value, { stream: true });
        let end = text.indexOf("\n\n");
        while (end >= 0) {
          const block = text.slice(0, end);
          text = text.slice(end + 2);
          end = text.indexOf("\n\n");
          if (!block.startsWith("event: event\n")) continue;
          pushed.push(JSON.parse(block.slice(block.indexOf("\ndata: ") + 7)) as PushedEvent);
          if (!killedAt && killOn(pushed.at(-1)!)) {
            proc.kill("SIGKILL");
            killedAt = Date.now();
          }
        }
      }
    })(),
    45_000,
    `the event to kill on (pushed so far: ${JSON.stringify(pushed)}; stderr: ${stderr.slice(-500)})`,
  );
  assert.ok(killedAt, "the feed ended before the event to kill on was pushed");
  const exit = await within(exited, 10_000, "the server to die");
  assert.deepEqual(exit, { code: null, signal: "SIGKILL" }, "killed, not shut down");
  t.diagnostic(
    `${name}: ${pushed.map((e) => e.kind).join(", ")} pushed; killed ${killedAt - started} ms after spawn`,
  );

  // The orphaned ffmpeg dies of the broken pipe.
  const deadline = Date.now() + 10_000;
  while ((await processesUsing(video)).length) {
    assert.ok(Date.now() < deadline, "ffmpeg is still running after the server died");
    await sleep(100);
  }

  // The database as the next start would open it (SQLite recovers its WAL).
  const db = await openDatabase({ dataDir });
  dbs.push(db);
  assert.deepEqual(await db.query("PRAGMA integrity_check"), [{ integrity_check: "ok" }]);
  assert.ok(pushed.length >= 1);
  assert.equal(new Set(pushed.map((e) => e.id)).size, pushed.length, "no id pushed twice");
  for (const e of pushed) {
    const stored = await getEvent(db, e.id);
    assert.ok(stored, `event ${e.id} was pushed but is not in the database`);
    assert.deepEqual(
      {
        id: stored.id,
        time: new Date(stored.at).toISOString(),
        source_id: stored.sourceId,
        track_id: stored.trackId,
        kind: stored.kind,
        label: stored.label,
        confidence: stored.confidence,
        box: stored.box,
        zone: stored.zone ?? null,
        snapshot_url: stored.snapshot ? `/api/v1/events/${stored.id}/snapshot` : null,
        has_frame: stored.hasFrame,
        frame_url: stored.hasFrame ? `/api/v1/events/${stored.id}/frame` : null,
        acknowledged_at: null,
        acknowledged_by: null,
      },
      e,
    );
    assert.equal(e.source_id, "default");
    assert.equal(e.kind === "violation", e.label !== "mask");
    if (stored.snapshot) {
      assert.equal(stored.snapshot, SNAPSHOT_IN_DATABASE);
      const jpeg = await getSnapshot(db, e.id);
      assert.ok(jpeg, `the snapshot of event ${e.id} was committed with it`);
      assert.equal((await sharp(jpeg).metadata()).format, "jpeg");
    }
  }
  const [{ n }] = await db.query<{ n: number }>("SELECT COUNT(*) AS n FROM events");
  assert.ok(Number(n) >= pushed.length);
  return pushed;
}

test("the first event pushed over SSE survives kill -9 of the server", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const pushed = await killDuringEvents(t, "first", () => true);
  assert.ok(pushed.length >= 1);
});

test("a violation pushed over SSE survives kill -9, with its snapshot", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const pushed = await killDuringEvents(t, "violation", (e) => e.kind === "violation");
  const violation = pushed.find((e) => e.kind === "violation")!;
  assert.equal(violation.label, "no_mask");
  assert.ok(violation.snapshot_url, "snapshots are on by default");
  assert.ok(
    pushed.some((e) => e.kind === "observation"),
    "the people were observed first",
  );
});
