/**
 * Tracker: ids survive crossing, occlusion and fast motion; false positives never get one;
 * mask labels settle, switch at the frame the window/hysteresis rule says, and do not flap.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Tracker, type TrackerUpdate } from "../src/vision/tracker.ts";
import type { Face, MaskLabel, MaskResult } from "../src/vision/types.ts";

type Scores = Record<MaskLabel, number>;

const MASKED: Scores = { mask: 0.9, no_mask: 0.05, incorrect: 0.05 };
const BARE: Scores = { mask: 0.05, no_mask: 0.9, incorrect: 0.05 };
const UNDER_NOSE: Scores = { mask: 0.05, no_mask: 0.1, incorrect: 0.85 };

function result(scores: Scores): MaskResult {
  const label = (Object.keys(scores) as MaskLabel[]).reduce((a, b) => (scores[b] > scores[a] ? b : a));
  return { label, score: scores[label], scores };
}

function face(x: number, y: number, size = 40, scores?: Scores): Face {
  const f: Face = { box: [x, y, x + size, y + size], score: 0.9 };
  if (scores) f.mask = result(scores);
  return f;
}

/** Violation probability p, mostly no_mask. */
function violating(p: number): Scores {
  return { mask: 1 - p, no_mask: 0.8 * p, incorrect: 0.2 * p };
}

function idOf(u: TrackerUpdate, f: Face): number | undefined {
  return u.visible.find((t) => t.box.every((v, k) => v === f.box[k]))?.id;
}

test("two faces crossing in opposite directions keep their ids (motion prediction)", () => {
  const tracker = new Tracker();
  let idA: number | undefined;
  let idB: number | undefined;
  // 10 px/frame each way; between frames 10 and 11 they swap places exactly, so matching against
  // last positions alone would hand each one the other's id.
  for (let t = 0; t <= 22; t++) {
    const a = face(10 * t, 100);
    const b = face(210 - 10 * t, 102);
    const u = tracker.update([a, b]);
    if (t === 0) {
      assert.equal(u.visible.length, 0, "tentative on the first frame");
      continue;
    }
    if (t === 1) {
      idA = idOf(u, a);
      idB = idOf(u, b);
      assert.deepEqual([idA, idB].sort(), [1, 2]);
    }
    assert.equal(u.visible.length, 2, `frame ${t}`);
    assert.equal(idOf(u, a), idA, `A at frame ${t}`);
    assert.equal(idOf(u, b), idB, `B at frame ${t}`);
  }
});

test("a face hidden for 5 frames comes back with its id; coasting tracks are listed", () => {
  const tracker = new Tracker({ maxMissed: 15 });
  for (let t = 1; t <= 5; t++) assert.deepEqual(tracker.update([face(100, 100)]).ended, []);
  for (let t = 1; t <= 5; t++) {
    const u = tracker.update([]);
    assert.deepEqual(u.visible, []);
    assert.deepEqual(u.ended, []);
    const all = tracker.tracks();
    assert.equal(all.length, 1);
    assert.equal(all[0].id, 1);
    assert.equal(all[0].missed, t);
    assert.deepEqual(all[0].box, [100, 100, 140, 140]);
  }
  const back = tracker.update([face(101, 100)]);
  assert.equal(back.visible.length, 1);
  assert.equal(back.visible[0].id, 1);
  assert.equal(back.visible[0].missed, 0);
  assert.equal(back.visible[0].hits, 6);
  assert.equal(back.visible[0].age, 10);
});

test("a moving face hidden for 5 frames is found where its velocity puts it", () => {
  const tracker = new Tracker();
  for (let t = 0; t < 6; t++) tracker.update([face(10 * t, 100)]);
  for (let t = 6; t < 11; t++) tracker.update([]);
  // 50 px from where it was last seen: no overlap with the last box, exact overlap with the prediction.
  const u = tracker.update([face(110, 100)]);
  assert.deepEqual(
    u.visible.map((t) => t.id),
    [1],
  );
});

test("a face hidden for 20 frames ends after maxMissed and comes back with a new id", () => {
  const tracker = new Tracker({ maxMissed: 15 });
  for (let t = 1; t <= 5; t++) tracker.update([face(100, 100)]);
  const endedAt: number[] = [];
  for (let t = 6; t <= 25; t++) {
    const u = tracker.update([]);
    if (u.ended.length) {
      assert.deepEqual(u.ended, [1]);
      endedAt.push(t);
    }
  }
  assert.deepEqual(endedAt, [5 + 15 + 1], "removed on its 16th missed frame");
  assert.deepEqual(tracker.tracks(), []);
  assert.deepEqual(tracker.update([face(100, 100)]).visible, [], "tentative again");
  assert.deepEqual(
    tracker.update([face(100, 100)]).visible.map((t) => t.id),
    [2],
  );
});

test("a single-frame false positive never gets an id (minHits 2)", () => {
  const tracker = new Tracker({ minHits: 2 });
  const first = tracker.update([face(100, 100), face(400, 300)]);
  assert.deepEqual(first.visible, []);
  const ids = new Set<number>();
  for (let t = 0; t < 10; t++) {
    // Another one-frame blip elsewhere every other frame.
    const faces = t % 2 ? [face(100, 100), face(300 + 60 * t, 20)] : [face(100, 100)];
    for (const tr of tracker.update(faces).visible) ids.add(tr.id);
    for (const tr of tracker.tracks()) ids.add(tr.id);
  }
  assert.deepEqual([...ids], [1]);
});

test("a tentative track that misses a frame is dropped, so its hits start over", () => {
  const tracker = new Tracker({ minHits: 2 });
  const f = face(100, 100);
  assert.deepEqual(tracker.update([f]).visible, []);
  assert.deepEqual(tracker.update([]).visible, []);
  assert.deepEqual(
    tracker.update([f]).visible,
    [],
    "a fresh tentative track, not the first one's second hit",
  );
  const u = tracker.update([f]);
  assert.deepEqual(
    u.visible.map((t) => [t.id, t.hits, t.age]),
    [[1, 2, 1]],
  );
});

test("minHits 1 confirms on the first frame", () => {
  const tracker = new Tracker({ minHits: 1 });
  assert.deepEqual(
    tracker.update([face(0, 0), face(200, 0)]).visible.map((t) => t.id),
    [1, 2],
  );
});

test("a fast face (60% of its width per frame) keeps its id", () => {
  const tracker = new Tracker();
  for (let t = 0; t < 30; t++) {
    const f = face(30 * t, 50, 50);
    const u = tracker.update([f]);
    if (t === 0) continue;
    assert.equal(u.visible.length, 1, `frame ${t}`);
    assert.equal(idOf(u, f), 1, `frame ${t}`);
  }
  assert.deepEqual(
    tracker.tracks().map((t) => t.id),
    [1],
  );
});

test("ids 1, 2, 3 in order of confirmation; reset() restarts them", () => {
  const tracker = new Tracker();
  const c = face(0, 0);
  const b = face(200, 0);
  const a = face(400, 0);
  tracker.update([c]);
  assert.equal(idOf(tracker.update([c, b]), c), 1);
  assert.equal(idOf(tracker.update([a, b, c]), b), 2);
  const u = tracker.update([a, b, c]);
  assert.deepEqual(
    u.visible.map((t) => t.id),
    [1, 2, 3],
  );
  assert.equal(idOf(u, a), 3);

  tracker.reset();
  assert.deepEqual(tracker.tracks(), []);
  tracker.update([a]);
  assert.deepEqual(
    tracker.update([a]).visible.map((t) => t.id),
    [1],
  );
});

test("noisy scores around 0.5 do not flap: one settle, then no changes", () => {
  for (const [first, expected] of [
    [0.55, "no_mask"],
    [0.45, "mask"],
  ] as const) {
    const tracker = new Tracker();
    const changes: [number, MaskLabel | undefined, MaskLabel][] = [];
    for (let t = 1; t <= 60; t++) {
      const p = t % 2 ? first : 1 - first;
      for (const c of tracker.update([face(100, 100, 40, violating(p))]).changes)
        changes.push([t, c.from, c.to]);
    }
    assert.deepEqual(changes, [[3, undefined, expected]], `starting at ${first}`);
  }
});

test("taking the mask off: exactly undefined→mask, then mask→no_mask at the frame the rule gives", () => {
  const window = 10;
  const enter = 0.6;
  const maskFrames = 15;
  const tracker = new Tracker({ window, enter, settleFrames: 3 });
  const changes: [number, MaskLabel | undefined, MaskLabel, number][] = [];
  for (let t = 1; t <= 40; t++) {
    const f = face(100, 100, 40, t <= maskFrames ? MASKED : BARE);
    for (const c of tracker.update([f]).changes) changes.push([t, c.from, c.to, c.track.confidence]);
  }
  // k bare frames in a full window: p = (k × 0.95 + (window − k) × 0.1) / window; first k with p >= enter.
  let k = 0;
  while ((k * 0.95 + (window - k) * 0.1) / window < enter) k++;
  assert.equal(k, 6);
  const switchFrame = maskFrames + k;
  assert.equal(switchFrame, 21);
  assert.deepEqual(
    changes.map(([t, from, to]) => [t, from, to]),
    [
      [3, undefined, "mask"],
      [switchFrame, "mask", "no_mask"],
    ],
  );
  assert.ok(Math.abs(changes[0][3] - 0.9) < 1e-9, "confidence: average mask probability");
  assert.ok(Math.abs(changes[1][3] - (6 * 0.9 + 4 * 0.05) / 10) < 1e-9, "confidence: average no_mask");
});

test("hysteresis: going back to mask needs p <= exit; no_mask → incorrect is a change too", () => {
  const tracker = new Tracker({ minHits: 1, settleFrames: 1 });
  const log: [number, MaskLabel | undefined, MaskLabel][] = [];
  const frames: Scores[] = [
    ...Array<Scores>(10).fill(BARE), // frames 1–10
    ...Array<Scores>(10).fill(UNDER_NOSE), // 11–20
    ...Array<Scores>(10).fill(MASKED), // 21–30
  ];
  frames.forEach((s, i) => {
    for (const c of tracker.update([face(0, 0, 40, s)]).changes) log.push([i + 1, c.from, c.to]);
  });
  // incorrect overtakes no_mask once the window has 6 UNDER_NOSE frames (0.85k + 0.05(10−k) > 0.1k + 0.9(10−k)).
  // Back to mask: p = (0.95(10−k) + 0.1k) / 10 <= 0.4 first at k = 7 masked frames; entering would need only 6.
  assert.deepEqual(log, [
    [1, undefined, "no_mask"],
    [16, "no_mask", "incorrect"],
    [27, "incorrect", "mask"],
  ]);
});

test("a tentative track collects scores and settles on the frame it is confirmed", () => {
  const tracker = new Tracker({ minHits: 3, settleFrames: 2 });
  const log: [number, MaskLabel | undefined, MaskLabel][] = [];
  for (let t = 1; t <= 5; t++)
    for (const c of tracker.update([face(0, 0, 40, MASKED)]).changes) log.push([t, c.from, c.to]);
  assert.deepEqual(log, [[3, undefined, "mask"]]);
});

test("frames without mask scores leave the window alone; the raw result is passed through", () => {
  const tracker = new Tracker({ minHits: 1 });
  tracker.update([face(0, 0, 40, MASKED)]);
  tracker.update([face(0, 0, 40, MASKED)]);
  const u = tracker.update([face(0, 0)]);
  assert.deepEqual(u.changes, []);
  assert.equal(u.visible[0].mask, undefined);
  assert.equal(u.visible[0].label, undefined, "only 2 scored frames");
  assert.equal(u.visible[0].confidence, 0);
  const v = tracker.update([face(0, 0, 40, MASKED)]);
  assert.deepEqual(v.visible[0].mask, result(MASKED));
  assert.equal(v.changes.length, 1);
  assert.equal(v.visible[0].label, "mask");
});

test("returned tracks are snapshots", () => {
  const tracker = new Tracker({ minHits: 1 });
  const f = face(10, 10);
  const u = tracker.update([f]);
  u.visible[0].box[0] = 999;
  u.visible[0].hits = 999;
  f.box[0] = 500;
  assert.deepEqual(tracker.tracks()[0].box, [10, 10, 50, 50]);
  assert.equal(tracker.tracks()[0].hits, 1);
});

test("bad options throw RangeError", () => {
  const bad = [
    { window: 0 },
    { window: 2.5 },
    { settleFrames: 0 },
    { minHits: 0 },
    { maxMissed: -1 },
    { iouThreshold: 0 },
    { iouThreshold: 1.5 },
    { enter: 1.1 },
    { exit: -0.1 },
    { enter: Number.NaN },
    { enter: 0.5, exit: 0.6 },
  ];
  for (const o of bad) assert.throws(() => new Tracker(o), RangeError, JSON.stringify(o));
  assert.throws(() => new Tracker({ exit: 0.7 }), /exit \(0\.7\) must not be greater than enter \(0\.6\)/);
  assert.equal(new Tracker({ window: 4, settleFrames: 9 }).options.settleFrames, 4, "clamped to window");
  assert.doesNotThrow(() => new Tracker({ enter: 0.5, exit: 0.5, maxMissed: 0, minHits: 1, window: 1 }));
});

test("50 moving faces: ids stay put and a frame is cheap", () => {
  const tracker = new Tracker();
  const at = (i: number, t: number) =>
    face(60 * (i % 10) + 3 * t, 60 * Math.floor(i / 10) + 2 * t, 40, i % 3 ? MASKED : BARE);
  const start = performance.now();
  const frames = 300;
  let ids: number[] = [];
  for (let t = 0; t < frames; t++) {
    const faces = Array.from({ length: 50 }, (_, i) => at(i, t));
    const u = tracker.update(faces);
    if (t === 1) ids = faces.map((f) => idOf(u, f)!);
    if (t >= 1)
      assert.deepEqual(
        faces.map((f) => idOf(u, f)),
        ids,
        `frame ${t}`,
      );
  }
  const perFrame = (performance.now() - start) / frames;
  assert.deepEqual(
    [...ids].sort((a, b) => a - b),
    Array.from({ length: 50 }, (_, i) => i + 1),
  );
  assert.ok(perFrame < 5, `${perFrame.toFixed(3)} ms per frame`);
});
