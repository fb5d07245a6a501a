/**
 * Multi-face tracker for video streams: gives each face a stable id across frames and a mask label
 * that does not flap with classifier noise. Pure and deterministic: same frames in, same output.
 *
 * Association is greedy IoU against a constant-velocity prediction (enough for faces, which move
 * smoothly and rarely overlap for long); labels are a windowed average of the classifier's scores with
 * hysteresis, so one bad crop cannot raise or clear an alert.
 */
import { type Box, iou } from "./nms.ts";
import type { Face, MaskLabel, MaskResult } from "./types.ts";

export interface TrackerOptions {
  /** Minimum IoU between a track's predicted box and a detection to associate them (default 0.3). */
  iouThreshold?: number;
  /** Frames a confirmed track survives without a matching detection (occlusion), default 15. */
  maxMissed?: number;
  /** Consecutive matched frames before a new track is confirmed and gets an id (default 2). A tentative track that misses one frame is dropped. */
  minHits?: number;
  /** Smoothing window: the last N frames' mask probabilities are averaged (default 10). */
  window?: number;
  /** Frames with mask scores needed before a track's label first settles (default 3, clamped to window). */
  settleFrames?: number;
  /** Hysteresis on the averaged violation probability p = avg(no_mask + incorrect): a track labelled mask becomes a violation when p >= enter (default 0.6) ... */
  enter?: number;
  /** ... and a violation track goes back to mask when p <= exit (default 0.4). First settle: p >= 0.5 → violation. */
  exit?: number;
}

/** What callers see: a snapshot copy, never internal state. */
export interface Track {
  /** 1, 2, 3… in order of confirmation; never reused within one Tracker (until reset()). */
  id: number;
  /** The matched detection's box this frame, or the predicted box while missed. */
  box: Box;
  score: number;
  landmarks?: Face["landmarks"];
  /** This frame's raw classifier result, when the face had one. */
  mask?: MaskResult;
  /** Smoothed, settled label (undefined until settled). */
  label?: MaskLabel;
  /** Averaged probability of `label` over the window (0 when unsettled). */
  confidence: number;
  /** Matched frames. */
  hits: number;
  /** Frames since creation (0 on the frame the track was created). */
  age: number;
  /** Consecutive frames without a match (0 when seen this frame). */
  missed: number;
}

export interface LabelChange {
  track: Track;
  from: MaskLabel | undefined;
  to: MaskLabel;
}

export interface TrackerUpdate {
  /** Confirmed tracks matched in this frame (visible now), sorted by id. */
  visible: Track[];
  /** Label settles / changes that happened in this frame (first settle has from: undefined). */
  changes: LabelChange[];
  /** Ids of confirmed tracks removed in this frame (missed more than maxMissed). */
  ended: number[];
}

export const TRACKER_DEFAULTS: Readonly<Required<TrackerOptions>> = Object.freeze({
  iouThreshold: 0.3,
  maxMissed: 15,
  minHits: 2,
  window: 10,
  settleFrames: 3,
  enter: 0.6,
  exit: 0.4,
});

interface TrackState {
  /** 0 while tentative. */
  id: number;
  /** Last matched detection box. */
  last: Box;
  /** Box reported this frame: `last` when matched, the prediction while coasting. */
  shown: Box;
  /** Per-frame velocity of centre x, y and width, height. */
  vx: number;
  vy: number;
  vw: number;
  vh: number;
  /** False until the second observation; until then the face could be moving at any speed. */
  hasVelocity: boolean;
  score: number;
  landmarks?: Face["landmarks"];
  mask?: MaskResult;
  hits: number;
  age: number;
  missed: number;
  /** Ring buffer of [mask, no_mask, incorrect] per frame with scores. */
  probs: Float64Array;
  count: number;
  next: number;
  label?: MaskLabel;
  confidence: number;
}

interface Pair {
  overlap: number;
  track: number;
  face: number;
  confirmed: boolean;
}

function checkInt(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min)
    throw new RangeError(`Tracker: ${name} must be an integer >= ${min}, got ${value}`);
}

function checkUnit(name: string, value: number, openAtZero: boolean): void {
  const ok = Number.isFinite(value) && value <= 1 && (openAtZero ? value > 0 : value >= 0);
  if (!ok)
    throw new RangeError(`Tracker: ${name} must be in ${openAtZero ? "(0, 1]" : "[0, 1]"}, got ${value}`);
}

function resolve(options: TrackerOptions): Required<TrackerOptions> {
  const o = { ...TRACKER_DEFAULTS };
  for (const key of Object.keys(TRACKER_DEFAULTS) as (keyof TrackerOptions)[]) {
    const v = options[key];
    if (v !== undefined) o[key] = v;
  }
  checkUnit("iouThreshold", o.iouThreshold, true);
  checkInt("maxMissed", o.maxMissed, 0);
  checkInt("minHits", o.minHits, 1);
  checkInt("window", o.window, 1);
  checkInt("settleFrames", o.settleFrames, 1);
  checkUnit("enter", o.enter, false);
  checkUnit("exit", o.exit, false);
  if (o.exit > o.enter)
    throw new RangeError(`Tracker: exit (${o.exit}) must not be greater than enter (${o.enter})`);
  o.settleFrames = Math.min(o.settleFrames, o.window);
  return o;
}

/** The box `steps` frames after the last observation, at the track's current velocity. */
function predict(t: TrackState, steps: number): Box {
  const b = t.last;
  if (steps === 0 || (t.vx === 0 && t.vy === 0 && t.vw === 0 && t.vh === 0)) return [b[0], b[1], b[2], b[3]];
  const cx = (b[0] + b[2]) / 2 + t.vx * steps;
  const cy = (b[1] + b[3]) / 2 + t.vy * steps;
  // A shrinking face extrapolated through a long occlusion must not turn inside out.
  const w = Math.max(0, b[2] - b[0] + t.vw * steps);
  const h = Math.max(0, b[3] - b[1] + t.vh * steps);
  return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2];
}

function violation(noMask: number, incorrect: number): MaskLabel {
  return incorrect > noMask ? "incorrect" : "no_mask";
}

function snapshot(t: TrackState): Track {
  const s: Track = {
    id: t.id,
    box: [t.shown[0], t.shown[1], t.shown[2], t.shown[3]],
    score: t.score,
    confidence: t.confidence,
    hits: t.hits,
    age: t.age,
    missed: t.missed,
  };
  if (t.landmarks !== undefined) s.landmarks = t.landmarks;
  if (t.mask !== undefined) s.mask = t.mask;
  if (t.label !== undefined) s.label = t.label;
  return s;
}

export class Tracker {
  readonly options: Readonly<Required<TrackerOptions>>;
  /** Where the first settle splits mask from violation: 0.5, kept inside [exit, enter] so a fresh label is never already past its own hysteresis band. */
  readonly #settleAt: number;
  #tracks: TrackState[] = [];
  #nextId = 1;

  constructor(options: TrackerOptions = {}) {
    this.options = Object.freeze(resolve(options));
    this.#settleAt = Math.min(this.options.enter, Math.max(this.options.exit, 0.5));
  }

  update(faces: readonly Face[]): TrackerUpdate {
    const { iouThreshold, maxMissed, minHits } = this.options;
    const tracks = this.#tracks;

    const pairs: Pair[] = [];
    for (let i = 0; i < tracks.length; i++) {
      const t = tracks[i];
      const predicted = predict(t, t.missed + 1);
      // Without a velocity the prediction is just the last box; halving the gate still picks up a face
      // moving ~70% of its width per frame, which would otherwise never survive to its second frame.
      const gate = t.hasVelocity ? iouThreshold : iouThreshold / 2;
      for (let j = 0; j < faces.length; j++) {
        const overlap = iou(predicted, faces[j].box);
        if (overlap >= gate) pairs.push({ overlap, track: i, face: j, confirmed: t.id > 0 });
      }
    }
    pairs.sort(
      (a, b) =>
        b.overlap - a.overlap ||
        Number(b.confirmed) - Number(a.confirmed) ||
        a.track - b.track ||
        a.face - b.face,
    );
    const trackFace = new Int32Array(tracks.length).fill(-1);
    const faceTaken = new Uint8Array(faces.length);
    for (const p of pairs) {
      if (trackFace[p.track] >= 0 || faceTaken[p.face]) continue;
      trackFace[p.track] = p.face;
      faceTaken[p.face] = 1;
    }

    const alive: TrackState[] = [];
    const ended: number[] = [];
    const seen = new Set<TrackState>();
    const scored = new Set<TrackState>();
    for (let i = 0; i < tracks.length; i++) {
      const t = tracks[i];
      t.age++;
      const j = trackFace[i];
      if (j >= 0) {
        if (this.#observe(t, faces[j])) scored.add(t);
        seen.add(t);
        alive.push(t);
      } else if (t.id === 0) {
        // Tentative: a miss means it was most likely a false positive.
      } else if (t.missed + 1 > maxMissed) {
        ended.push(t.id);
      } else {
        t.missed++;
        t.mask = undefined;
        t.shown = predict(t, t.missed);
        alive.push(t);
      }
    }
    for (let j = 0; j < faces.length; j++) {
      if (faceTaken[j]) continue;
      const t = this.#create(faces[j]);
      if (faces[j].mask) scored.add(t);
      seen.add(t);
      alive.push(t);
    }

    const visible: Track[] = [];
    const changes: LabelChange[] = [];
    for (const t of alive) {
      let relabel = scored.has(t) && t.id > 0;
      if (t.id === 0 && t.hits >= minHits) {
        t.id = this.#nextId++;
        relabel = true;
      }
      if (!seen.has(t) || t.id === 0) continue;
      const from = t.label;
      if (relabel) this.#relabel(t);
      const snap = snapshot(t);
      visible.push(snap);
      if (t.label !== undefined && t.label !== from) changes.push({ track: snap, from, to: t.label });
    }
    this.#tracks = alive;
    visible.sort((a, b) => a.id - b.id);
    changes.sort((a, b) => a.track.id - b.track.id);
    ended.sort((a, b) => a - b);
    return { visible, changes, ended };
  }

  /** Confirmed tracks alive now (visible or coasting), sorted by id. */
  tracks(): Track[] {
    return this.#tracks
      .filter((t) => t.id > 0)
      .map(snapshot)
      .sort((a, b) => a.id - b.id);
  }

  /** Forgets everything; ids restart at 1. */
  reset(): void {
    this.#tracks = [];
    this.#nextId = 1;
  }

  #create(face: Face): TrackState {
    const last: Box = [face.box[0], face.box[1], face.box[2], face.box[3]];
    const t: TrackState = {
      id: 0,
      last,
      shown: last,
      vx: 0,
      vy: 0,
      vw: 0,
      vh: 0,
      hasVelocity: false,
      score: face.score,
      landmarks: face.landmarks,
      mask: face.mask,
      hits: 1,
      age: 0,
      missed: 0,
      probs: new Float64Array(this.options.window * 3),
      count: 0,
      next: 0,
      confidence: 0,
    };
    if (face.mask) this.#push(t, face.mask);
    return t;
  }

  /** Folds a matched detection into the track; true when it carried mask scores. */
  #observe(t: TrackState, face: Face): boolean {
    const steps = t.missed + 1;
    const a = t.last;
    const b = face.box;
    const dx = ((b[0] + b[2]) / 2 - (a[0] + a[2]) / 2) / steps;
    const dy = ((b[1] + b[3]) / 2 - (a[1] + a[3]) / 2) / steps;
    const dw = (b[2] - b[0] - (a[2] - a[0])) / steps;
    const dh = (b[3] - b[1] - (a[3] - a[1])) / steps;
    if (t.hasVelocity) {
      // Exponential smoothing: follows a steady motion exactly, damps detector jitter.
      t.vx = 0.5 * t.vx + 0.5 * dx;
      t.vy = 0.5 * t.vy + 0.5 * dy;
      t.vw = 0.5 * t.vw + 0.5 * dw;
      t.vh = 0.5 * t.vh + 0.5 * dh;
    } else {
      // The first delta is the only evidence; starting from 0 would lose fast faces on frame three.
      t.vx = dx;
      t.vy = dy;
      t.vw = dw;
      t.vh = dh;
      t.hasVelocity = true;
    }
    t.last = [b[0], b[1], b[2], b[3]];
    t.shown = t.last;
    t.score = face.score;
    t.landmarks = face.landmarks;
    t.mask = face.mask;
    t.hits++;
    t.missed = 0;
    if (!face.mask) return false;
    this.#push(t, face.mask);
    return true;
  }

  #push(t: TrackState, mask: MaskResult): void {
    const k = t.next * 3;
    t.probs[k] = mask.scores.mask;
    t.probs[k + 1] = mask.scores.no_mask;
    t.probs[k + 2] = mask.scores.incorrect;
    t.next = (t.next + 1) % this.options.window;
    if (t.count < this.options.window) t.count++;
  }

  #relabel(t: TrackState): void {
    const n = t.count;
    if (n === 0) return;
    let sm = 0;
    let sn = 0;
    let si = 0;
    // Only the first `count` slots are ever written before the buffer wraps, so summing them is exact.
    for (let k = 0; k < n * 3; k += 3) {
      sm += t.probs[k];
      sn += t.probs[k + 1];
      si += t.probs[k + 2];
    }
    const m = sm / n;
    const noMask = sn / n;
    const incorrect = si / n;
    const p = noMask + incorrect;
    let label: MaskLabel;
    if (t.label === undefined) {
      if (n < this.options.settleFrames) return;
      label = p >= this.#settleAt ? violation(noMask, incorrect) : "mask";
    } else if (t.label === "mask") {
      label = p >= this.options.enter ? violation(noMask, incorrect) : "mask";
    } else {
      label = p <= this.options.exit ? "mask" : violation(noMask, incorrect);
    }
    t.label = label;
    t.confidence = label === "mask" ? m : label === "no_mask" ? noMask : incorrect;
  }
}
