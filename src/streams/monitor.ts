/**
 * The frame loop of one source: detect → classify masks → track → smooth → events.
 * An event is committed to the database before anyone hears of it; a violation is raised once
 * per track when it turns no_mask / incorrect, and again only after a cooldown.
 */
import { EventEmitter } from "node:events";

import sharp from "sharp";
import type { Database } from "../store/db.ts";
import { type EventRecord, insertEvent, listEvents } from "../store/events.ts";
import type { SourceRecord } from "../store/sources.ts";
import { listZones } from "../store/zones.ts";
import { drawFaces, LABEL_NAMES } from "../vision/draw.ts";
import type { AnalyzeOptions } from "../vision/engine.ts";
import { type Box, iou } from "../vision/nms.ts";
import { type LabelChange, type Track, Tracker } from "../vision/tracker.ts";
import type { Face, MaskLabel, RgbImage } from "../vision/types.ts";
import { type CaptureState, FfmpegCapture, type Frame } from "./ffmpeg.ts";
import { MjpegHub } from "./mjpeg.ts";
import { type ActiveZone, zoneOf } from "./zones.ts";

/** Runs detection (and mask classification) on one frame; the server passes its worker pool. */
export type Analyze = (image: RgbImage, options: AnalyzeOptions) => Promise<{ faces: Face[] }>;

export interface MonitorSettings {
  /** Detector for live frames (default blazeface: the fast one). */
  detector: string;
  /** The detector's score threshold (default: the detector's). */
  threshold?: number;
  /** The classifier's mask threshold per frame (default: the classifier's). */
  maskThreshold?: number;
  minFaceSize?: number;
  /** Frames averaged per track before its label settles or changes (old app: 10). */
  window: number;
  /** A track raises another violation only this long after its last one. */
  cooldownMs: number;
  /** Save a JPEG of the face with each violation (under dataDir/snapshots). */
  snapshots: boolean;
  /** Blur the face in stored snapshots. */
  blur: boolean;
  /** Blur every face but the violator's in the stored frame (privacy of passers-by). */
  blurOthers: boolean;
  dataDir: string;
  /** Default fps cap and width for ffmpeg sources (a source's options override them). */
  fps: number;
  maxWidth: number;
}

export type MonitorState = "stopped" | "starting" | "running" | "reconnecting" | "ended";

export interface SourceStatus {
  id: string;
  state: MonitorState;
  /** Frames analysed per second (recent average). */
  fps: number;
  frames: number;
  /** Frames skipped because the previous one was still being analysed. */
  dropped: number;
  /** Faces tracked in the latest frame. */
  faces: number;
  events: number;
  /** Frame arrival → event committed, ms, of the latest event. */
  latencyMs: number | null;
  lastError: string | null;
  lastFrameAt: number | null;
  startedAt: number | null;
  /** The replica running the source, when several share the work. */
  replica?: string;
}

export interface LiveTrack {
  id: number;
  box: [number, number, number, number];
  label: MaskLabel | null;
  confidence: number;
}

export interface LiveFrame {
  sourceId: string;
  at: number;
  seq: number;
  width: number;
  height: number;
  tracks: LiveTrack[];
}

/** What monitors announce: `event` (EventRecord, after commit), `frame` (LiveFrame), `status` (SourceStatus). */
export type MonitorBus = EventEmitter<{
  event: [EventRecord];
  frame: [LiveFrame];
  status: [SourceStatus];
}>;

export function createBus(): MonitorBus {
  const bus: MonitorBus = new EventEmitter();
  bus.setMaxListeners(0);
  return bus;
}

const VIOLATIONS: ReadonlySet<MaskLabel> = new Set(["no_mask", "incorrect"]);
/** Overlap at which a new track's violation is taken for an earlier run's (same person, same place). */
const SAME_PLACE_IOU = 0.3;
/** How often a monitor reads its source's zones (a change on another replica shows within this). */
const ZONES_REFRESH_MS = 5_000;

export class SourceMonitor {
  readonly mjpeg = new MjpegHub();
  private tracker: Tracker;
  private capture: FfmpegCapture | undefined;
  private state: MonitorState = "stopped";
  private busy = false;
  private next: Frame | undefined;
  private frames = 0;
  private dropped = 0;
  private events = 0;
  private fps = 0;
  /** Seconds between analysed frames (moving average). */
  private interval = 0;
  private lastFrameAt: number | null = null;
  private startedAt: number | null = null;
  private lastError: string | null = null;
  private latencyMs: number | null = null;
  private visible: Track[] = [];
  private readonly lastViolation = new Map<number, number>();
  /** Violations of this source within the cooldown before this run started (see start()). */
  private earlier: Promise<EventRecord[]> = Promise.resolve([]);
  private idle: Promise<void> = Promise.resolve();
  /** The source's active zones, read from the database at most every ZONES_REFRESH_MS. */
  private zones: ActiveZone[] = [];
  private zonesReadAt = Number.NEGATIVE_INFINITY;

  constructor(
    readonly source: SourceRecord,
    private readonly settings: MonitorSettings,
    private readonly deps: {
      analyze: Analyze;
      db: Database;
      bus: MonitorBus;
      /** With several replicas: whether this one still holds the source (no writes after losing it). */
      mayWrite?: () => boolean;
      replica?: string;
    },
  ) {
    this.tracker = new Tracker({ window: settings.window });
  }

  get running(): boolean {
    return this.state !== "stopped" && this.state !== "ended";
  }

  start(): void {
    if (this.running) return;
    // Settings may have changed since the last run (the smoothing window among them).
    this.tracker = new Tracker({ window: this.settings.window });
    this.lastViolation.clear();
    // A run that follows another (a restart, or a takeover from a replica that died) starts with new
    // track ids: a violation within the cooldown at the same place, with the same label, is the same person.
    const since = Date.now() - this.settings.cooldownMs;
    this.earlier =
      this.settings.cooldownMs > 0
        ? listEvents(this.deps.db, { sourceId: this.source.id, kind: "violation", from: since, limit: 100 })
            .then((page) => page.events)
            .catch(() => [])
        : Promise.resolve([]);
    this.visible = [];
    this.reloadZones();
    this.frames = 0;
    this.dropped = 0;
    this.fps = 0;
    this.interval = 0;
    this.lastError = null;
    this.startedAt = Date.now();
    const s = this.source;
    if (s.kind === "browser") {
      this.setState("running");
      return;
    }
    const opt = s.options;
    this.capture = new FfmpegCapture(
      {
        kind: s.kind,
        url: s.url ?? "",
        fps: num(opt.fps) ?? this.settings.fps,
        maxWidth: num(opt.width) ?? this.settings.maxWidth,
        loop: opt.loop === true,
        realtime: opt.realtime !== false,
      },
      {
        frame: (frame) => this.push(frame),
        state: (state, error) => this.onCaptureState(state, error),
      },
    );
    this.setState("starting");
    this.capture.start();
  }

  async stop(): Promise<void> {
    this.state = "stopped";
    const capture = this.capture;
    this.capture = undefined;
    this.next = undefined;
    await capture?.stop();
    await this.idle;
    this.visible = [];
    this.mjpeg.closeAll();
    this.setState("stopped");
  }

  /** Waits until the frame in progress (and any pending one) is done. */
  settled(): Promise<void> {
    return this.idle;
  }

  /**
   * A frame from the capture or the browser. While one is being analysed the newest waits and
   * older waiting ones are dropped; the returned promise ends when this frame's turn is over.
   */
  push(frame: Frame): Promise<void> {
    if (!this.running) return Promise.resolve();
    if (this.busy) {
      if (this.next) this.dropped++;
      this.next = frame;
      return this.idle;
    }
    this.busy = true;
    this.idle = this.loop(frame);
    return this.idle;
  }

  status(): SourceStatus {
    return {
      id: this.source.id,
      state: this.state,
      // A stopped or ended source shows no rate, not the last one it had.
      fps: this.state === "running" ? Math.round(this.fps * 10) / 10 : 0,
      frames: this.frames,
      dropped: this.dropped,
      faces: this.visible.length,
      events: this.events,
      latencyMs: this.latencyMs,
      lastError: this.lastError,
      lastFrameAt: this.lastFrameAt,
      startedAt: this.startedAt,
      ...(this.deps.replica ? { replica: this.deps.replica } : {}),
    };
  }

  /** Tracks in the latest frame. */
  tracks(): LiveTrack[] {
    return this.visible.map(liveTrack);
  }

  private async loop(first: Frame): Promise<void> {
    try {
      let frame: Frame | undefined = first;
      // Frames already taken are finished after a file ends; stop() discards them.
      while (frame && this.state !== "stopped") {
        await this.process(frame);
        frame = this.next;
        this.next = undefined;
      }
    } finally {
      this.busy = false;
    }
  }

  /** Zones are read again at the next frame (after a change made on this replica). */
  reloadZones(): void {
    this.zonesReadAt = Number.NEGATIVE_INFINITY;
  }

  private async activeZones(): Promise<ActiveZone[]> {
    if (Date.now() - this.zonesReadAt >= ZONES_REFRESH_MS) {
      this.zonesReadAt = Date.now();
      try {
        this.zones = (await listZones(this.deps.db, this.source.id)).filter((z) => z.active);
      } catch (err) {
        this.lastError = `zones not read: ${(err as Error).message}`;
      }
    }
    return this.zones;
  }

  private async process(frame: Frame): Promise<void> {
    const { image } = frame;
    let faces: Face[];
    try {
      // The pool takes the pixels it is given (transferred); keep ours for drawing.
      const copy = { data: image.data.slice(), width: image.width, height: image.height };
      const mask =
        this.settings.maskThreshold === undefined ? true : { threshold: this.settings.maskThreshold };
      ({ faces } = await this.deps.analyze(copy, {
        detector: this.settings.detector,
        threshold: this.settings.threshold,
        mask,
        minFaceSize: this.settings.minFaceSize,
      }));
    } catch (err) {
      this.lastError = `analysis failed: ${(err as Error).message}`;
      this.deps.bus.emit("status", this.status());
      return;
    }
    if (this.lastFrameAt !== null) {
      const dt = (frame.at - this.lastFrameAt) / 1000;
      // Average the intervals, not their inverses: frames read in a burst (ms apart) would make
      // an average of rates jump to hundreds of fps.
      if (dt > 0) {
        this.interval = this.interval ? 0.8 * this.interval + 0.2 * dt : dt;
        this.fps = 1 / this.interval;
      }
    }
    this.lastFrameAt = frame.at;
    this.frames++;
    // With active zones, only faces whose centre is in one count (and are tracked).
    const zones = await this.activeZones();
    if (zones.length)
      faces = faces.filter((f) => zoneOf(f.box, image.width, image.height, zones) !== undefined);
    const update = this.tracker.update(faces);
    this.visible = update.visible;
    for (const id of update.ended) this.lastViolation.delete(id);
    for (const change of update.changes) {
      try {
        await this.record(change, frame);
      } catch (err) {
        this.lastError = `event not stored: ${(err as Error).message}`;
      }
    }
    this.deps.bus.emit("frame", {
      sourceId: this.source.id,
      at: frame.at,
      seq: frame.seq,
      width: image.width,
      height: image.height,
      tracks: this.tracks(),
    });
    if (this.mjpeg.size > 0) {
      try {
        this.mjpeg.publish(await annotate(image, this.visible));
      } catch (err) {
        this.lastError = `drawing failed: ${(err as Error).message}`;
      }
    }
  }

  /** One settled label change → at most one event, committed, then announced. */
  private async record(change: LabelChange, frame: Frame): Promise<void> {
    const { track, to } = change;
    // A replica whose lease has run out may already have been replaced: it must not write.
    if (this.deps.mayWrite && !this.deps.mayWrite()) return;
    let kind: "violation" | "observation" = "observation";
    if (VIOLATIONS.has(to)) {
      if (!this.lastViolation.has(track.id)) {
        const box = track.box as [number, number, number, number];
        const same = (await this.earlier).find(
          (e) =>
            e.label === to && frame.at - e.at < this.settings.cooldownMs && iou(e.box, box) >= SAME_PLACE_IOU,
        );
        if (same) this.lastViolation.set(track.id, same.at);
      }
      const last = this.lastViolation.get(track.id);
      if (last !== undefined && frame.at - last < this.settings.cooldownMs) return;
      this.lastViolation.set(track.id, frame.at);
      kind = "violation";
    }
    const saved = kind === "violation" && this.settings.snapshots;
    const [jpeg, whole] = saved
      ? await Promise.all([this.snapshot(frame, track), this.context(frame, track.id)])
      : [undefined, undefined];
    const event = await insertEvent(
      this.deps.db,
      {
        at: frame.at,
        sourceId: this.source.id,
        trackId: track.id,
        kind,
        label: to,
        confidence: round(track.confidence),
        box: track.box.map(Math.round) as [number, number, number, number],
        snapshot: null,
        zone: zoneOf(track.box, frame.image.width, frame.image.height, this.zones) ?? null,
      },
      jpeg,
      whole,
    );
    this.events++;
    this.latencyMs = Date.now() - frame.at;
    this.deps.bus.emit("event", event);
  }

  /** A JPEG of the face (blurred when configured), stored with its event. */
  private async snapshot(frame: Frame, track: Track): Promise<Uint8Array> {
    const { image } = frame;
    const [x1, y1, x2, y2] = track.box;
    const side = 1.6 * Math.max(x2 - x1, y2 - y1, 8);
    const left = clamp(Math.round((x1 + x2) / 2 - side / 2), 0, image.width - 1);
    const top = clamp(Math.round((y1 + y2) / 2 - side / 2), 0, image.height - 1);
    const width = clamp(Math.round(side), 1, image.width - left);
    const height = clamp(Math.round(side), 1, image.height - top);
    let img = sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length), {
      raw: { width: image.width, height: image.height, channels: 3 },
    }).extract({ left, top, width, height });
    if (this.settings.blur) img = img.blur(Math.max(4, side / 10));
    return img.jpeg({ quality: 85 }).toBuffer();
  }

  /** The whole frame for the violation's review, faces blurred as the settings say. */
  private context(frame: Frame, trackId: number): Promise<Uint8Array> {
    const { blur, blurOthers } = this.settings;
    const boxes = blur || blurOthers ? this.tracker.tracks().filter((t) => blur || t.id !== trackId) : [];
    return contextFrame(
      frame.image,
      boxes.map((t) => t.box),
    );
  }

  private onCaptureState(state: CaptureState, error?: string): void {
    if (error) this.lastError = error;
    if (state === "stopped") return; // stop() sets its own state
    this.setState(state);
  }

  private setState(state: MonitorState): void {
    this.state = state;
    this.deps.bus.emit("status", this.status());
  }
}

/** The frame with each track's box coloured by its label, and "#id label confidence". */
export function annotate(image: RgbImage, tracks: readonly Track[]): Promise<Buffer> {
  const faces: Face[] = tracks.map((t) => ({
    box: t.box,
    score: t.score,
    ...(t.label
      ? { mask: { label: t.label, score: t.confidence, scores: { mask: 0, no_mask: 0, incorrect: 0 } } }
      : {}),
  }));
  return drawFaces(image, faces, {
    quality: 80,
    caption: (_f, i) => {
      const t = tracks[i];
      return t.label ? `#${t.id} ${LABEL_NAMES[t.label]} ${Math.round(t.confidence * 100)}%` : `#${t.id}`;
    },
  });
}

function liveTrack(t: Track): LiveTrack {
  return {
    id: t.id,
    box: t.box.map((v) => Math.round(v)) as LiveTrack["box"],
    label: t.label ?? null,
    confidence: round(t.confidence),
  };
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : undefined;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/**
 * A frame as a JPEG at most 960 px wide, with the faces in `blurred` ([x1, y1, x2, y2] in its pixels)
 * blurred beyond recognition: the context stored with a violation.
 */
export async function contextFrame(image: RgbImage, blurred: readonly Box[]): Promise<Uint8Array> {
  const raw = { raw: { width: image.width, height: image.height, channels: 3 as const } };
  const pixels = () => sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length), raw);
  let img = pixels();
  const layers = [];
  for (const [x1, y1, x2, y2] of blurred) {
    const left = clamp(Math.round(x1), 0, image.width - 1);
    const top = clamp(Math.round(y1), 0, image.height - 1);
    const width = clamp(Math.round(x2 - x1), 1, image.width - left);
    const height = clamp(Math.round(y2 - y1), 1, image.height - top);
    const face = await pixels()
      .extract({ left, top, width, height })
      .blur(Math.max(4, Math.max(width, height) / 10))
      .png()
      .toBuffer();
    layers.push({ input: face, left, top });
  }
  if (layers.length) img = sharp(await img.composite(layers).png().toBuffer());
  if (image.width > 960) img = img.resize({ width: 960 });
  return img.jpeg({ quality: 75 }).toBuffer();
}
