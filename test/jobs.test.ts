/**
 * Batch jobs against the real server: a zip of images (one broken) and a video (made with ffmpeg from dataset
 * photos) analysed in the background with progress, the same faces as /api/v1/detect gives, results per image
 * and per frame; bad inputs refused with clear 4xx; server folders for admins under MASKWATCH_JOBS_ROOT; the
 * in-process queue (one job at a time, cancel, a job interrupted by a stop resumed at the next start); and two
 * replicas sharing PostgreSQL and a real Redis (BullMQ): a job posted to one is readable from the other, and a
 * job whose replica stops mid-way is finished by the other.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { zipSync } from "fflate";
import { loadConfig } from "../src/server/config.ts";
import { type RunningServer, startServer } from "../src/server/main.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { sharedPath } from "./support/paths.ts";
import { createTestSchema, PG_SKIP_MESSAGE, type PgTestSchema, pgTestUrl } from "./support/pg.ts";
import { maskOffScene, videoSkipReason, writeVideo } from "./support/video.ts";

const KEY = "jobs-test-bootstrap-key-0123456789";
const MAX_BYTES = 8 * 1024 * 1024;
const PHOTOS = ["2008_002506.jpg", "2008_001322.jpg", "2009_004587.jpg"];

let skip: string | null = videoSkipReason();
if (!skip && !sharedPath("datasets/dlib-faces/2008_002506.jpg")) skip = "the dlib-faces dataset is absent";
if (skip) console.log(`# jobs: skipped: ${skip}`);

let dir = "";
let video = "";
let photos: Buffer[] = [];
let server: RunningServer | undefined;

before(async () => {
  skip ??= await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet", "blazeface-back-256"]);
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), "maskwatch-jobs-"));
  photos = await Promise.all(PHOTOS.map((p) => readFile(sharedPath("datasets/dlib-faces", p)!)));
  video = join(dir, "scene.mkv");
  const { count, scene } = await maskOffScene(); // 6 s at 10 fps; B hidden at 1.5 s, unmasked from 3 s
  await writeVideo(video, count, scene);
  await mkdir(join(dir, "root/photos/sub"), { recursive: true });
  await mkdir(join(dir, "outside"), { recursive: true });
  await copyFile(sharedPath("datasets/dlib-faces", PHOTOS[0])!, join(dir, "root/photos", PHOTOS[0]));
  await copyFile(sharedPath("datasets/dlib-faces", PHOTOS[1])!, join(dir, "root/photos/sub", PHOTOS[1]));
  await copyFile(sharedPath("datasets/dlib-faces", PHOTOS[2])!, join(dir, "outside", PHOTOS[2]));
  server = await serve("single");
});

after(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function serve(name: string, env: Record<string, string> = {}): Promise<RunningServer> {
  return startServer(
    loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "error",
      MASKWATCH_API_KEY: KEY,
      MASKWATCH_RATE_LIMIT: "1000000",
      MASKWATCH_WORKERS: "2",
      MASKWATCH_DATA_DIR: join(dir, name),
      MASKWATCH_JOB_MAX_BYTES: String(MAX_BYTES),
      MASKWATCH_JOBS_ROOT: join(dir, "root"),
      ...env,
    }),
  );
}

// biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
type Json = any;

async function call(base: string, path: string, init: RequestInit & { key?: string } = {}) {
  const headers = new Headers(init.headers);
  headers.set("x-api-key", init.key ?? KEY);
  if (typeof init.body === "string") headers.set("content-type", "application/json");
  const res = await fetch(base + path, { ...init, headers });
  const text = await res.text();
  let body: Json = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, body, headers: res.headers };
}

function upload(bytes: Uint8Array, name: string, type: string, field = "file"): FormData {
  const form = new FormData();
  form.append(field, new Blob([new Uint8Array(bytes)], { type }), name);
  return form;
}

const post = (base: string, query: string, body: FormData | string, key?: string) =>
  call(base, `/api/v1/jobs${query}`, { method: "POST", body, key });

/** Polls the job until it ends, keeping every progress seen. */
async function waitDone(base: string, id: string, ms = 30_000) {
  const seen: { state: string; done: number; total: number | null }[] = [];
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await call(base, `/api/v1/jobs/${id}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    seen.push({ state: r.body.state, ...r.body.progress });
    if (!["queued", "active"].includes(r.body.state)) return { job: r.body, seen };
    if (Date.now() > deadline) throw new Error(`job ${id} still ${r.body.state} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const photosZip = () =>
  zipSync({
    [`set/${PHOTOS[0]}`]: photos[0],
    "set/broken.jpg": photos[1].subarray(0, 300),
    "set/sub/": new Uint8Array(0),
    [`set/sub/${PHOTOS[1]}`]: photos[1],
    [`__MACOSX/set/._${PHOTOS[0]}`]: new Uint8Array(200),
    "set/.hidden.jpg": photos[2],
    "set/notes.txt": new TextEncoder().encode("not an image"),
    [PHOTOS[2].toUpperCase().replace(".JPG", ".JPEG")]: [photos[2], { level: 0 }],
  });

describe("one server, in-process queue (SQLite)", () => {
  test("a zip of images: every image analysed as /api/v1/detect would, the broken one an error of its own", async (t) => {
    if (skip) return t.skip(unlessCI(skip));
    const base = server!.url;
    const created = await post(
      base,
      "?mask=true&min_face_size=20",
      upload(photosZip(), "photos.zip", "application/zip"),
    );
    assert.equal(created.status, 202, JSON.stringify(created.body));
    const job = created.body;
    assert.match(job.id, /^job_[0-9a-f]{16}$/);
    assert.equal(created.headers.get("location"), `/api/v1/jobs/${job.id}`);
    assert.deepEqual(
      { kind: job.kind, state: job.state, progress: job.progress, input: job.input },
      { kind: "images", state: "queued", progress: { done: 0, total: null }, input: job.input },
    );
    assert.equal(job.input.name, "photos.zip");
    assert.deepEqual(job.options, { mask: true, min_face_size: 20, detector: "maskwatch" });
    assert.deepEqual(job.links, {
      self: `/api/v1/jobs/${job.id}`,
      results: `/api/v1/jobs/${job.id}/results`,
    });

    const { job: done, seen } = await waitDone(base, job.id);
    assert.equal(done.state, "completed", done.error);
    assert.deepEqual(done.progress, { done: 4, total: 4 });
    assert.equal(done.failed_items, 1);
    assert.equal(done.attempts, 1);
    assert.ok(done.started_at && done.finished_at && done.duration_ms >= 0);
    for (let i = 1; i < seen.length; i++)
      assert.ok(seen[i].done >= seen[i - 1].done, "progress never goes back");

    const results = await call(base, `/api/v1/jobs/${job.id}/results`);
    assert.equal(results.status, 200);
    const items: Json[] = results.body.results;
    assert.deepEqual(
      items.map((r) => [r.index, r.name]),
      [
        [0, `set/${PHOTOS[0]}`],
        [1, "set/broken.jpg"],
        [2, `set/sub/${PHOTOS[1]}`],
        [3, "2009_004587.JPEG"],
      ],
    );
    assert.equal(results.body.next_cursor, null);
    assert.match(items[1].error.code, /image/);
    assert.equal(items[1].faces, undefined);
    assert.equal(items[0].faces.length, 3, "2008_002506.jpg has three faces");
    // The same faces, boxes and mask labels as one request to /api/v1/detect with the same options.
    let total = 0;
    for (const [i, photo] of [
      [0, photos[0]],
      [2, photos[1]],
      [3, photos[2]],
    ] as const) {
      const direct = await call(base, "/api/v1/detect?mask=true&min_face_size=20", {
        method: "POST",
        body: upload(photo, "p.jpg", "image/jpeg"),
      });
      assert.equal(direct.status, 200);
      assert.deepEqual(items[i].faces, direct.body.faces, items[i].name);
      assert.deepEqual([items[i].width, items[i].height], [direct.body.width, direct.body.height]);
      total += direct.body.faces.length;
    }
    assert.equal(done.faces, total);
    // Paging.
    const page = await call(base, `/api/v1/jobs/${job.id}/results?limit=3`);
    assert.deepEqual(
      page.body.results.map((r: Json) => r.index),
      [0, 1, 2],
    );
    assert.equal(page.body.next_cursor, 2);
    const rest = await call(base, `/api/v1/jobs/${job.id}/results?limit=3&cursor=2`);
    assert.deepEqual(
      rest.body.results.map((r: Json) => r.index),
      [3],
    );
  });

  test("a video: one result per sampled frame with its time; 409 before the end", async (t) => {
    if (skip) return t.skip(unlessCI(skip));
    const base = server!.url;
    const bytes = await readFile(video);
    const created = await post(
      base,
      "?detector=blazeface&fps=2&mask=true",
      upload(bytes, "scene.mkv", "video/x-matroska"),
    );
    assert.equal(created.status, 202, JSON.stringify(created.body));
    assert.equal(created.body.kind, "video");
    assert.deepEqual(created.body.options, { detector: "blazeface", fps: 2, mask: true, max_width: 1280 });
    const early = await call(base, `/api/v1/jobs/${created.body.id}/results`);
    assert.equal(early.status, 409);
    assert.equal(early.body.code, "job_not_finished");

    const { job, seen } = await waitDone(base, created.body.id);
    assert.equal(job.state, "completed", job.error);
    for (let i = 1; i < seen.length; i++)
      assert.ok(seen[i].done >= seen[i - 1].done, "progress never goes back");
    const { body } = await call(base, `/api/v1/jobs/${job.id}/results`);
    const frames: Json[] = body.results;
    assert.equal(frames.length, 12, "6 s at 2 frames per second");
    assert.deepEqual(job.progress, { done: 12, total: 12 });
    frames.forEach((f, i) => {
      assert.equal(f.index, i);
      assert.equal(f.time_s, i / 2);
      assert.deepEqual([f.width, f.height], [640, 480]);
    });
    const counts = frames.map((f) => f.faces.length);
    assert.equal(counts[3], 1, "B is hidden at 1.5 s");
    assert.deepEqual(
      counts.filter((_, i) => i !== 3),
      Array(11).fill(2),
    );
    // Before 3 s both wear masks; after, B has taken it off.
    const labels = (f: Json) => f.faces.map((x: Json) => x.mask.label).sort();
    assert.deepEqual(labels(frames[0]), ["mask", "mask"]);
    assert.deepEqual(labels(frames[11]), ["mask", "no_mask"]);
    assert.equal(job.faces, 23);
  });

  test("bad inputs are refused before queueing, with clear 4xx", async (t) => {
    if (skip) return t.skip(unlessCI(skip));
    const base = server!.url;
    const zip = zipSync({ "a.jpg": photos[0] });
    // A zip whose directory declares 3.9 GB per image: a bomb, refused from its declared sizes.
    const bomb = zipSync({ "a.jpg": photos[0], "b.jpg": photos[1] });
    const view = new DataView(bomb.buffer, bomb.byteOffset, bomb.byteLength);
    for (let at = 0; at + 4 <= bomb.length; at++)
      if (view.getUint32(at, true) === 0x02014b50) view.setUint32(at + 24, 0xfffffff0, true);
    const many: Record<string, Uint8Array> = {};
    for (let i = 0; i <= 10_000; i++) many[`f${i}.jpg`] = new Uint8Array(0);
    const cases: [string, () => ReturnType<typeof call>, number, string][] = [
      [
        "not a zip",
        () => post(base, "", upload(new TextEncoder().encode("hello"), "photos.zip", "application/zip")),
        400,
        "invalid_zip",
      ],
      [
        "a text file",
        () => post(base, "", upload(new TextEncoder().encode("hello"), "notes.txt", "text/plain")),
        415,
        "unsupported_media_type",
      ],
      [
        "a zip without images",
        () => post(base, "", upload(zipSync({ "a.txt": new Uint8Array(3) }), "x.zip", "application/zip")),
        400,
        "no_images",
      ],
      ["a zip bomb", () => post(base, "", upload(bomb, "bomb.zip", "application/zip")), 413, "zip_too_large"],
      [
        "10 001 images",
        () => post(base, "", upload(zipSync(many), "many.zip", "application/zip")),
        400,
        "too_many_files",
      ],
      [
        "too large",
        () => post(base, "", upload(new Uint8Array(MAX_BYTES + 1024), "big.mp4", "video/mp4")),
        413,
        "input_too_large",
      ],
      [
        "empty",
        () => post(base, "", upload(new Uint8Array(0), "a.zip", "application/zip")),
        400,
        "empty_file",
      ],
      [
        "wrong field",
        () => post(base, "", upload(zip, "a.zip", "application/zip", "image")),
        400,
        "wrong_field",
      ],
      [
        "unknown option",
        () => post(base, "?colour=red", upload(zip, "a.zip", "application/zip")),
        400,
        "invalid_parameters",
      ],
      [
        "annotate",
        () => post(base, "?annotate=true", upload(zip, "a.zip", "application/zip")),
        400,
        "invalid_parameters",
      ],
      [
        "fps on images",
        () => post(base, "?fps=2", upload(zip, "a.zip", "application/zip")),
        400,
        "invalid_parameters",
      ],
      [
        "fps over 30",
        () => post(base, "?fps=60", upload(zip, "v.mp4", "video/mp4")),
        400,
        "invalid_parameters",
      ],
      [
        "mask_threshold alone",
        () => post(base, "?mask_threshold=0.5", upload(zip, "a.zip", "application/zip")),
        400,
        "invalid_parameters",
      ],
      [
        "stage thresholds for blazeface",
        () => post(base, "?detector=blazeface&threshold_pnet=0.5", upload(zip, "a.zip", "application/zip")),
        400,
        "invalid_parameters",
      ],
      [
        "raw body",
        () =>
          call(base, "/api/v1/jobs", {
            method: "POST",
            body: zip,
            headers: { "content-type": "application/zip" },
          }),
        415,
        "unsupported_media_type",
      ],
      ["JSON without folder", () => post(base, "", JSON.stringify({ mask: true })), 400, "missing_folder"],
    ];
    for (const [what, send, status, code] of cases) {
      const r = await send();
      assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
      assert.deepEqual(Object.keys(r.body).sort(), ["code", "message", "status"], what);
      assert.equal(r.body.code, code, `${what}: ${r.body.message}`);
      assert.ok(r.body.message.length > 10, what);
    }
    // Nothing was queued by any of them.
    const list = await call(base, "/api/v1/jobs?limit=500");
    assert.equal(
      list.body.jobs.filter((j: Json) => j.kind === "images" && j.input.name !== "photos.zip").length,
      0,
    );
    // Unknown job; no container or a playlist is refused up front; a video ffmpeg cannot read is a
    // failed job with the reason.
    assert.equal((await call(base, "/api/v1/jobs/job_0000000000000000")).body.code, "job_not_found");
    for (const [text, name] of [
      ["not a video at all", "clip.mp4"],
      ["#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "list.m3u8"],
      ["#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "clip.mp4"],
    ]) {
      const refused = await post(base, "", upload(new TextEncoder().encode(text), name, "video/mp4"));
      assert.equal(refused.status, 415, JSON.stringify(refused.body));
      assert.equal(refused.body.code, "unsupported_video");
    }
    const mp4Header = Buffer.concat([
      Buffer.from([0, 0, 0, 0x18]),
      Buffer.from("ftypmp42"),
      Buffer.alloc(64, 7),
    ]);
    const junk = await post(base, "", upload(new Uint8Array(mp4Header), "clip.mp4", "video/mp4"));
    assert.equal(junk.status, 202, JSON.stringify(junk.body));
    const { job } = await waitDone(base, junk.body.id);
    assert.equal(job.state, "failed");
    assert.match(job.error, /^the video cannot be read: clip\.mp4: /);
    assert.equal((await call(base, `/api/v1/jobs/${job.id}/results`)).body.results.length, 0);
  });

  test("server folders: admins only, under MASKWATCH_JOBS_ROOT; packed at once, so any replica can run them", async (t) => {
    if (skip) return t.skip(unlessCI(skip));
    const base = server!.url;
    const made = await call(base, "/api/v1/keys", {
      method: "POST",
      body: JSON.stringify({ name: "batch", scopes: ["detect"] }),
    });
    assert.equal(made.status, 201);
    const detectKey: string = made.body.key;
    const folder = (path: string, key?: string, extra = {}) =>
      post(base, "", JSON.stringify({ folder: path, ...extra }), key);

    const notAdmin = await folder(join(dir, "root/photos"), detectKey);
    assert.equal(notAdmin.status, 403);
    assert.equal(notAdmin.body.code, "forbidden");
    const outside = await folder(join(dir, "outside"));
    assert.equal(outside.status, 403);
    assert.equal(outside.body.code, "folder_not_allowed");
    const dotdot = await folder(join(dir, "root/../outside"));
    assert.equal(dotdot.body.code, "folder_not_allowed");
    assert.equal((await folder("root/photos")).body.code, "invalid_folder");
    assert.equal((await folder(join(dir, "root/missing"))).body.code, "invalid_folder");
    assert.equal(
      (await folder(join(dir, "root/photos"), undefined, { fps: 1 })).body.code,
      "invalid_parameters",
    );
    assert.equal(
      (await folder(join(dir, "root/photos"), undefined, { colour: 1 })).body.code,
      "invalid_parameters",
    );

    // A subfolder the server cannot read is a 400 naming it, not a 500. Permissions do not stop root
    // (CI runs as root), so the subfolder is one whose path is longer than the system allows.
    const deep = join(dir, "root/deep");
    await mkdir(deep);
    const level = "d".repeat(250);
    spawnSync("bash", [
      "-c",
      `cd "$1" && for i in $(seq 18); do mkdir ${level} && cd ${level}; done`,
      "_",
      deep,
    ]);
    const unreadable = await folder(deep);
    spawnSync("rm", ["-rf", deep]);
    assert.equal(unreadable.status, 400, JSON.stringify(unreadable.body));
    assert.equal(unreadable.body.code, "unreadable_folder");
    assert.match(unreadable.body.message, /ENAMETOOLONG/);

    const ok = await folder(join(dir, "root/photos"), undefined, { min_face_size: 20 });
    assert.equal(ok.status, 202, JSON.stringify(ok.body));
    const { job } = await waitDone(base, ok.body.id);
    assert.equal(job.state, "completed");
    const { body } = await call(base, `/api/v1/jobs/${job.id}/results`);
    assert.deepEqual(
      body.results.map((r: Json) => r.name),
      [PHOTOS[0], `sub/${PHOTOS[1]}`],
    );
    assert.equal(body.results[0].faces.length, 3);

    // A detect key sees its own jobs only; admins see every job.
    const mine = await post(
      base,
      "",
      upload(zipSync({ "a.jpg": photos[0] }), "mine.zip", "application/zip"),
      detectKey,
    );
    assert.equal(mine.status, 202);
    await waitDone(base, mine.body.id);
    const theirs = await call(base, "/api/v1/jobs", { key: detectKey });
    assert.deepEqual(
      theirs.body.jobs.map((j: Json) => j.id),
      [mine.body.id],
    );
    assert.equal((await call(base, `/api/v1/jobs/${job.id}`, { key: detectKey })).status, 404);
    const all = await call(base, "/api/v1/jobs?limit=2");
    assert.equal(all.body.jobs[0].id, mine.body.id, "newest first");
    assert.equal(all.body.jobs[1].id, job.id);
    const next = await call(base, `/api/v1/jobs?limit=2&cursor=${all.body.next_cursor}`);
    assert.ok(next.body.jobs.length >= 1);
    assert.ok(!next.body.jobs.some((j: Json) => [mine.body.id, job.id].includes(j.id)));
  });

  test("one job at a time, with progress while it runs; DELETE cancels a running job and the next one starts", async (t) => {
    if (skip) return t.skip(unlessCI(skip));
    const base = server!.url;
    const bytes = await readFile(video);
    const first = await post(base, "?fps=10", upload(bytes, "scene.mkv", "video/x-matroska"));
    const second = await post(
      base,
      "",
      upload(zipSync({ "a.jpg": photos[0] }), "next.zip", "application/zip"),
    );
    assert.equal(first.status, 202);
    assert.equal(second.status, 202);
    // Wait until the video is running and has done a few frames; the zip waits meanwhile.
    for (;;) {
      const [a, b] = await Promise.all([
        call(base, `/api/v1/jobs/${first.body.id}`),
        call(base, `/api/v1/jobs/${second.body.id}`),
      ]);
      assert.notEqual(a.body.state, "completed", "the video is long enough to be cancelled while running");
      assert.equal(b.body.state, "queued", "the second job waits for the first");
      if (a.body.state === "active" && a.body.progress.done >= 2) {
        // Progress while it runs: frames done of the frames expected (6 s at 10 fps, from the duration).
        assert.equal(a.body.progress.total, 60);
        assert.ok(a.body.progress.done < 60);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const cancelled = await call(base, `/api/v1/jobs/${first.body.id}`, { method: "DELETE" });
    assert.deepEqual(cancelled.body, { id: first.body.id, deleted: true, cancelled: true, state: "active" });
    assert.equal((await call(base, `/api/v1/jobs/${first.body.id}`)).status, 404);
    assert.equal((await call(base, `/api/v1/jobs/${first.body.id}/results`)).status, 404);
    const { job } = await waitDone(base, second.body.id);
    assert.equal(job.state, "completed");
    const gone = await call(base, `/api/v1/jobs/${job.id}`, { method: "DELETE" });
    assert.deepEqual(gone.body, { id: job.id, deleted: true, cancelled: false, state: "completed" });
  });

  test("a job interrupted by a stop goes back to the queue and is run again, from the start, at the next start", async (t) => {
    if (skip) return t.skip(unlessCI(skip));
    const own = await serve("restart");
    let again: RunningServer | undefined;
    try {
      const bytes = await readFile(video);
      const created = await post(
        own.url,
        "?fps=10&min_face_size=40",
        upload(bytes, "scene.mkv", "video/x-matroska"),
      );
      for (;;) {
        const r = await call(own.url, `/api/v1/jobs/${created.body.id}`);
        if (r.body.state === "active" && r.body.progress.done >= 2) break;
        assert.notEqual(r.body.state, "completed");
        await new Promise((r) => setTimeout(r, 20));
      }
      await own.close();
      again = await serve("restart");
      const { job } = await waitDone(again.url, created.body.id);
      assert.equal(job.state, "completed", job.error);
      assert.equal(job.attempts, 2);
      assert.deepEqual(job.progress, { done: 60, total: 60 });
      const { body } = await call(again.url, `/api/v1/jobs/${job.id}/results?limit=100`);
      assert.deepEqual(
        body.results.map((r: Json) => r.index),
        [...Array(60).keys()],
      );
    } finally {
      await own.close();
      await again?.close();
    }
  });
});

// ---------------------------------------------------------------- two replicas, BullMQ

const REDIS_SERVER = process.env.MASKWATCH_REDIS_SERVER ?? "redis-server";

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

describe("two replicas sharing PostgreSQL and Redis (BullMQ)", () => {
  const pgUrl = pgTestUrl();
  let why: string | null = null;
  if (spawnSync(REDIS_SERVER, ["--version"]).status !== 0)
    why = "redis-server is not installed (apt-get install -y redis-server)";
  else if (!pgUrl) why = PG_SKIP_MESSAGE;
  if (why) console.log(`# jobs (replicas): skipped: ${why}`);
  let redis: ChildProcess | undefined;
  let schema: PgTestSchema | undefined;
  const replicas: RunningServer[] = [];

  before(async () => {
    why ??= skip;
    if (why) return;
    const port = await freePort();
    await mkdir(join(dir, "redis"), { recursive: true });
    redis = spawn(
      REDIS_SERVER,
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        join(dir, "redis"),
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 10_000);
      redis!.stdout!.on("data", (d) => {
        out += d;
        if (out.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      redis!.once("exit", () => reject(new Error(`redis-server exited:\n${out}`)));
    });
    schema = await createTestSchema(pgUrl!);
    const env = { REDIS_URL: `redis://127.0.0.1:${port}`, DATABASE_URL: schema.url };
    replicas.push(await serve("replica-a", env), await serve("replica-b", env));
  });

  after(async () => {
    for (const r of replicas) await r.close();
    await schema?.drop();
    if (redis && redis.exitCode === null) {
      redis.kill("SIGTERM");
      await new Promise((r) => redis!.once("exit", r));
    }
  });

  test("a job posted to one replica is processed by the queue and read, with its results, from the other", async (t) => {
    if (why) return t.skip(unlessCI(why));
    const [a, b] = replicas;
    const created = await post(
      a.url,
      "?min_face_size=20",
      upload(photosZip(), "photos.zip", "application/zip"),
    );
    assert.equal(created.status, 202, JSON.stringify(created.body));
    const { job } = await waitDone(b.url, created.body.id);
    assert.equal(job.state, "completed", job.error);
    assert.deepEqual(job.progress, { done: 4, total: 4 });
    const fromB = await call(b.url, `/api/v1/jobs/${job.id}/results`);
    const fromA = await call(a.url, `/api/v1/jobs/${job.id}/results`);
    assert.deepEqual(fromB.body, fromA.body);
    assert.equal(fromB.body.results[0].faces.length, 3);
    assert.equal(fromB.body.results[1].error.code.includes("image"), true);
    const listed = await call(b.url, "/api/v1/jobs");
    assert.equal(listed.body.jobs[0].id, job.id);
  });

  test("a replica that stops mid-job hands it back to the queue; the other runs it again from the start", async (t) => {
    if (why) return t.skip(unlessCI(why));
    const [a, b] = replicas;
    const bytes = await readFile(video);
    // Two long jobs: each replica takes one; then the replica running `first` stops.
    const first = await post(a.url, "?fps=10&min_face_size=40", upload(bytes, "one.mkv", "video/x-matroska"));
    const second = await post(
      a.url,
      "?fps=10&min_face_size=40",
      upload(bytes, "two.mkv", "video/x-matroska"),
    );
    assert.equal(first.status, 202);
    assert.equal(second.status, 202);
    for (;;) {
      const [x, y] = await Promise.all([
        call(b.url, `/api/v1/jobs/${first.body.id}`),
        call(b.url, `/api/v1/jobs/${second.body.id}`),
      ]);
      if ([x, y].every((r) => r.body.state === "active" && r.body.progress.done >= 2)) break;
      assert.ok(
        x.body.state !== "completed" && y.body.state !== "completed",
        "both run at once, one per replica",
      );
      await new Promise((r) => setTimeout(r, 20));
    }
    // One job per replica (concurrency 1 each); which is BullMQ's choice. Replica A stops: its job goes back.
    await a.close();
    const [one, two] = await Promise.all([waitDone(b.url, first.body.id), waitDone(b.url, second.body.id)]);
    for (const { job } of [one, two]) {
      assert.equal(job.state, "completed", job.error);
      assert.deepEqual(job.progress, { done: 60, total: 60 });
      const { body } = await call(b.url, `/api/v1/jobs/${job.id}/results?limit=100`);
      assert.equal(body.results.length, 60);
    }
    assert.deepEqual(
      [one.job.attempts, two.job.attempts].sort(),
      [1, 2],
      "the interrupted job was started twice, the other once",
    );
  });
});
