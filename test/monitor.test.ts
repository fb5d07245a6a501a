/**
 * Live monitoring end to end: a video made with ffmpeg from dataset photos is watched through
 * the real server (real ffmpeg, real models in worker threads, SQLite), and the old app's
 * endpoints, the event API, the CSV, SSE and MJPEG are checked against the scene's script.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import sharp from "sharp";
import WebSocket from "ws";
import { loadConfig } from "../src/server/config.ts";
import { type RunningServer, startServer } from "../src/server/main.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { maskOffScene, VIDEO_HEIGHT, VIDEO_WIDTH, videoSkipReason, writeVideo } from "./support/video.ts";

const KEY = "monitor-test-key-0123456789";
let server: RunningServer | undefined;
let dataDir = "";
let video = "";
let skip: string | null = videoSkipReason();
if (skip) console.log(`# monitor: skipped: ${skip}`);

before(async () => {
  skip ??= await ensureModels(["blazeface-back-256", "mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]);
  if (skip) return;
  dataDir = await mkdtemp(join(tmpdir(), "maskwatch-monitor-"));
  video = join(dataDir, "scene.mkv");
  const { count, scene } = await maskOffScene();
  await writeVideo(video, count, scene);
  server = await startServer(
    loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      MASKWATCH_DATA_DIR: dataDir,
      MASKWATCH_API_KEY: KEY,
      MASKWATCH_WORKERS: "1",
      MASKWATCH_SOURCE: video,
      MASKWATCH_SOURCE_FILE_ROOT: dataDir,
      LOG_LEVEL: "warn",
    }),
  );
});

after(async () => {
  await server?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

async function call(path: string, init: RequestInit & { key?: string | null } = {}) {
  const headers = new Headers(init.headers);
  if (init.key !== null) headers.set("x-api-key", init.key ?? KEY);
  if (init.body && typeof init.body === "string") headers.set("content-type", "application/json");
  const res = await fetch(`${server!.url}${path}`, { ...init, headers });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
  return { status: res.status, headers: res.headers, body: body as any, text };
}

/** Reads a stream's bytes until `enough` says so or `ms` pass; then cancels it. */
async function readUntil(res: Response, enough: (buf: Buffer) => boolean, ms: number): Promise<Buffer> {
  const reader = res.body!.getReader();
  let buf = Buffer.alloc(0);
  const deadline = Date.now() + ms;
  while (!enough(buf) && Date.now() < deadline) {
    let timer: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      reader.read(),
      new Promise<null>((r) => {
        timer = setTimeout(() => r(null), Math.max(1, deadline - Date.now()));
      }),
    ]);
    clearTimeout(timer);
    if (!next || next.done) break;
    buf = Buffer.concat([buf, Buffer.from(next.value)]);
  }
  await reader.cancel().catch(() => {});
  return buf;
}

/** The JPEGs of a multipart/x-mixed-replace body, by boundary and Content-Length. */
function mjpegFrames(buf: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  let at = 0;
  for (;;) {
    const start = buf.indexOf("--frame\r\n", at);
    if (start < 0) break;
    const headEnd = buf.indexOf("\r\n\r\n", start);
    if (headEnd < 0) break;
    const head = buf.subarray(start, headEnd).toString();
    const length = Number(/Content-Length: (\d+)/i.exec(head)?.[1]);
    assert.match(head, /Content-Type: image\/jpeg/);
    const body = buf.subarray(headEnd + 4, headEnd + 4 + length);
    if (body.length < length) break;
    frames.push(body);
    at = headEnd + 4 + length;
  }
  return frames;
}

async function waitFor<T>(fn: () => Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("the old app's endpoints, the event log, SSE and MJPEG agree with the scene: one violation per person", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  // Every frame analysed (not realtime), so the expected events are exact.
  const patched = await call("/api/v1/sources/default", {
    method: "PATCH",
    body: JSON.stringify({ options: { realtime: false, fps: 10 } }),
  });
  assert.equal(patched.status, 200, patched.text);
  assert.equal(patched.body.kind, "file");

  const stopped = await call("/get_stats");
  assert.equal(stopped.status, 200);
  assert.equal(stopped.body.current_status, "Inactive");

  const sse = await fetch(`${server!.url}/api/v1/live?source=default&frames=false&api_key=${KEY}`);
  assert.equal(sse.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const feed = await fetch(`${server!.url}/video_feed`, { headers: { "x-api-key": KEY } });
  assert.equal(feed.status, 200);
  assert.equal(feed.headers.get("content-type"), "multipart/x-mixed-replace; boundary=frame");

  const started = await call("/start_detection", { method: "POST" });
  assert.equal(started.status, 200, started.text);
  assert.equal(started.body.status, "success");
  const [mjpeg, live] = await Promise.all([
    readUntil(feed, (b) => mjpegFrames(b).length >= 5, 60_000),
    readUntil(sse, (b) => (b.toString().match(/event: event/g) ?? []).length >= 3, 60_000),
  ]);
  const done = await waitFor(
    async () => {
      const r = await call("/api/v1/sources/default");
      return r.body.status.state === "ended" ? r.body : undefined;
    },
    60_000,
    "the video to end",
  );
  assert.equal(done.status.frames, 60, "every frame analysed");
  assert.equal(done.status.last_error, null);

  const { body } = await call("/api/v1/events?order=asc");
  const events = body.events as {
    id: number;
    track_id: number;
    kind: string;
    label: string;
    snapshot_url: string | null;
  }[];
  assert.deepEqual(
    events.map((e) => [e.kind, e.label]).sort(),
    [
      ["observation", "mask"],
      ["observation", "mask"],
      ["violation", "no_mask"],
    ],
    JSON.stringify(events),
  );
  const violation = events.find((e) => e.kind === "violation")!;
  const ids = new Set(events.map((e) => e.track_id));
  assert.equal(ids.size, 2, "two people, two ids");
  assert.equal(
    events.filter((e) => e.track_id === violation.track_id).length,
    2,
    "B keeps its id through the occlusion and the mask coming off",
  );

  // Pushed over SSE only after commit: the same events, same ids.
  const pushed = live
    .toString()
    .split("\n\n")
    .filter((b) => b.startsWith("event: event"))
    .map((b) => JSON.parse(b.split("\ndata: ")[1]));
  assert.deepEqual(pushed.map((e) => e.id).sort(), events.map((e) => e.id).sort());

  // The violation's snapshot is a JPEG of the face.
  assert.ok(violation.snapshot_url);
  const snap = await fetch(`${server!.url}${violation.snapshot_url}`, { headers: { "x-api-key": KEY } });
  assert.equal(snap.status, 200);
  const meta = await sharp(Buffer.from(await snap.arrayBuffer())).metadata();
  assert.equal(meta.format, "jpeg");
  // And the whole frame it was seen in, for review; observations keep none.
  assert.equal((violation as unknown as { has_frame: boolean }).has_frame, true);
  const whole = await fetch(`${server!.url}/api/v1/events/${violation.id}/frame`, {
    headers: { "x-api-key": KEY },
  });
  assert.equal(whole.status, 200);
  const wholeMeta = await sharp(Buffer.from(await whole.arrayBuffer())).metadata();
  assert.deepEqual(
    [wholeMeta.format, wholeMeta.width, wholeMeta.height],
    ["jpeg", VIDEO_WIDTH, VIDEO_HEIGHT],
  );
  const observation = events.find((e) => e.kind === "observation")!;
  const none = await call(`/api/v1/events/${observation.id}/frame`);
  assert.equal(none.status, 404);
  assert.equal(none.body.code, "no_frame");
  // Acknowledging stores who and when; the first acknowledgement stands.
  const acked = await call(`/api/v1/events/${violation.id}/acknowledge`, { method: "POST", body: "{}" });
  assert.equal(acked.status, 200, acked.text);
  assert.equal(acked.body.acknowledged_by, "MASKWATCH_API_KEY");
  assert.ok(Date.parse(acked.body.acknowledged_at) > 0);
  const again = await call(`/api/v1/events/${violation.id}/acknowledge`, { method: "POST", body: "{}" });
  assert.equal(again.body.acknowledged_at, acked.body.acknowledged_at);
  assert.equal((await call(`/api/v1/events/${violation.id}`)).body.acknowledged_by, "MASKWATCH_API_KEY");
  assert.equal((await call("/api/v1/events/999999/acknowledge", { method: "POST", body: "{}" })).status, 404);

  // MJPEG parsed back into frames of the source's size.
  const frames = mjpegFrames(mjpeg);
  assert.ok(frames.length >= 5, `got ${frames.length} MJPEG frames`);
  const first = await sharp(frames[0]).metadata();
  assert.deepEqual([first.format, first.width, first.height], ["jpeg", VIDEO_WIDTH, VIDEO_HEIGHT]);

  // The old app's stats: people, not frames.
  const stats = await call("/get_stats");
  assert.equal(stats.body.total_detections, 3);
  assert.equal(stats.body.mask_count, 2);
  assert.equal(stats.body.no_mask_count, 1);
  assert.equal(stats.body.activity.length, 3);
  assert.ok(stats.body.activity.some((a: { type: string }) => a.type === "violation"));

  // The CSV starts with the old columns and has one row per violation.
  const csv = await call("/api/v1/violations.csv");
  assert.equal(csv.status, 200);
  assert.match(csv.headers.get("content-type") ?? "", /^text\/csv/);
  const lines = csv.text.trim().split("\r\n");
  assert.ok(lines[0].startsWith("Timestamp,Face_ID,Status,Confidence,"), lines[0]);
  assert.equal(lines.length, 2);
  const row = lines[1].split(",");
  assert.ok(!Number.isNaN(Date.parse(row[0])));
  assert.equal(Number(row[1]), violation.track_id);
  assert.equal(row[2], "No Mask");
  assert.ok(Number(row[3]) > 0.5 && Number(row[3]) <= 1, row[3]);

  // Counts over time.
  const hourly = await call("/api/v1/stats?bucket=hour");
  assert.equal(hourly.status, 200);
  assert.equal(hourly.body.totals.events, 3);
  assert.equal(hourly.body.totals.violations, 1);
  assert.ok(Math.abs(hourly.body.totals.compliance_rate - 2 / 3) < 1e-9);
  const buckets = hourly.body.buckets as { events: number }[];
  assert.equal(
    buckets.reduce((n, b) => n + b.events, 0),
    3,
  );

  // Prometheus: events by source, kind and label; frames analysed.
  const metrics = (await call("/metrics")).text;
  assert.match(metrics, /maskwatch_events_total\{source="default",kind="violation",label="no_mask"\} 1\n/);
  assert.match(metrics, /maskwatch_events_total\{source="default",kind="observation",label="mask"\} 2\n/);
  assert.match(metrics, /maskwatch_frames_total\{source="default"\} 60\n/);

  // Reset: counters start again, the log stays.
  assert.equal((await call("/reset_stats")).status, 200);
  const reset = await call("/get_stats");
  assert.equal(reset.body.total_detections, 0);
  assert.equal((await call("/api/v1/events")).body.events.length, 3);
  assert.equal((await call("/stop_detection", { method: "POST" })).status, 200);
});

test("sources: bad input is a 400 naming the problem, a dead stream reconnects without hurting the server", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const missing = await call("/api/v1/sources", {
    method: "POST",
    body: JSON.stringify({ kind: "file", url: "/nonexistent/video.mp4" }),
  });
  assert.equal(missing.status, 400);
  assert.equal(missing.body.code, "invalid_source");
  assert.match(missing.body.message, /does not exist/);
  const badKind = await call("/api/v1/sources", { method: "POST", body: JSON.stringify({ kind: "webcam" }) });
  assert.equal(badKind.status, 400);
  const noUrl = await call("/api/v1/sources", { method: "POST", body: JSON.stringify({ kind: "stream" }) });
  assert.equal(noUrl.status, 400);
  assert.match(noUrl.body.message, /needs a url/);
  const badOption = await call("/api/v1/sources", {
    method: "POST",
    body: JSON.stringify({ kind: "file", url: video, options: { fps: 1000 } }),
  });
  assert.equal(badOption.status, 400);
  assert.match(badOption.body.message, /fps/);
  assert.equal((await call("/api/v1/sources/nope")).status, 404);
  assert.equal((await call("/api/v1/sources/nope/start", { method: "POST" })).status, 404);

  // Nothing listens on port 9: ffmpeg fails, the source retries with backoff and says why.
  const created = await call("/api/v1/sources", {
    method: "POST",
    body: JSON.stringify({
      id: "dead-cam",
      name: "Dead camera",
      kind: "stream",
      url: "rtsp://127.0.0.1:9/none",
    }),
  });
  assert.equal(created.status, 201, created.text);
  const dup = await call("/api/v1/sources", {
    method: "POST",
    body: JSON.stringify({ id: "dead-cam", kind: "stream", url: "rtsp://127.0.0.1:9/none" }),
  });
  assert.equal(dup.status, 409);
  assert.equal((await call("/api/v1/sources/dead-cam/start", { method: "POST" })).status, 200);
  const failing = await waitFor(
    async () => {
      const r = await call("/api/v1/sources/dead-cam");
      return r.body.status.state === "reconnecting" && r.body.status.last_error ? r.body : undefined;
    },
    20_000,
    "the dead stream to report its error",
  );
  assert.match(failing.status.last_error, /\S/);
  assert.equal((await call("/health")).status, 200);
  const list = await call("/api/v1/sources");
  assert.deepEqual(list.body.sources.map((s: { id: string }) => s.id).sort(), ["dead-cam", "default"]);
  assert.equal((await call("/api/v1/sources/dead-cam", { method: "DELETE" })).status, 200);
  assert.equal((await call("/api/v1/sources/dead-cam")).status, 404);
});

test("a browser source takes JPEG frames over the WebSocket and answers with tracks", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const created = await call("/api/v1/sources", {
    method: "POST",
    body: JSON.stringify({ id: "webcam", kind: "browser" }),
  });
  assert.equal(created.status, 201, created.text);
  const { count, scene } = await maskOffScene();
  const { renderFrame } = await import("./support/video.ts");
  const ws = new WebSocket(
    `${server!.url.replace("http", "ws")}/api/v1/sources/webcam/frames?api_key=${KEY}`,
  );
  const messages: { type: string; tracks?: { id: number; label: string | null }[]; code?: string }[] = [];
  ws.on("message", (data) => messages.push(JSON.parse(String(data))));
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  ws.send("not a frame");
  ws.send(new Uint8Array([1, 2, 3, 4]));
  for (let i = 0; i < Math.min(count, 12); i++) {
    const raw = await renderFrame(scene(i));
    const jpeg = await sharp(raw, { raw: { width: VIDEO_WIDTH, height: VIDEO_HEIGHT, channels: 3 } })
      .jpeg()
      .toBuffer();
    ws.send(jpeg);
    await waitFor(
      async () => (messages.filter((m) => m.type === "tracks").length > i ? true : undefined),
      20_000,
      `frame ${i}`,
    );
  }
  ws.close();
  const errors = messages.filter((m) => m.type === "error").map((m) => m.code);
  assert.deepEqual(errors, ["invalid_frame", "unsupported_image"]);
  const last = messages.filter((m) => m.type === "tracks").at(-1)!;
  assert.equal(last.tracks!.length, 2);
  assert.deepEqual(
    last.tracks!.map((tr) => tr.label),
    ["mask", "mask"],
  );
  const events = await call("/api/v1/events?source=webcam");
  assert.equal(events.body.events.length, 2);
  // The process and the database are fine.
  assert.ok((await stat(join(dataDir, "maskwatch.db"))).size > 0);
  assert.equal((await call("/health")).status, 200);
});

test("a looped file plays on past its end at the pace asked, and the status's fps says so", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const made = await call("/api/v1/sources", {
    method: "POST",
    body: JSON.stringify({ name: "loop", kind: "file", url: video, options: { loop: true, fps: 10 } }),
  });
  assert.equal(made.status, 201, made.text);
  const id = made.body.id as string;
  try {
    assert.equal((await call(`/api/v1/sources/${id}/start`, { method: "POST" })).status, 200);
    // The 6 s clip loops past its end; fps is averaged over the frames of the last second or so.
    const status = await waitFor(
      async () => {
        const s = (await call(`/api/v1/sources/${id}`)).body.status as { frames: number; fps: number };
        return s.frames >= 70 ? s : undefined;
      },
      30_000,
      "70 frames of the looped clip",
    );
    assert.ok(status.fps > 2 && status.fps <= 12, `10 fps asked, ${status.fps} reported`);
    const stopped = await call(`/api/v1/sources/${id}/stop`, { method: "POST" });
    assert.equal(stopped.body.status.state, "stopped");
    assert.equal(stopped.body.status.fps, 0, "a stopped source reports no rate, not its last one");
  } finally {
    await call(`/api/v1/sources/${id}`, { method: "DELETE" });
  }
});

test("MASKWATCH_SOURCE_LOOP=1: the default file source plays in a loop", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const { startTestServer } = await import("./support/server.ts");
  const looped = await startTestServer({
    MASKWATCH_AUTH: "off",
    MASKWATCH_WORKERS: "1",
    MASKWATCH_SOURCE: video,
    MASKWATCH_SOURCE_LOOP: "1",
  });
  try {
    const get = async () =>
      (await (await fetch(`${looped.url}/api/v1/sources/default`)).json()) as {
        options: { loop?: boolean };
        status: { frames: number };
      };
    assert.equal((await get()).options.loop, true);
    assert.equal((await fetch(`${looped.url}/start_detection`, { method: "POST" })).status, 200);
    const past = await waitFor(
      async () => ((await get()).status.frames > 60 ? true : undefined),
      30_000,
      "frames past the clip's 60",
    );
    assert.ok(past);
  } finally {
    await looped.close();
  }
});
