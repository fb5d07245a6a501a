/**
 * Two replicas acting as one, on loopback as deployed: two `maskwatch serve` processes sharing
 * PostgreSQL and Redis, nginx in front with the shipped site. The rate limit holds across them, an
 * event made on one reaches the other's live stream, MJPEG and WebSockets pass through nginx from
 * either replica, and `kill -9` of the replica running a file source moves the source to the other
 * within the lease time, with every pushed event stored once and exactly one violation.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, type TestContext, test } from "node:test";
import { Redis } from "ioredis";
import pg from "pg";
import WebSocket from "ws";
import { unlessCI } from "./support/ci.ts";
import { clusterSkipReason, type Proc, startApp, startNginx, startRedis, stop } from "./support/cluster.ts";
import { ensureModels } from "./support/models.ts";
import { sharedPath } from "./support/paths.ts";
import { createTestDatabase, PG_SKIP_MESSAGE, type PgTestDatabase, pgTestUrl } from "./support/pg.ts";
import { FACES, facePatch, renderFrame, videoSkipReason, writeVideo } from "./support/video.ts";

const KEY = "cluster-bootstrap-key-0123456789";
const PHOTO = sharedPath("datasets/dlib-faces/2008_002506.jpg") ?? "";
const LEASE_MS = 3000;
const RATE_LIMIT = 120;
const pgUrl = pgTestUrl();
let skip: string | null = clusterSkipReason() ?? videoSkipReason() ?? (pgUrl ? null : PG_SKIP_MESSAGE);
if (skip) console.log(`# cluster: skipped: ${skip}`);

let dir = "";
let database: PgTestDatabase | undefined;
let sql: pg.Client | undefined;
let redisProc: (Proc & { redisUrl: string }) | undefined;
let redis: Redis | undefined;
const apps: Proc[] = [];
let nginx: Proc | undefined;
let scene = "";
let appEnv: (name: string) => Record<string, string> = () => ({});

before(async () => {
  skip ??= await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet", "blazeface-back-256"]);
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), "maskwatch-cluster-"));
  database = await createTestDatabase(pgUrl!);
  sql = new pg.Client({ connectionString: database.url });
  await sql.connect();
  redisProc = await startRedis(join(dir, "redis"));
  redis = new Redis(redisProc.redisUrl);
  // 15 s at 10 fps: two people with masks; one takes it off at 10 s.
  const [a, b, bOff] = await Promise.all([
    facePatch(FACES.maskA),
    facePatch(FACES.maskB),
    facePatch(FACES.noMaskB),
  ]);
  scene = join(dir, "scene.mkv");
  await writeVideo(scene, 150, (i) => [
    { patch: a, left: 20 + i, top: 30 },
    { patch: i < 100 ? b : bOff, left: 420 - i / 2, top: 260 },
  ]);
  appEnv = (name: string) => ({
    DATABASE_URL: database!.url,
    REDIS_URL: redisProc!.redisUrl,
    MASKWATCH_API_KEY: KEY,
    MASKWATCH_WORKERS: "1",
    MASKWATCH_LEASE_MS: String(LEASE_MS),
    MASKWATCH_RATE_LIMIT: String(RATE_LIMIT),
    MASKWATCH_TRUST_PROXY: "on",
    MASKWATCH_DATA_DIR: join(dir, name),
    MASKWATCH_SOURCE_FILE_ROOT: dir,
  });
  // One after the other: the first runs the migrations.
  apps.push(await startApp("a", appEnv("a")));
  apps.push(await startApp("b", appEnv("b")));
  nginx = await startNginx(join(dir, "nginx"), apps);
});

after(async () => {
  await stop(nginx);
  await Promise.all(apps.map((a) => stop(a)));
  redis?.disconnect();
  await stop(redisProc);
  await sql?.end();
  await database?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const api = (base: string, path: string, init: RequestInit = {}, key = KEY) =>
  fetch(base + path, {
    ...init,
    headers: {
      "x-api-key": key,
      ...(init.body ? { "content-type": "application/json" } : {}),
      ...init.headers,
    },
  });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(
  what: string,
  ms: number,
  fn: () => Promise<T | undefined | null | false>,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    assert.ok(Date.now() < deadline, `no ${what} within ${ms} ms`);
    await sleep(100);
  }
}

interface Pushed {
  id: number;
  kind: string;
  label: string;
  source_id: string;
}

/** The events an SSE stream pushes, as they come. */
function listen(base: string) {
  const events: Pushed[] = [];
  const abort = new AbortController();
  const done = (async () => {
    const res = await fetch(`${base}/api/v1/live?frames=false&api_key=${KEY}`, { signal: abort.signal });
    assert.equal(res.status, 200);
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      text += decoder.decode(chunk, { stream: true });
      for (let end = text.indexOf("\n\n"); end >= 0; end = text.indexOf("\n\n")) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        if (block.startsWith("event: event\n"))
          events.push(JSON.parse(block.slice(block.indexOf("\ndata: ") + 7)));
      }
    }
  })().catch(() => {});
  return { events, close: () => abort.abort(), done };
}

async function leaseHolder(id: string): Promise<string | null> {
  const v = await redis!.get(`maskwatch:lease:source:${id}`);
  return v ? v.split(" ")[0] : null;
}

test("through nginx: both replicas serve, and /ready checks Redis", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const ready = await (await fetch(`${nginx!.url}/ready`)).json();
  assert.equal(ready.checks.redis, "ok");
  assert.equal(ready.checks.database, "ok");
  for (const app of apps) assert.equal((await api(app.url, "/api/v1/sources")).status, 200, app.name);
});

test("settings saved on one replica apply on the other; both offer the same first-run setup code", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const put = await api(apps[0].url, "/api/v1/settings", {
    method: "PUT",
    body: JSON.stringify({ cooldown_seconds: 42 }),
  });
  assert.equal(put.status, 200);
  await until("the change on the other replica", 5000, async () => {
    const got = await (await api(apps[1].url, "/api/v1/settings")).json();
    return got.settings.cooldown_seconds === 42;
  });
  const codes = apps.map((a) => /setup code ([A-Z0-9]{4}-[A-Z0-9]{4})/.exec(a.output())?.[1]);
  assert.ok(codes[0], "the setup code is logged");
  assert.equal(codes[1], codes[0]);
});

test("the rate limit is one limit across the replicas", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const made = await (
    await api(apps[0].url, "/api/v1/keys", { method: "POST", body: JSON.stringify({ name: "rl" }) })
  ).json();
  const codes: number[] = [];
  for (let i = 0; i < RATE_LIMIT + 10; i++) {
    codes.push((await api(apps[i % 2].url, "/api/v1/models", {}, made.key)).status);
  }
  assert.equal(
    codes.filter((c) => c === 200).length,
    RATE_LIMIT,
    "each replica alone would have allowed them all",
  );
  assert.deepEqual(codes.slice(RATE_LIMIT), Array(10).fill(429));
  assert.equal((await api(nginx!.url, "/api/v1/models", {}, made.key)).status, 429, "through nginx too");
});

test("wrong API keys are counted across the replicas: a guesser cannot spread tries over them", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  // A made-up client address (trusted proxy header), so only it is blocked, not the tests' loopback.
  const from = { "x-forwarded-for": "203.0.113.77" };
  const codes: number[] = [];
  for (let i = 0; i < 24; i++) {
    codes.push(
      (await api(apps[i % 2].url, "/api/v1/models", { headers: from }, `wrong-${i}-0123456789`)).status,
    );
  }
  assert.deepEqual(codes.slice(0, 20), Array(20).fill(401), "the limit is 20 a minute (the default)");
  assert.deepEqual(codes.slice(20), Array(4).fill(429), "each replica alone has seen only 10 or 12");
  const blocked = await api(apps[1].url, "/api/v1/models", { headers: from });
  assert.equal(blocked.status, 429, "a blocked address waits, even with a good key");
  assert.equal((await api(apps[1].url, "/api/v1/models")).status, 200, "other addresses are not blocked");
});

test("MJPEG from either replica and a browser camera's WebSocket pass through nginx", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const created = await (
    await api(nginx!.url, "/api/v1/sources", {
      method: "POST",
      body: JSON.stringify({ name: "loop", kind: "file", url: scene, options: { loop: true } }),
    })
  ).json();
  assert.equal(
    (await api(nginx!.url, `/api/v1/sources/${created.id}/start`, { method: "POST" })).status,
    200,
  );
  const holder = await until("lease", 10_000, () => leaseHolder(created.id));
  try {
    // Straight from each replica: the one running it draws; the other relays it.
    for (const app of apps) {
      const res = await fetch(`${app.url}/api/v1/sources/${created.id}/mjpeg?api_key=${KEY}`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type")!, /multipart\/x-mixed-replace/);
      if (app.name !== holder)
        assert.equal(res.headers.get("x-maskwatch-replica"), holder, "relayed from the holder");
      const jpegs = await countJpegs(res, 2, 20_000);
      assert.ok(jpegs >= 2, `${app.name}: ${jpegs} JPEGs`);
    }
    const viaNginx = await fetch(`${nginx!.url}/api/v1/sources/${created.id}/mjpeg?api_key=${KEY}`);
    assert.ok((await countJpegs(viaNginx, 2, 20_000)) >= 2, "MJPEG through nginx");
  } finally {
    await api(nginx!.url, `/api/v1/sources/${created.id}`, { method: "DELETE" });
  }

  const browser = await (
    await api(nginx!.url, "/api/v1/sources", {
      method: "POST",
      body: JSON.stringify({ name: "cam", kind: "browser" }),
    })
  ).json();
  const ws = new WebSocket(
    `${nginx!.url.replace("http", "ws")}/api/v1/sources/${browser.id}/frames?api_key=${KEY}`,
  );
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const answer = new Promise<{ type: string; tracks: unknown[] }>((resolve) =>
    ws.once("message", (m) => resolve(JSON.parse(m.toString()))),
  );
  const sharp = (await import("sharp")).default;
  const frame = await renderFrame([{ patch: await facePatch(FACES.maskA), left: 100, top: 100 }]);
  ws.send(
    await sharp(frame, { raw: { width: 640, height: 480, channels: 3 } })
      .jpeg()
      .toBuffer(),
  );
  const msg = await answer;
  ws.close();
  assert.equal(msg.type, "tracks", JSON.stringify(msg));
});

async function countJpegs(res: Response, want: number, ms: number): Promise<number> {
  const reader = res.body!.getReader();
  const timer = setTimeout(() => reader.cancel(), ms);
  let bytes = Buffer.alloc(0);
  let n = 0;
  try {
    while (n < want) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes = Buffer.concat([bytes, value]);
      n = bytes.toString("latin1").split("\xff\xd8\xff").length - 1;
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => {});
  }
  return n;
}

/**
 * Start a file source, kill -9 the replica running it once `killOn` holds for an event it pushed, and
 * check the takeover: within the lease time, every pushed event stored once, exactly one violation.
 */
async function killTheHolder(t: TestContext, name: string, killOn: (e: Pushed) => boolean) {
  // Two replicas again if an earlier test killed one (the new process is reached directly, not via nginx).
  for (const [i, app] of apps.entries()) {
    if (app.child.exitCode !== null || app.child.signalCode !== null)
      apps[i] = await startApp(app.name, appEnv(app.name));
  }
  const feeds = apps.map((a) => listen(a.url));
  try {
    const created = await (
      await api(apps[0].url, "/api/v1/sources", {
        method: "POST",
        body: JSON.stringify({ name, kind: "file", url: scene, options: { loop: false } }),
      })
    ).json();
    assert.equal(
      (await api(apps[0].url, `/api/v1/sources/${created.id}/start`, { method: "POST" })).status,
      200,
    );
    const holderName = await until("lease", 10_000, () => leaseHolder(created.id));
    const holder = apps.find((a) => a.name === holderName)!;
    const other = apps.find((a) => a !== holder)!;
    const holderFeed = feeds[apps.indexOf(holder)];
    const otherFeed = feeds[apps.indexOf(other)];
    const mine = (f: { events: Pushed[] }) => f.events.filter((e) => e.source_id === created.id);

    const trigger = await until("the event to kill on", 40_000, async () => mine(holderFeed).find(killOn));
    // An event made on the holder reaches the other replica's live stream.
    await until("the same event on the other replica's stream", 5000, async () =>
      mine(otherFeed).some((e) => e.id === trigger.id),
    );
    holder.child.kill("SIGKILL");
    const killedAt = Date.now();
    await holder.exited;
    await until(
      "takeover by the other replica",
      LEASE_MS + 5000,
      async () => (await leaseHolder(created.id)) === other.name,
    );
    t.diagnostic(
      `${name}: killed ${holder.name} after its ${trigger.kind}; ${other.name} took the source after ${Date.now() - killedAt} ms (lease ${LEASE_MS} ms)`,
    );
    await until("the source's status naming the new replica", 5000, async () => {
      const view = await (await api(other.url, `/api/v1/sources/${created.id}`)).json();
      return view.status.replica === other.name && view.status.state !== "stopped";
    });
    // The new replica reads the file again; once it ends, the source is done, not read again.
    await until("the file's end", 60_000, async () => {
      const r = await sql!.query("SELECT enabled FROM sources WHERE id = $1", [created.id]);
      return r.rows[0].enabled === 0 || r.rows[0].enabled === false;
    });
    const stored = await sql!.query("SELECT id, kind, label FROM events WHERE source_id = $1", [created.id]);
    const ids = new Set(stored.rows.map((r) => Number(r.id)));
    for (const e of [...mine(holderFeed), ...mine(otherFeed)])
      assert.ok(ids.has(e.id), `event ${e.id} was pushed but is not stored`);
    assert.ok(
      mine(otherFeed).some((e) => !mine(holderFeed).some((h) => h.id === e.id)),
      "the new replica made events",
    );
    const violations = stored.rows.filter((r) => r.kind === "violation");
    assert.equal(violations.length, 1, `exactly one violation: ${JSON.stringify(stored.rows)}`);
    assert.equal(violations[0].label, "no_mask");
  } finally {
    for (const f of feeds) f.close();
  }
}

test("kill -9 of the replica running a file source before the violation: the other takes it and raises it once", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  await killTheHolder(t, "door", (e) => e.kind === "observation");
});

test("kill -9 right after the violation: the replay does not raise it again", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  await killTheHolder(t, "gate", (e) => e.kind === "violation");
});

test("Redis going away takes no replica down: detection still answers, /ready says what is missing", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const alive = apps.filter((a) => a.child.exitCode === null && a.child.signalCode === null);
  assert.ok(alive.length >= 1);
  await stop(redisProc);
  for (const app of alive) {
    const ready = await (await fetch(`${app.url}/ready`)).json();
    assert.match(ready.checks.redis, /unreachable/, app.name);
    assert.equal(ready.status, "ok", "models and database are what readiness needs");
    const r = await api(app.url, "/api/v1/detect?detector=blazeface", {
      method: "POST",
      headers: { "content-type": "image/jpeg" },
      body: await (await import("node:fs/promises")).readFile(PHOTO),
    });
    assert.equal(r.status, 200, `${app.name}: ${await r.text()}`);
  }
  await sleep(1500);
  for (const app of alive) assert.equal(app.child.exitCode, null, `${app.name} is still running`);
});
