/**
 * Live-stream numbers for `npm run bench -- --stream`: one 640×480 source through the real
 * SourceMonitor (BlazeFace + mask classifier + tracker + smoothing + events committed to SQLite,
 * snapshots on), ONNX Runtime on one thread, fed back-to-back with the test scene (two faces, one
 * taking the mask off) repeated. Also the same frames with an MJPEG viewer attached (annotated
 * JPEG per frame), the violation's push → `event` latency, and once the whole ffmpeg path
 * (decode a generated video file, realtime off).
 */

import { mkdtemp, readdir, rm } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Database, openDatabase } from "../src/store/db.ts";
import { eventTotals } from "../src/store/events.ts";
import { createSource } from "../src/store/sources.ts";
import type { Frame } from "../src/streams/ffmpeg.ts";
import { createBus, type MonitorBus, type MonitorSettings, SourceMonitor } from "../src/streams/monitor.ts";
import { DEFAULT_DETECTOR, DETECTORS, Engine } from "../src/vision/engine.ts";
import type { RgbImage } from "../src/vision/types.ts";
import { sharedPath } from "../test/support/paths.ts";
import {
  hasFfmpeg,
  maskOffScene,
  renderFrame,
  VIDEO_HEIGHT,
  VIDEO_WIDTH,
  writeVideo,
} from "../test/support/video.ts";

export const STREAM_AIM_FPS = 30;
/** The live default (MASKWATCH_STREAM_DETECTOR's default). */
const DETECTOR = DEFAULT_DETECTOR;
const MODELS = [...DETECTORS[DETECTOR].models, "mask-classifier"];
/** The scene's frame where B takes the mask off (see maskOffScene). */
const MASK_OFF_FRAME = 30;

interface Pass {
  frames: number;
  /** Median and p90 of push → push resolved, ms. */
  medianMs: number;
  p90Ms: number;
  /** 1000 / median. */
  fps: number;
  /** Frames / wall time of the whole pass (stop/start between repeats included). */
  overallFps: number;
  wallMs: number;
  /** Median ms per stage: analyze (detect + classify), tracker + events (DB, snapshots, bus), annotate (viewer only), rest. */
  stagesMs: { analyze: number; trackEvents: number; annotate: number; other: number };
  violations: number;
  observations: number;
  /** Push of the frame whose processing raised the violation → `event` on the bus, ms (one per repeat). */
  latencyMs: number[];
  /** Frames from the mask-off frame to the violation's frame (the tracker's smoothing). */
  settleFrames: number[];
  dropped: number;
}

export interface StreamBench {
  detector: string;
  size: string;
  threads: number;
  repeats: number;
  sceneFrames: number;
  aimFps: number;
  pipeline: Pass;
  viewer: Pass;
  /** Medians of the pipeline pass's latencies. */
  latency: { medianMs: number; minMs: number; maxMs: number; count: number; settleFramesMedian: number };
  /** Events stored in the database by the pipeline pass (read back). */
  stored: { violations: number; observations: number };
  snapshots: number;
  ffmpeg: { frames: number; wallMs: number; fps: number; dropped: number } | { skipped: string };
}

/** Runs the stream benchmark, or returns null (with a message) when models or the dataset are missing. */
export async function benchStream(pulled: Set<string>, repeats: number): Promise<StreamBench | null> {
  const missing = MODELS.filter((m) => !pulled.has(m));
  if (missing.length) {
    console.error(`bench: skipping --stream: models not pulled (${missing.join(", ")})`);
    return null;
  }
  if (!sharedPath("datasets/kaggle-face-mask/annotations")) {
    console.error("bench: skipping --stream: the kaggle-face-mask dataset is absent (set MASKWATCH_SHARED)");
    return null;
  }
  const noFfmpeg = hasFfmpeg() ? null : "ffmpeg is not installed (apt-get install -y ffmpeg)";
  const { count, scene } = await maskOffScene();
  const frames: RgbImage[] = [];
  for (let i = 0; i < count; i++) {
    const data = await renderFrame(scene(i));
    frames.push({ data: new Uint8Array(data), width: VIDEO_WIDTH, height: VIDEO_HEIGHT });
  }

  const dataDir = await mkdtemp(join(tmpdir(), "maskwatch-bench-stream-"));
  const engine = new Engine({ threads: 1 });
  const db = await openDatabase({ dataDir });
  try {
    // Warm-up: sessions created, first runs done, outside the timings.
    for (let i = 0; i < 8; i++) await engine.analyze(frames[i % count], { detector: DETECTOR, mask: true });
    const settings: MonitorSettings = {
      detector: DETECTOR,
      window: 10,
      cooldownMs: 60_000,
      snapshots: true,
      blur: false,
      blurOthers: false,
      dataDir,
      fps: 10,
      maxWidth: VIDEO_WIDTH,
    };
    const pipeline = await runPass(db, engine, settings, frames, repeats, "bench-stream", false);
    const viewer = await runPass(db, engine, settings, frames, repeats, "bench-viewer", true);
    const lat = [...pipeline.latencyMs].sort((a, b) => a - b);
    const result: StreamBench = {
      detector: DETECTOR,
      size: `${VIDEO_WIDTH}x${VIDEO_HEIGHT}`,
      threads: 1,
      repeats,
      sceneFrames: count,
      aimFps: STREAM_AIM_FPS,
      pipeline,
      viewer,
      latency: {
        medianMs: median(lat),
        minMs: r2(lat[0] ?? Number.NaN),
        maxMs: r2(lat.at(-1) ?? Number.NaN),
        count: lat.length,
        settleFramesMedian: median(pipeline.settleFrames),
      },
      stored: await eventTotals(db, { sourceId: "bench-stream" }).then((t) => ({
        violations: t.violations,
        observations: t.observations,
      })),
      snapshots: await countFiles(join(dataDir, "snapshots")),
      ffmpeg: noFfmpeg
        ? { skipped: noFfmpeg }
        : await runFfmpeg(db, engine, settings, dataDir, count * repeats, (i) => scene(i % count)),
    };
    return result;
  } finally {
    await engine.close();
    await db.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Pushes the scene `repeats` times back-to-back; stop/start between repeats (new track ids). */
async function runPass(
  db: Database,
  engine: Engine,
  settings: MonitorSettings,
  frames: RgbImage[],
  repeats: number,
  id: string,
  withViewer: boolean,
): Promise<Pass> {
  let analyzeStart = 0;
  let analyzeEnd = 0;
  let frameAt = 0;
  let pushAt = 0;
  let sceneIndex = 0;
  const bus: MonitorBus = createBus();
  const source = await createSource(db, { id, name: id, kind: "browser" });
  const monitor = new SourceMonitor(source, settings, {
    analyze: async (image, options) => {
      analyzeStart = performance.now();
      try {
        return await engine.analyze(image, options);
      } finally {
        analyzeEnd = performance.now();
      }
    },
    db,
    bus,
  });
  const latencyMs: number[] = [];
  const settleFrames: number[] = [];
  let violations = 0;
  let observations = 0;
  bus.on("event", (e) => {
    if (e.kind !== "violation") {
      observations++;
      return;
    }
    violations++;
    latencyMs.push(r2(performance.now() - pushAt));
    settleFrames.push(sceneIndex - MASK_OFF_FRAME);
  });
  bus.on("frame", () => {
    frameAt = performance.now();
  });
  const total: number[] = [];
  const analyze: number[] = [];
  const trackEvents: number[] = [];
  const annotate: number[] = [];
  const other: number[] = [];
  let dropped = 0;
  const t0 = performance.now();
  for (let r = 0; r < repeats; r++) {
    monitor.start();
    if (withViewer) monitor.mjpeg.add(fakeViewer());
    for (let i = 0; i < frames.length; i++) {
      sceneIndex = i;
      frameAt = analyzeStart = analyzeEnd = 0;
      const frame: Frame = { image: frames[i], at: Date.now(), seq: r * frames.length + i };
      pushAt = performance.now();
      await monitor.push(frame);
      const done = performance.now();
      if (!frameAt || !analyzeEnd)
        throw new Error(`${id}: frame ${i} was not processed (${monitor.status().lastError})`);
      const t = done - pushAt;
      total.push(t);
      analyze.push(analyzeEnd - analyzeStart);
      trackEvents.push(frameAt - analyzeEnd);
      annotate.push(done - frameAt);
      other.push(t - (done - analyzeStart));
    }
    dropped += monitor.status().dropped;
    await monitor.stop();
  }
  const wallMs = performance.now() - t0;
  const m = median(total);
  return {
    frames: total.length,
    medianMs: m,
    p90Ms: quantile(total, 0.9),
    fps: r2(1000 / m),
    overallFps: r2((1000 * total.length) / wallMs),
    wallMs: Math.round(wallMs),
    stagesMs: {
      analyze: median(analyze),
      trackEvents: median(trackEvents),
      annotate: median(annotate),
      other: median(other),
    },
    violations,
    observations,
    latencyMs,
    settleFrames,
    dropped,
  };
}

/** The whole path once: a generated video file → ffmpeg (realtime off, no frame dropped) → the monitor. */
async function runFfmpeg(
  db: Database,
  engine: Engine,
  settings: MonitorSettings,
  dataDir: string,
  count: number,
  scene: Parameters<typeof writeVideo>[2],
): Promise<{ frames: number; wallMs: number; fps: number; dropped: number } | { skipped: string }> {
  const file = join(dataDir, "scene.mkv");
  await writeVideo(file, count, scene, 10);
  const bus = createBus();
  const source = await createSource(db, {
    id: "bench-file",
    name: "bench-file",
    kind: "file",
    url: file,
    options: { realtime: false, fps: 10 },
  });
  const monitor = new SourceMonitor(source, settings, {
    analyze: (image, options) => engine.analyze(image, options),
    db,
    bus,
  });
  const ended = new Promise<string | null>((resolve) => {
    bus.on("status", (s) => {
      if (s.state === "ended") resolve(s.lastError);
    });
    setTimeout(() => resolve("timed out after 300 s"), 300_000).unref();
  });
  const t0 = performance.now();
  monitor.start();
  const error = await ended;
  await monitor.settled();
  const wallMs = performance.now() - t0;
  const { frames, dropped } = monitor.status();
  await monitor.stop();
  if (error || frames === 0) return { skipped: `ffmpeg path failed: ${error ?? "no frames"}` };
  return { frames, wallMs: Math.round(wallMs), fps: r2((1000 * frames) / wallMs), dropped };
}

/** A viewer that takes every part (so the monitor annotates each frame) and discards it. */
function fakeViewer(): ServerResponse {
  return {
    writableLength: 0,
    writeHead() {},
    flushHeaders() {},
    on() {},
    write: () => true,
    end() {},
  } as unknown as ServerResponse;
}

async function countFiles(dir: string): Promise<number> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).length;
  } catch {
    return 0;
  }
}

function quantile(values: number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return r2(sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1) + 0.5))]);
}

const median = (values: number[]) => quantile(values, 0.5);
const r2 = (v: number) => Math.round(v * 100) / 100;

const verdict = (fps: number) => `aim ≥ ${STREAM_AIM_FPS} fps: ${fps >= STREAM_AIM_FPS ? "met" : "MISSED"}`;

/** The printed table. */
export function formatStream(s: StreamBench): string {
  const p = s.pipeline;
  const v = s.viewer;
  const ms = (x: number) => x.toFixed(1);
  const lines = [
    `stream ${s.detector} ${s.size}, ONNX Runtime ${s.threads} thread, mask classifier + tracker + SQLite events (snapshots on), ${s.repeats}×${s.sceneFrames} frames back-to-back`,
    `  pipeline      median ${ms(p.medianMs)} ms/frame (p90 ${ms(p.p90Ms)}) → ${p.fps.toFixed(1)} fps   ${verdict(p.fps)}`,
    `                overall ${p.overallFps.toFixed(1)} fps (${p.frames} frames in ${(p.wallMs / 1000).toFixed(2)} s)   ${verdict(p.overallFps)}`,
    `  stages        analyze (detect+classify) ${ms(p.stagesMs.analyze)}  tracker+events ${ms(p.stagesMs.trackEvents)}  other ${ms(p.stagesMs.other)} ms (medians)`,
    `  with viewer   median ${ms(v.medianMs)} ms/frame → ${v.fps.toFixed(1)} fps, overall ${v.overallFps.toFixed(1)} fps; annotate (MJPEG JPEG) ${ms(v.stagesMs.annotate)} ms   ${verdict(v.fps)}`,
    `  latency       violation frame pushed → event on bus (after commit): median ${ms(s.latency.medianMs)} ms (min ${ms(s.latency.minMs)}, max ${ms(s.latency.maxMs)}, ${s.latency.count} violations); raised ${s.latency.settleFramesMedian} frames after mask-off (smoothing)`,
    `  events        ${p.violations} violations, ${p.observations} observations (pipeline pass; stored ${s.stored.violations}/${s.stored.observations}), ${s.snapshots} snapshots in all; dropped ${p.dropped}`,
  ];
  if ("skipped" in s.ffmpeg) lines.push(`  ffmpeg file   skipped: ${s.ffmpeg.skipped}`);
  else
    lines.push(
      `  ffmpeg file   ${s.ffmpeg.frames} frames in ${(s.ffmpeg.wallMs / 1000).toFixed(2)} s → ${s.ffmpeg.fps.toFixed(1)} fps (decode included, dropped ${s.ffmpeg.dropped})   ${verdict(s.ffmpeg.fps)}`,
    );
  return lines.join("\n");
}
