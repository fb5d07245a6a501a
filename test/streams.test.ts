/**
 * The live-monitoring building blocks on their own: the ffmpeg command line and its output-size
 * parsing, FfmpegCapture on clips made with ffmpeg's testsrc (frame count, scaling, states, loop,
 * retries, backoff), MjpegHub over a real HTTP server, source specs, and retention on SQLite.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import { type AddressInfo, createServer as createTcpServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import { type Database, openDatabase } from "../src/store/db.ts";
import { getEvent, insertEvent, type NewEvent } from "../src/store/events.ts";
import { pruneEvents } from "../src/store/retention.ts";
import {
  type CaptureOptions,
  type CaptureState,
  FfmpegCapture,
  type Frame,
  ffmpegArgs,
  parseOutputSize,
} from "../src/streams/ffmpeg.ts";
import { parseSourceSpec, StreamError, validateSource } from "../src/streams/manager.ts";
import { MJPEG_CONTENT_TYPE, MjpegHub, mjpegPart } from "../src/streams/mjpeg.ts";
import { unlessCI } from "./support/ci.ts";
import { hasFfmpeg } from "./support/video.ts";

const FFMPEG = process.env.MASKWATCH_FFMPEG ?? "ffmpeg";
const noFfmpeg = hasFfmpeg() ? null : "ffmpeg is not installed (apt-get install -y ffmpeg)";
if (noFfmpeg) console.log(`# streams: ffmpeg tests skipped: ${noFfmpeg}`);

let dir = "";
/** 1 s of testsrc at 5 fps, 320×240 and 1280×720 (MJPEG in Matroska). */
let small = "";
let large = "";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-streams-"));
  if (noFfmpeg) return;
  small = join(dir, "small.mkv");
  large = join(dir, "large.mkv");
  makeClip(small, "320x240");
  makeClip(large, "1280x720");
});

after(async () => {
  // Captures a failed test left running would keep retrying (and the process alive).
  await Promise.all(captures.map((c) => c.stop()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

function makeClip(file: string, size: string): void {
  const r = spawnSync(
    FFMPEG,
    [
      "-hide_banner",
      "-loglevel",
      "error",
      "-y",
      "-f",
      "lavfi",
      "-i",
      `testsrc=size=${size}:rate=5`,
      "-t",
      "1",
      "-c:v",
      "mjpeg",
      "-q:v",
      "3",
      file,
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Run {
  capture: FfmpegCapture;
  frames: Frame[];
  states: { state: CaptureState; error?: string; at: number }[];
  /** Resolves at the first "ended" or "stopped". */
  finished: Promise<void>;
}

const captures: FfmpegCapture[] = [];

function runCapture(options: CaptureOptions, onFrame?: (f: Frame) => void | Promise<void>): Run {
  const frames: Frame[] = [];
  const states: Run["states"] = [];
  let finish = () => {};
  const finished = new Promise<void>((r) => {
    finish = r;
  });
  const capture = new FfmpegCapture(options, {
    frame: (f) => {
      frames.push(f);
      return onFrame?.(f);
    },
    state: (state, error) => {
      states.push({ state, error, at: Date.now() });
      if (state === "ended" || state === "stopped") finish();
    },
  });
  captures.push(capture);
  capture.start();
  return { capture, frames, states, finished };
}

/** An ffmpeg stand-in that logs "pid epoch-ms" per run to `log`, then becomes the real ffmpeg. */
async function ffmpegWrapper(
  name: string,
): Promise<{ bin: string; runs: () => Promise<[number, number][]> }> {
  const bin = join(dir, `${name}.sh`);
  const log = join(dir, `${name}.log`);
  await writeFile(bin, `#!/bin/sh\necho "$$ $(date +%s%3N)" >> '${log}'\nexec '${FFMPEG}' "$@"\n`);
  await chmod(bin, 0o755);
  return {
    bin,
    runs: async () =>
      existsSync(log)
        ? (await readFile(log, "utf8"))
            .trim()
            .split("\n")
            .map((l) => l.split(" ").map(Number) as [number, number])
        : [],
  };
}

describe("ffmpegArgs", () => {
  const outputTail = [
    "-an",
    "-vf",
    "fps=15,scale='min(640,iw)':-2",
    "-f",
    "rawvideo",
    "-pix_fmt",
    "rgb24",
    "pipe:1",
  ];

  test("a device is read with v4l2; defaults are 15 fps and 640 wide, raw RGB on stdout", () => {
    const args = ffmpegArgs({ kind: "device", url: "/dev/video0" });
    assert.deepEqual(args.slice(0, 4), ["-hide_banner", "-nostdin", "-loglevel", "info"]);
    assert.deepEqual(args.slice(4, 8), ["-f", "v4l2", "-i", "/dev/video0"]);
    assert.deepEqual(args.slice(8), outputTail);
    assert.ok(!args.includes("-re"));
  });

  test("rtsp goes over TCP with a read timeout; http takes no rtsp flag", () => {
    const rtsp = ffmpegArgs({ kind: "stream", url: "rtsp://cam.local:554/live", fps: 5, maxWidth: 320 });
    assert.deepEqual(rtsp.slice(4, 10), [
      "-rtsp_transport",
      "tcp",
      "-timeout",
      "10000000",
      "-i",
      "rtsp://cam.local:554/live",
    ]);
    assert.equal(rtsp[rtsp.indexOf("-vf") + 1], "fps=5,scale='min(320,iw)':-2");
    assert.ok(ffmpegArgs({ kind: "stream", url: "RTSPS://cam/x" }).includes("-rtsp_transport"));
    const http = ffmpegArgs({ kind: "stream", url: "http://cam.local/mjpg" });
    assert.ok(!http.includes("-rtsp_transport"));
    assert.deepEqual(http.slice(4, 8), ["-rw_timeout", "10000000", "-i", "http://cam.local/mjpg"]);
    assert.ok(!http.includes("-re") && !http.includes("-stream_loop"));
  });

  test("files: -re unless realtime is false, -stream_loop -1 only with loop, both before -i", () => {
    const plain = ffmpegArgs({ kind: "file", url: "/v/a.mp4" });
    assert.deepEqual(plain.slice(4, 7), ["-re", "-i", "/v/a.mp4"]);
    assert.ok(!plain.includes("-stream_loop"));
    const fast = ffmpegArgs({ kind: "file", url: "/v/a.mp4", realtime: false });
    assert.ok(!fast.includes("-re"));
    assert.deepEqual(fast.slice(4, 6), ["-i", "/v/a.mp4"]);
    const looped = ffmpegArgs({ kind: "file", url: "/v/a.mp4", loop: true, realtime: false, fps: 2.5 });
    assert.deepEqual(looped.slice(4, 8), ["-stream_loop", "-1", "-i", "/v/a.mp4"]);
    assert.ok(!looped.includes("-re"));
    assert.equal(looped[looped.indexOf("-vf") + 1], "fps=2.5,scale='min(640,iw)':-2");
    const both = ffmpegArgs({ kind: "file", url: "/v/a.mp4", loop: true });
    assert.deepEqual(both.slice(4, 9), ["-re", "-stream_loop", "-1", "-i", "/v/a.mp4"]);
    for (const args of [plain, fast, looped, both]) {
      assert.deepEqual(args.slice(-5), ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
      assert.equal(args.indexOf("-an"), args.length - 8);
    }
  });
});

describe("parseOutputSize", () => {
  test("picks the output stream's size, not the input's", () => {
    const stderr = [
      "Input #0, matroska,webm, from 'cam.mkv':",
      "  Duration: 00:00:01.00, start: 0.000000, bitrate: 1666 kb/s",
      "  Stream #0:0: Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1920x1080 [SAR 1:1 DAR 16:9], 25 fps",
      "Stream mapping:",
      "  Stream #0:0 -> #0:0 (h264 (native) -> rawvideo (native))",
      "Output #0, rawvideo, to 'pipe:1':",
      "  Metadata:",
      "    encoder         : Lavf59.27.100",
      "  Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24(pc, gbr/unknown/unknown, progressive), 640x360 [SAR 1:1 DAR 16:9], q=2-31, 165888 kb/s, 15 fps, 15 tbn",
      "frame=    1 fps=0.0 q=0.0 size=       0kB",
    ].join("\n");
    assert.deepEqual(parseOutputSize(stderr), { width: 640, height: 360 });
  });

  test("a language tag on the stream, CRLF, and a size before the output line changes nothing", () => {
    const stderr =
      "  Stream #0:0(eng): Video: mjpeg, yuvj420p, 4000x3000, 30 fps\r\n" +
      "Output #0, rawvideo, to 'pipe:1':\r\n" +
      "  Stream #0:0(eng): Video: rawvideo (RGB[24] / 0x18424752), rgb24, 640x480, q=2-31\r\n";
    assert.deepEqual(parseOutputSize(stderr), { width: 640, height: 480 });
  });

  test("undefined until the output stream line is complete", () => {
    const input =
      "Input #0, v4l2, from '/dev/video0':\n  Stream #0:0: Video: rawvideo (YUY2 / 0x32595559), yuyv422, 1280x720, 30 fps\n";
    assert.equal(parseOutputSize(""), undefined);
    assert.equal(parseOutputSize(input), undefined, "only the input's size is known");
    const head = `${input}Output #0, rawvideo, to 'pipe:1':\n  Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 64`;
    assert.equal(parseOutputSize(head), undefined, "the line is cut mid-size");
    assert.deepEqual(parseOutputSize(`${head}0x360, q=2-31\n`), { width: 640, height: 360 });
  });

  test("real ffmpeg stderr: input 1280x720, output scaled to 640x360", (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const r = spawnSync(FFMPEG, ffmpegArgs({ kind: "file", url: large, realtime: false, fps: 5 }), {
      encoding: "buffer",
      maxBuffer: 64 << 20,
    });
    assert.equal(r.status, 0, r.stderr.toString());
    const stderr = r.stderr.toString();
    assert.match(stderr, /Input #0[\s\S]*1280x720/, "the input line has its own size");
    assert.deepEqual(parseOutputSize(stderr), { width: 640, height: 360 });
    assert.equal(r.stdout.length, 5 * 640 * 360 * 3);
  });
});

describe("FfmpegCapture", () => {
  test("a file, not realtime: every frame exactly, byte-identical to ffmpeg's output, then ended", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const options: CaptureOptions = { kind: "file", url: small, fps: 5, realtime: false };
    // A slow consumer: not realtime, so the capture waits for it instead of dropping frames.
    const run = runCapture(options, () => sleep(60));
    await run.finished;
    assert.deepEqual(
      run.states.map((s) => s.state),
      ["starting", "running", "ended"],
    );
    assert.equal(run.states.at(-1)!.error, undefined);
    assert.equal(run.frames.length, 5);
    assert.deepEqual(
      run.frames.map((f) => f.seq),
      [0, 1, 2, 3, 4],
    );
    for (const f of run.frames) {
      assert.equal(f.image.width, 320);
      assert.equal(f.image.height, 240);
      assert.equal(f.image.data.length, 320 * 240 * 3);
    }
    for (let i = 1; i < run.frames.length; i++) {
      assert.ok(run.frames[i].at - run.frames[i - 1].at >= 50, "each frame waited for the previous one");
    }
    const direct = spawnSync(FFMPEG, ffmpegArgs(options), { encoding: "buffer", maxBuffer: 64 << 20 });
    assert.ok(
      Buffer.concat(run.frames.map((f) => f.image.data)).equals(direct.stdout),
      "frames are cut at the right offsets",
    );
  });

  test("wider than maxWidth: scaled keeping the aspect ratio (1280×720 → 640×360)", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const run = runCapture({ kind: "file", url: large, fps: 5, maxWidth: 640, realtime: false });
    await run.finished;
    assert.equal(run.states.at(-1)!.state, "ended");
    assert.equal(run.frames.length, 5);
    for (const f of run.frames) {
      assert.deepEqual([f.image.width, f.image.height, f.image.data.length], [640, 360, 640 * 360 * 3]);
    }
    const half = runCapture({ kind: "file", url: small, fps: 5, maxWidth: 100, realtime: false });
    await half.finished;
    assert.deepEqual([half.frames[0].image.width, half.frames[0].image.height], [100, 76]);
  });

  test("realtime: frames come at the video's pace and a slow consumer never holds them", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    // A consumer that never finishes: realtime captures do not wait for it.
    const run = runCapture({ kind: "file", url: small, fps: 5 }, () => new Promise<void>(() => {}));
    await run.finished;
    assert.equal(run.states.at(-1)!.state, "ended");
    assert.equal(run.frames.length, 5);
    const span = run.frames.at(-1)!.at - run.frames[0].at;
    assert.ok(span >= 500, `5 frames at 5 fps arrive over ~0.8 s, not at once (${span} ms)`);
  });

  test("loop: keeps going past the clip's end; stop() ends it and ffmpeg is gone", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const wrap = await ffmpegWrapper("loop");
    const run = runCapture({
      kind: "file",
      url: small,
      fps: 5,
      loop: true,
      realtime: false,
      ffmpeg: wrap.bin,
    });
    await waitFor(() => run.frames.length >= 12, 10_000, "12 frames from a 5-frame clip");
    const [[pid]] = await wrap.runs();
    assert.ok(alive(pid), "ffmpeg runs while looping");
    await run.capture.stop();
    assert.equal(run.states.at(-1)!.state, "stopped");
    assert.ok(!run.states.some((s) => s.state === "ended" || s.state === "reconnecting"));
    assert.ok(!alive(pid), "ffmpeg has exited when stop() resolves");
    const count = run.frames.length;
    assert.deepEqual(
      run.frames.map((f) => f.seq),
      [...Array(count).keys()],
    );
    await sleep(300);
    assert.equal(run.frames.length, count, "no frame after stop()");
    assert.equal((await wrap.runs()).length, 1, "not restarted");
  });

  test("a file that does not exist: retried twice, then ended with ffmpeg's error", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const wrap = await ffmpegWrapper("missing");
    const missing = join(dir, "nope", "missing.mkv");
    const run = runCapture({ kind: "file", url: missing, realtime: false, ffmpeg: wrap.bin });
    await run.finished;
    const last = run.states.at(-1)!;
    assert.equal(last.state, "ended");
    assert.match(last.error ?? "", /missing\.mkv: No such file or directory/);
    assert.equal(run.frames.length, 0);
    assert.equal(run.states[0].state, "starting");
    assert.ok(run.states.slice(1, -1).every((s) => s.state === "reconnecting" && s.error));
    const runs = await wrap.runs();
    assert.equal(runs.length, 3, "the first try and two retries");
    assert.ok(runs[1][1] - runs[0][1] >= 1000, "1 s before the first retry");
    assert.ok(runs[2][1] - runs[1][1] >= 2000, "2 s before the second");
  });

  test("an unreachable rtsp stream: reconnecting with the error, the next try after ≥ 1 s; stop() ends the loop", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const wrap = await ffmpegWrapper("rtsp");
    // Nothing listens on port 9 (discard) here: the connection is refused at once.
    const run = runCapture({ kind: "stream", url: "rtsp://127.0.0.1:9/none", ffmpeg: wrap.bin });
    await waitFor(async () => (await wrap.runs()).length >= 2, 10_000, "a retry");
    assert.deepEqual(
      run.states.slice(0, 2).map((s) => s.state),
      ["starting", "reconnecting"],
    );
    assert.match(run.states[1].error ?? "", /Connection refused/);
    const runs = await wrap.runs();
    const gap = runs[1][1] - runs[0][1];
    assert.ok(gap >= 1000, `the second attempt waited for the backoff (${gap} ms)`);
    assert.ok(gap < 5000, `but not much longer (${gap} ms)`);
    // The second try fails too and waits 2 s; stop() in that wait cancels the third.
    await waitFor(
      () => run.states.filter((s) => s.state === "reconnecting").length >= 3,
      10_000,
      "the 2nd failure",
    );
    await run.capture.stop();
    assert.equal(run.states.at(-1)!.state, "stopped");
    await sleep(2300);
    assert.equal((await wrap.runs()).length, 2, "no attempt after stop()");
    assert.equal(run.frames.length, 0);
    for (const [pid] of runs) assert.ok(!alive(pid));
  });
});

/**
 * A minimal RTSP camera on 127.0.0.1 (RTP/AVP/TCP interleaved only, as ffmpegArgs asks for):
 * ffmpeg's RTP muxer makes RTP/JPEG of a 320×240 testsrc at 5 fps and sends it here over UDP;
 * each packet goes to every client that has sent PLAY, on interleaved channel 0.
 */
async function rtspCamera(): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const udp = createSocket("udp4");
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", r));
  const players = new Set<Socket>();
  const requests: string[] = [];
  udp.on("message", (pkt) => {
    const head = Buffer.from([0x24, 0, pkt.length >> 8, pkt.length & 255]);
    for (const sock of players) sock.write(Buffer.concat([head, pkt]));
  });
  const source = spawn(
    FFMPEG,
    [
      ...["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi"],
      ...["-i", "testsrc=size=320x240:rate=5", "-c:v", "mjpeg", "-pix_fmt", "yuvj420p"],
      // RFC 2435 RTP/JPEG needs the standard Huffman tables.
      ...["-huffman", "default", "-f", "rtp", `rtp://127.0.0.1:${(udp.address() as AddressInfo).port}`],
    ],
    { stdio: "ignore" },
  );
  const sdp =
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n" +
    "m=video 0 RTP/AVP 26\r\na=control:streamid=0\r\n";
  const server = createTcpServer((sock) => {
    let buf = "";
    sock.on("error", () => {});
    sock.on("close", () => players.delete(sock));
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      for (let end = buf.indexOf("\r\n\r\n"); end >= 0; end = buf.indexOf("\r\n\r\n")) {
        const req = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const [method, url] = req.split(" ");
        requests.push(method);
        const cseq = /^CSeq: *(\d+)/im.exec(req)?.[1] ?? "0";
        let headers = "";
        let body = "";
        if (method === "OPTIONS") headers = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n";
        else if (method === "DESCRIBE") {
          body = sdp;
          headers = `Content-Base: ${url}/\r\nContent-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n`;
        } else if (method === "SETUP")
          headers = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 1234\r\n";
        else if (method === "PLAY") {
          headers = "Session: 1234\r\n";
          players.add(sock);
        } else if (method === "TEARDOWN") players.delete(sock);
        sock.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\n${headers}\r\n${body}`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `rtsp://127.0.0.1:${(server.address() as AddressInfo).port}/live`,
    requests,
    close: async () => {
      const gone = new Promise((r) => source.once("exit", r));
      source.kill("SIGKILL");
      await gone;
      for (const sock of players) sock.destroy();
      await new Promise((r) => server.close(r));
      udp.close();
    },
  };
}

describe("FfmpegCapture on network sources", () => {
  test("http: the stream is read (-rw_timeout is an http option) until stop()", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const clip = await readFile(small);
    const server = createServer((_req, res) => {
      res.writeHead(200, { "Content-Type": "video/x-matroska", "Content-Length": clip.length });
      res.end(clip);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/cam.mkv`;
      const run = runCapture({ kind: "stream", url, fps: 5 });
      await waitFor(() => run.frames.length >= 5, 10_000, "5 frames over http");
      assert.deepEqual(
        run.states.slice(0, 2).map((s) => s.state),
        ["starting", "running"],
      );
      assert.deepEqual([run.frames[0].image.width, run.frames[0].image.height], [320, 240]);
      await run.capture.stop();
      assert.equal(run.states.at(-1)!.state, "stopped");
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  test("rtsp: a camera that answers gives frames over TCP", async (t) => {
    if (noFfmpeg) return t.skip(unlessCI(noFfmpeg));
    const camera = await rtspCamera();
    try {
      const run = runCapture({ kind: "stream", url: camera.url, fps: 5 });
      await waitFor(
        () => run.frames.length >= 3 || run.states.some((s) => s.state === "reconnecting"),
        15_000,
        "frames or a failure",
      );
      await run.capture.stop();
      assert.ok(camera.requests.includes("PLAY"), `the handshake went through: ${camera.requests.join(" ")}`);
      assert.deepEqual(
        run.states.filter((s) => s.error),
        [],
        "no failure",
      );
      assert.ok(run.frames.length >= 3);
      assert.deepEqual([run.frames[0].image.width, run.frames[0].image.height], [320, 240]);
    } finally {
      await camera.close();
    }
  });
});

/** The JPEGs of a multipart/x-mixed-replace body, by boundary and Content-Length. */
function mjpegFrames(buf: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  let at = 0;
  for (;;) {
    const start = buf.indexOf("--frame\r\n", at);
    if (start < 0) break;
    assert.equal(start, at, "parts follow each other with nothing in between");
    const headEnd = buf.indexOf("\r\n\r\n", start);
    if (headEnd < 0) break;
    const head = buf.subarray(start, headEnd).toString();
    assert.match(head, /\r\nContent-Type: image\/jpeg\r\n/);
    const length = Number(/\r\nContent-Length: (\d+)$/.exec(head)?.[1]);
    const end = headEnd + 4 + length;
    if (buf.length < end + 2) break;
    frames.push(buf.subarray(headEnd + 4, end));
    assert.equal(buf.subarray(end, end + 2).toString(), "\r\n");
    at = end + 2;
  }
  return frames;
}

describe("MjpegHub", () => {
  let server: Server;
  let base = "";
  const hub = new MjpegHub();
  const serverSide = new Map<string, ServerResponse>();

  before(async () => {
    server = createServer((req, res) => {
      serverSide.set(req.url ?? "", res);
      hub.add(res);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    hub.closeAll();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  interface Viewer {
    res: IncomingMessage;
    data: () => Buffer;
    ended: Promise<void>;
    close(): void;
  }

  function view(path: string, paused = false): Promise<Viewer> {
    return new Promise((resolve, reject) => {
      const req = request(`${base}${path}`, (res) => {
        const chunks: Buffer[] = [];
        if (paused) res.pause();
        res.on("data", (c: Buffer) => chunks.push(c));
        const ended = new Promise<void>((r) => res.on("end", r));
        res.on("error", () => {});
        resolve({ res, data: () => Buffer.concat(chunks), ended, close: () => req.destroy() });
      });
      req.on("error", reject);
      req.end();
    });
  }

  const jpeg = (r: number, g: number, b: number, width = 32) =>
    sharp({ create: { width, height: 24, channels: 3, background: { r, g, b } } })
      .jpeg()
      .toBuffer();

  test("mjpegPart: boundary, JPEG headers with the length, the bytes, CRLF", () => {
    const part = mjpegPart(new Uint8Array([0xff, 0xd8, 1, 2, 0xff, 0xd9]));
    assert.equal(
      part.toString("latin1"),
      "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 6\r\n\r\n\xff\xd8\x01\x02\xff\xd9\r\n",
    );
    assert.equal(MJPEG_CONTENT_TYPE, "multipart/x-mixed-replace; boundary=frame");
  });

  test("two viewers get the same JPEGs; a late one starts with the latest; one that leaves is dropped; closeAll ends them", async () => {
    const a = await view("/a");
    const b = await view("/b");
    assert.equal(a.res.statusCode, 200);
    assert.equal(a.res.headers["content-type"], "multipart/x-mixed-replace; boundary=frame");
    assert.match(a.res.headers["cache-control"] ?? "", /no-cache/);
    assert.equal(a.res.headers["x-accel-buffering"], "no");
    await waitFor(() => hub.size === 2, 2000, "two viewers");
    assert.equal(a.data().length, 0, "no frame yet");

    const jpegs = await Promise.all([jpeg(255, 0, 0), jpeg(0, 255, 0), jpeg(0, 0, 255, 48)]);
    for (const j of jpegs) {
      hub.publish(j);
      await sleep(20);
    }
    await waitFor(
      () => mjpegFrames(a.data()).length === 3 && mjpegFrames(b.data()).length === 3,
      3000,
      "3 parts",
    );
    assert.ok(a.data().equals(b.data()), "both viewers got the same bytes");
    const got = mjpegFrames(a.data());
    for (let i = 0; i < 3; i++) assert.ok(got[i].equals(jpegs[i]));
    const meta = await sharp(got[2]).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["jpeg", 48, 24]);

    const late = await view("/late");
    await waitFor(() => mjpegFrames(late.data()).length === 1, 2000, "the latest frame for a late viewer");
    assert.ok(mjpegFrames(late.data())[0].equals(jpegs[2]));
    assert.equal(hub.size, 3);

    a.close();
    await waitFor(() => hub.size === 2, 2000, "the closed viewer to be dropped");
    const next = await jpeg(9, 9, 9);
    hub.publish(next);
    await waitFor(() => mjpegFrames(b.data()).length === 4, 2000, "the 4th part");
    assert.ok(mjpegFrames(b.data())[3].equals(next));
    await waitFor(() => mjpegFrames(late.data()).length === 2, 2000, "the late viewer's 2nd part");

    hub.closeAll();
    await Promise.all([b.ended, late.ended]);
    assert.equal(hub.size, 0);
    assert.equal(mjpegFrames(b.data()).length, 4);
    assert.ok(b.data().equals(Buffer.concat([...jpegs, next].map(mjpegPart))), "nothing but the parts");

    // closeAll forgets the last frame: a new viewer waits for the next one.
    const fresh = await view("/fresh");
    await waitFor(() => hub.size === 1, 2000, "a new viewer");
    await sleep(100);
    assert.equal(fresh.data().length, 0);
    hub.publish(next);
    await waitFor(() => mjpegFrames(fresh.data()).length === 1, 2000, "the new viewer's frame");
    hub.closeAll();
    await fresh.ended;
  });

  test("a viewer that does not read skips frames instead of buffering them", async () => {
    const slow = await view("/slow", true);
    await waitFor(() => hub.size === 1, 2000, "the slow viewer");
    const res = serverSide.get("/slow")!;
    // 1 MiB parts (the hub never looks inside), numbered in two bytes near the end: 60 MiB in all,
    // far more than the socket buffers hold.
    const big = randomBytes(1 << 20);
    const partLength = mjpegPart(big).length;
    const published = 60;
    let maxQueued = 0;
    for (let i = 0; i < published; i++) {
      const j = Buffer.from(big);
      j.writeUInt16BE(i, j.length - 4);
      hub.publish(j);
      maxQueued = Math.max(maxQueued, res.writableLength);
      await sleep(1);
    }
    assert.ok(maxQueued <= 3 * partLength, `at most ~3 parts queued (${maxQueued} bytes)`);
    slow.res.resume();
    await waitFor(() => res.writableLength === 0, 5000, "the queue to drain");
    // Caught up: the next frame goes out.
    const last = Buffer.from(big);
    last.writeUInt16BE(published, last.length - 4);
    hub.publish(last);
    await waitFor(() => res.writableLength === 0, 5000, "the last part to go out");
    hub.closeAll();
    await slow.ended;
    const got = mjpegFrames(slow.data());
    assert.ok(got.length > 1 && got.length < published, `${got.length} of ${published + 1} parts delivered`);
    const numbers = got.map((j) => j.readUInt16BE(j.length - 4));
    assert.deepEqual(
      numbers,
      [...new Set(numbers)].sort((x, y) => x - y),
      "in order, none twice",
    );
    assert.equal(numbers.at(-1), published, "the frame after catching up is delivered");
  });
});

describe("source specs", () => {
  test("parseSourceSpec: camera numbers, device paths, stream URLs, browser, files", () => {
    assert.deepEqual(parseSourceSpec("0"), { kind: "device", url: "/dev/video0" });
    assert.deepEqual(parseSourceSpec(" 2 "), { kind: "device", url: "/dev/video2" });
    assert.deepEqual(parseSourceSpec("/dev/video1"), { kind: "device", url: "/dev/video1" });
    assert.deepEqual(parseSourceSpec("rtsp://user:pw@cam.local:554/stream1"), {
      kind: "stream",
      url: "rtsp://user:pw@cam.local:554/stream1",
    });
    assert.deepEqual(parseSourceSpec("HTTPS://cam/mjpg"), { kind: "stream", url: "HTTPS://cam/mjpg" });
    assert.equal(parseSourceSpec("srt://1.2.3.4:9000").kind, "stream");
    assert.deepEqual(parseSourceSpec("browser"), { kind: "browser", url: null });
    assert.deepEqual(parseSourceSpec("videos/lobby.mp4"), { kind: "file", url: "videos/lobby.mp4" });
    assert.deepEqual(parseSourceSpec("/srv/rec/0.mkv"), { kind: "file", url: "/srv/rec/0.mkv" });
  });

  function invalid(fn: () => unknown, message: RegExp): void {
    assert.throws(fn, (err: unknown) => {
      assert.ok(err instanceof StreamError);
      assert.equal(err.code, "invalid_source");
      assert.match(err.message, message);
      return true;
    });
  }

  test("validateSource: each bad input is an invalid_source naming the problem", () => {
    invalid(
      () => validateSource({ kind: "webcam" as never }),
      /kind must be one of browser, device, stream, file/,
    );
    invalid(() => validateSource({}), /kind must be one of/);
    invalid(() => validateSource({ kind: "browser", url: "rtsp://x/y" }), /browser source takes no url/);
    invalid(() => validateSource({ kind: "stream" }), /a stream source needs a url/);
    invalid(() => validateSource({ kind: "device", url: "" }), /a device source needs a url/);
    invalid(
      () => validateSource({ kind: "device", url: "video0" }),
      /V4L2 device path such as \/dev\/video0/,
    );
    invalid(() => validateSource({ kind: "stream", url: "ftp://cam/x" }), /stream url starts with rtsp:\/\//);
    invalid(
      () => validateSource({ kind: "file", url: join(dir, "absent.mp4") }),
      /absent\.mp4 does not exist/,
    );
    invalid(() => validateSource({ kind: "browser", name: "x".repeat(101) }), /name must be at most 100/);
    invalid(
      () => validateSource({ kind: "browser", options: { fps: 0 } }),
      /options\.fps must be a number from 0\.1 to 60/,
    );
    invalid(
      () => validateSource({ kind: "browser", options: { fps: "10" } }),
      /options\.fps must be a number/,
    );
    invalid(
      () => validateSource({ kind: "browser", options: { width: 5000 } }),
      /options\.width .* 32 to 3840/,
    );
    invalid(
      () => validateSource({ kind: "browser", options: { loop: "yes" } }),
      /options\.loop must be true or false/,
    );
    invalid(() => validateSource({ kind: "browser", options: { zoom: 2 } }), /unknown option zoom/);
  });

  test("validateSource: names, urls and options default from the record being changed", () => {
    const file = join(dir, "exists.bin");
    return writeFile(file, "x").then(() => {
      assert.deepEqual(validateSource({ kind: "file", url: file, options: { fps: 5, loop: true } }), {
        name: "file",
        kind: "file",
        url: file,
        options: { fps: 5, loop: true },
      });
      assert.equal(validateSource({ id: "door", kind: "browser" }).name, "door");
      assert.equal(validateSource({ kind: "browser", name: "  Door  " }).name, "Door");
      const base = {
        id: "cam",
        name: "Cam",
        kind: "stream" as const,
        url: "rtsp://cam/1",
        options: { fps: 5 },
        enabled: false,
        owner: null,
        createdAt: 0,
        updatedAt: 0,
      };
      assert.deepEqual(validateSource({ options: { width: 320 } }, base), {
        name: "Cam",
        kind: "stream",
        url: "rtsp://cam/1",
        options: { fps: 5, width: 320 },
      });
      invalid(() => validateSource({ url: null }, base), /a stream source needs a url/);
      assert.equal(validateSource({ kind: "browser", url: null }, base).url, null);
    });
  });
});

describe("pruneEvents", () => {
  let db: Database | undefined;
  after(async () => {
    await db?.close();
  });

  test("old events go with their snapshots; newer ones stay; files outside the data dir are never touched", async () => {
    const dataDir = join(dir, "data");
    db = await openDatabase({ dataDir });
    const now = Date.UTC(2025, 5, 15, 12);
    const DAY = 86_400_000;
    const event = (at: number, snapshot: string | null): NewEvent => ({
      at,
      sourceId: "cam",
      trackId: 1,
      kind: snapshot ? "violation" : "observation",
      label: snapshot ? "no_mask" : "mask",
      confidence: 0.9,
      box: [1, 2, 3, 4],
      snapshot,
    });
    const touch = async (path: string) => {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, "jpeg");
    };
    const oldSnap = "snapshots/cam/2025-06-01/old.jpg";
    const newSnap = "snapshots/cam/2025-06-14/new.jpg";
    await touch(join(dataDir, oldSnap));
    await touch(join(dataDir, newSnap));
    const old1 = await insertEvent(db, event(now - 14 * DAY, oldSnap));
    const old2 = await insertEvent(db, event(now - 8 * DAY, null));
    // Already gone from disk: counted as deleted, not as a file.
    const old3 = await insertEvent(db, event(now - 8 * DAY, "snapshots/cam/2025-06-07/gone.jpg"));
    const edge = await insertEvent(db, event(now - 7 * DAY, null));
    const fresh = await insertEvent(db, event(now - DAY, newSnap));

    // Rows the API would refuse (hand-edited or written by something else) pointing outside dataDir.
    const outside = join(dir, "outside.jpg");
    const outsideAbs = join(dir, "outside-abs.jpg");
    await touch(outside);
    await touch(outsideAbs);
    for (const snapshot of ["../outside.jpg", outsideAbs, "snapshots/../../outside.jpg"]) {
      await db.run(
        "INSERT INTO events (at, source_id, track_id, kind, label, confidence, box, snapshot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [now - 30 * DAY, "cam", 2, "violation", "no_mask", 0.9, "[0,0,1,1]", snapshot],
      );
    }

    const r = await pruneEvents(db, dataDir, 7, now);
    assert.deepEqual(r, { deleted: 6, files: 1, before: now - 7 * DAY });
    for (const e of [old1, old2, old3]) assert.equal(await getEvent(db, e.id), undefined);
    assert.deepEqual(await getEvent(db, edge.id), edge, "exactly N days old is kept");
    assert.deepEqual(await getEvent(db, fresh.id), fresh);
    assert.ok(!existsSync(join(dataDir, oldSnap)), "the old snapshot is removed");
    assert.ok(existsSync(join(dataDir, newSnap)), "the newer snapshot stays");
    assert.ok(existsSync(outside), "a ../ path is never deleted");
    assert.ok(existsSync(outsideAbs), "an absolute path is never deleted");
    const [{ n }] = await db.query<{ n: number }>("SELECT COUNT(*) AS n FROM events");
    assert.equal(Number(n), 2);

    assert.deepEqual(await pruneEvents(db, dataDir, 7, now), { deleted: 0, files: 0, before: now - 7 * DAY });
    await assert.rejects(pruneEvents(db, dataDir, 0, now), RangeError);
    await assert.rejects(pruneEvents(db, dataDir, Number.NaN, now), RangeError);
  });
});
