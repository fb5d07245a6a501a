import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import type { Box, GtImage, GtObject } from "../eval/groundtruth.ts";
import {
  appendClassificationRow,
  appendMarkdownRow,
  CLASSIFY_COLUMNS,
  type ClassifyGtRun,
  classificationMarkdown,
  formatClassification,
  formatTable,
  MARKDOWN_COLUMNS,
  markdownRow,
  toJson,
} from "../eval/report.ts";
import {
  averagePrecision,
  type ClassifiedFace,
  type EvalFace,
  type ImagePrediction,
  iou,
  type MaskClass,
  matchImage,
  scoreClassification,
  scoreDetections,
} from "../eval/score.ts";

// Helpers -------------------------------------------------------------------------------------

/** A square box of side `s` at (x, y). */
function sq(x: number, y: number, s = 100): Box {
  return [x, y, x + s, y + s];
}

function gtImage(name: string, objects: (Box | GtObject)[]): GtImage {
  return {
    image: `/nowhere/${name}.jpg`,
    name,
    objects: objects.map((o) => (Array.isArray(o) ? { box: o, label: "face" } : o)),
  };
}

function det(box: Box, score: number, mask?: EvalFace["mask"]): EvalFace {
  return mask ? { box, score, mask } : { box, score };
}

function close(actual: number | null, expected: number, msg?: string): void {
  assert.ok(actual !== null, msg ?? "expected a number, got null");
  assert.ok(Math.abs(actual - expected) < 1e-9, `${msg ?? ""} ${actual} ≠ ${expected}`);
}

// Boxes used below: far apart, 100 px faces.
const A = sq(0, 0);
const B = sq(200, 0);
const C = sq(400, 0);
const NOWHERE = sq(800, 800);

// Basics --------------------------------------------------------------------------------------

test("iou: identical 1, disjoint 0, half overlap 1/3", () => {
  assert.equal(iou(A, A), 1);
  assert.equal(iou(A, B), 0);
  // [0,0,100,100] vs [50,0,150,100]: inter 50·100 = 5000, union 20000 − 5000 = 15000 → 1/3.
  close(iou(A, sq(50, 0)), 1 / 3);
});

test("averagePrecision: all-point interpolation with the precision envelope", () => {
  // 3 GT, ranked TP, FP, FP, TP, TP:
  //   recall    1/3  1/3  1/3  2/3  1
  //   precision 1    1/2  1/3  1/2  3/5
  // envelope (max to the right): 1, 3/5, 3/5, 3/5, 3/5
  // AP = 1/3·1 + 1/3·3/5 + 1/3·3/5 = 1/3 + 2/5 = 11/15 ≈ 0.7333
  // (without the envelope it would be 1/3 + 1/3·1/2 + 1/3·3/5 = 0.7).
  close(averagePrecision([true, false, false, true, true], 3), 11 / 15);
  // TP, FP, TP with 3 GT: recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3; envelope 1, 2/3, 2/3
  // → AP = 1/3·1 + 1/3·2/3 = 5/9.
  close(averagePrecision([true, false, true], 3), 5 / 9);
  assert.equal(averagePrecision([], 0), null);
  assert.equal(averagePrecision([], 2), 0);
  assert.equal(averagePrecision([false, false], 2), 0);
});

// Face AP -------------------------------------------------------------------------------------

test("perfect detection: AP 1, recall 1, precision 1", () => {
  const gt = [gtImage("a", [A, B]), gtImage("b", [C])];
  const preds: ImagePrediction[] = [
    { name: "a", faces: [det(A, 0.9), det(B, 0.8)] },
    { name: "b", faces: [det(C, 0.7)] },
  ];
  const r = scoreDetections(gt, preds);
  assert.equal(r.face.ap, 1);
  assert.deepEqual([r.face.tp, r.face.fp, r.face.gt], [3, 0, 3]);
  assert.equal(r.atThreshold.recall, 1);
  assert.equal(r.atThreshold.precision, 1);
  assert.equal(r.atThreshold.f1, 1);
  assert.equal(r.mask, undefined);
  assert.deepEqual(r.missingPredictions, []);
});

test("one miss: AP and recall 1/2", () => {
  // 2 GT, one TP: recall 1/2 at precision 1 → AP = 1/2·1 = 0.5.
  const r = scoreDetections([gtImage("a", [A, B])], [{ name: "a", faces: [det(A, 0.9)] }]);
  close(r.face.ap, 0.5);
  assert.equal(r.atThreshold.fn, 1);
  close(r.atThreshold.recall, 0.5);
  close(r.atThreshold.precision, 1);
});

test("duplicate: a second detection on a matched face is a false positive", () => {
  // GT A, B. Ranked: 0.9 on A (TP), 0.8 on A again (FP, duplicate), 0.7 on B (TP).
  // recall .5 .5 1; precision 1 .5 2/3; envelope 1 2/3 2/3 → AP = .5·1 + .5·2/3 = 5/6.
  const r = scoreDetections(
    [gtImage("a", [A, B])],
    [{ name: "a", faces: [det(A, 0.9), det(sq(2, 2), 0.8), det(B, 0.7)] }],
  );
  close(r.face.ap, 5 / 6);
  assert.deepEqual([r.face.tp, r.face.fp], [2, 1]);
  close(r.atThreshold.precision, 2 / 3);
  close(r.atThreshold.recall, 1);
});

test("ignored tiny face: a detection on it counts neither way, missing it is no miss", () => {
  const tiny = sq(300, 300, 8); // shorter side 8 < 10
  // Detections: 0.95 on the tiny face (ignored), 0.9 on A (TP). B's tiny twin is not detected.
  const gt = [gtImage("a", [A, tiny, sq(600, 600, 9)])];
  const r = scoreDetections(gt, [{ name: "a", faces: [det(tiny, 0.95), det(A, 0.9)] }]);
  assert.equal(r.ignoredGt, 2);
  assert.equal(r.face.gt, 1);
  assert.equal(r.face.ap, 1); // ranked list is just [TP]
  assert.deepEqual([r.face.tp, r.face.fp, r.face.ignored], [1, 0, 1]);
  assert.deepEqual(
    [r.atThreshold.tp, r.atThreshold.fp, r.atThreshold.fn, r.atThreshold.ignored],
    [1, 0, 0, 1],
  );
  assert.equal(r.atThreshold.precision, 1);
  // minSize 0 keeps every face: now the tiny one is a TP and the 9 px one a miss.
  // Ranked TP (0.95), TP (0.9) with 3 GT → AP = 2/3.
  const all = scoreDetections(gt, [{ name: "a", faces: [det(tiny, 0.95), det(A, 0.9)] }], { minSize: 0 });
  close(all.face.ap, 2 / 3);
  assert.equal(all.ignoredGt, 0);
});

test("difficult faces are ignored like tiny ones", () => {
  const gt = [gtImage("a", [A, { box: B, label: "face", difficult: true }])];
  const r = scoreDetections(gt, [{ name: "a", faces: [det(B, 0.9), det(A, 0.8)] }]);
  assert.equal(r.face.ap, 1);
  assert.deepEqual([r.face.tp, r.face.fp, r.face.ignored, r.ignoredGt], [1, 0, 1, 1]);
});

test("ignored only wins when no unmatched face is a better match", () => {
  // Non-ignored G = A; ignored (difficult) D = [10,0,110,100] overlapping A (IoU 90/110 ≈ .82).
  // Detection exactly on D: IoU(D)=1 > IoU(A)≈.82 → ignored, and A stays a miss.
  const D: Box = [10, 0, 110, 100];
  const gt = [gtImage("a", [A, { box: D, label: "face", difficult: true }])];
  const onD = scoreDetections(gt, [{ name: "a", faces: [det(D, 0.9)] }]);
  assert.deepEqual([onD.face.tp, onD.face.fp, onD.face.ignored], [0, 0, 1]);
  assert.equal(onD.face.ap, 0);
  // Detection exactly on A: A is the better match → TP.
  const onA = scoreDetections(gt, [{ name: "a", faces: [det(A, 0.9)] }]);
  assert.deepEqual([onA.face.tp, onA.face.ignored], [1, 0]);
});

test("a detection on nothing is a false positive", () => {
  // Ranked: 0.95 on nothing (FP), 0.9 on A (TP); 1 GT.
  // recall 0, 1; precision 0, 1/2; envelope 1/2, 1/2 → AP = 1·1/2 = 0.5.
  const r = scoreDetections([gtImage("a", [A])], [{ name: "a", faces: [det(NOWHERE, 0.95), det(A, 0.9)] }]);
  close(r.face.ap, 0.5);
  assert.deepEqual([r.face.tp, r.face.fp], [1, 1]);
  close(r.atThreshold.precision, 0.5);
});

test("a matched face lets a second detection take the next best free face", () => {
  // GT A and A' = [20,0,120,100] (IoU(A, A') = 80/120 ≈ .67). Det 0.9 exactly on A → A.
  // Det 0.8 on [5,0,105,100]: IoU(A) = 95/105 ≈ .90 (taken), IoU(A') = 85/115 ≈ .74 (free) → TP on A'.
  const A2: Box = [20, 0, 120, 100];
  const r = scoreDetections(
    [gtImage("a", [A, A2])],
    [{ name: "a", faces: [det(A, 0.9), det([5, 0, 105, 100], 0.8)] }],
  );
  assert.deepEqual([r.face.tp, r.face.fp], [2, 0]);
  assert.equal(r.face.ap, 1);
});

test("ties in score: image order, then detection order", () => {
  // Image "x" (first): GT A, a 0.8 FP elsewhere. Image "y": GT A, a 0.8 TP.
  // Tie → x's FP ranks first: recall 0, 1/2; precision 0, 1/2 → AP = 1/2·1/2 = 0.25.
  const x = gtImage("x", [A]);
  const y = gtImage("y", [A]);
  const preds: ImagePrediction[] = [
    { name: "y", faces: [det(A, 0.8)] },
    { name: "x", faces: [det(NOWHERE, 0.8)] },
  ];
  close(scoreDetections([x, y], preds).face.ap, 0.25);
  // Images the other way round: TP first → recall 1/2 at precision 1 → AP = 0.5.
  close(scoreDetections([y, x], preds).face.ap, 0.5);
  // Same result on every call.
  assert.deepEqual(scoreDetections([x, y], preds), scoreDetections([x, y], preds));
  // Within an image, two equal scores on one face: the first given is the TP.
  const m = matchImage([A], [false], [det(sq(1, 1), 0.7), det(A, 0.7)]);
  assert.deepEqual(
    m.map((d) => [d.index, d.status]),
    [
      [0, "tp"],
      [1, "fp"],
    ],
  );
});

test("empty images: no GT and no detections changes nothing; detections with no GT are FPs", () => {
  const none = scoreDetections([gtImage("e", [])], [{ name: "e", faces: [] }]);
  assert.equal(none.face.ap, null);
  assert.equal(none.atThreshold.recall, null);
  assert.equal(none.atThreshold.precision, null);
  const withEmpty = scoreDetections(
    [gtImage("a", [A]), gtImage("e", [])],
    [
      { name: "a", faces: [det(A, 0.9)] },
      { name: "e", faces: [] },
    ],
  );
  assert.equal(withEmpty.face.ap, 1);
  // Image "e" has no faces but one 0.95 detection: FP ranked first → AP = 0.5 (as above).
  const fp = scoreDetections(
    [gtImage("a", [A]), gtImage("e", [])],
    [
      { name: "a", faces: [det(A, 0.9)] },
      { name: "e", faces: [det(A, 0.95)] },
    ],
  );
  close(fp.face.ap, 0.5);
  assert.deepEqual([fp.atThreshold.tp, fp.atThreshold.fp], [1, 1]);
  // No GT anywhere, only detections: AP undefined, precision 0.
  const onlyFp = scoreDetections([gtImage("e", [])], [{ name: "e", faces: [det(A, 0.9)] }]);
  assert.equal(onlyFp.face.ap, null);
  assert.equal(onlyFp.atThreshold.precision, 0);
});

test("all-point example through the scorer: TP, FP, FP, TP, TP with 3 GT → 11/15", () => {
  const r = scoreDetections(
    [gtImage("a", [A, B, C])],
    [
      {
        name: "a",
        faces: [det(A, 0.9), det(sq(1000, 0), 0.8), det(sq(1200, 0), 0.7), det(B, 0.6), det(C, 0.5)],
      },
    ],
  );
  close(r.face.ap, 11 / 15);
  close(r.face.maxRecall, 1);
});

test("threshold: only detections scoring at least it count for recall and precision", () => {
  // Scores 0.9 (A), 0.6 (nothing), 0.5 (B), 0.3 (C). At 0.5: TP 2, FP 1, FN 1.
  const gt = [gtImage("a", [A, B, C])];
  const preds = [{ name: "a", faces: [det(A, 0.9), det(NOWHERE, 0.6), det(B, 0.5), det(C, 0.3)] }];
  const r = scoreDetections(gt, preds, { threshold: 0.5 });
  assert.deepEqual(
    [r.atThreshold.tp, r.atThreshold.fp, r.atThreshold.fn, r.atThreshold.detections],
    [2, 1, 1, 3],
  );
  close(r.atThreshold.recall, 2 / 3);
  close(r.atThreshold.precision, 2 / 3);
  // AP uses every score: TP FP TP TP → recall 1/3 1/3 2/3 1; precision 1 1/2 2/3 3/4;
  // envelope 1 3/4 3/4 3/4 → AP = 1/3 + 1/3·3/4 + 1/3·3/4 = 5/6.
  close(r.face.ap, 5 / 6);
  const hi = scoreDetections(gt, preds, { threshold: 0.95 });
  assert.deepEqual([hi.atThreshold.tp, hi.atThreshold.fp, hi.atThreshold.precision], [0, 0, null]);
  close(hi.atThreshold.recall, 0);
});

test("IoU threshold is configurable", () => {
  // [0,0,100,60] vs A: IoU = 6000/10000 = 0.6 → TP at 0.5, FP at 0.7.
  const gt = [gtImage("a", [A])];
  const preds = [{ name: "a", faces: [det([0, 0, 100, 60], 0.9)] }];
  assert.equal(scoreDetections(gt, preds).face.tp, 1);
  const strict = scoreDetections(gt, preds, { iouThreshold: 0.7 });
  assert.deepEqual([strict.face.tp, strict.face.fp, strict.face.ap], [0, 1, 0]);
});

test("recall by ground-truth class", () => {
  const gt = [
    gtImage("a", [
      { box: A, label: "mask" },
      { box: B, label: "no_mask" },
      { box: C, label: "mask" },
      { box: sq(600, 0), label: "incorrect" },
    ]),
  ];
  // Faces found: A (mask) and the incorrect one; B and C missed.
  const r = scoreDetections(gt, [{ name: "a", faces: [det(A, 0.9), det(sq(600, 0), 0.8)] }]);
  assert.deepEqual(r.atThreshold.recallByClass, {
    mask: { gt: 2, tp: 1, recall: 0.5 },
    no_mask: { gt: 1, tp: 0, recall: 0 },
    incorrect: { gt: 1, tp: 1, recall: 1 },
  });
  assert.deepEqual(r.gtByClass, { mask: 2, no_mask: 1, incorrect: 1 });
});

// Mask classes --------------------------------------------------------------------------------

const maskGt = [
  gtImage("m", [
    { box: A, label: "mask" },
    { box: B, label: "no_mask" },
    { box: C, label: "mask" },
  ]),
];
const maskPreds: ImagePrediction[] = [
  {
    name: "m",
    faces: [
      det(A, 0.9, { label: "mask", score: 0.8, scores: { mask: 0.8, no_mask: 0.2 } }), // right
      det(B, 0.8, { label: "mask", score: 0.6, scores: { mask: 0.6, no_mask: 0.4 } }), // wrong: GT no_mask
      det(C, 0.7, { label: "no_mask", score: 0.9, scores: { mask: 0.1, no_mask: 0.9 } }), // wrong: GT mask
    ],
  },
];

test("per-class AP (argmax), mAP and confusion of matched faces", () => {
  // Class detections (score = face × class): mask: A .72, B .48; no_mask: C .63.
  // mask (2 GT: A, C): A TP, B FP (B is no_mask GT, not a mask match)
  //   → recall .5 .5, precision 1 .5 → AP = .5.
  // no_mask (1 GT: B): C FP → AP 0.
  // mAP over the classes with GT (mask, no_mask) = (.5 + 0) / 2 = .25.
  // Confusion (all three faces matched at threshold .5):
  //   GT mask: A→mask, C→no_mask; GT no_mask: B→mask. Accuracy 1/3.
  const r = scoreDetections(maskGt, maskPreds);
  assert.ok(r.mask);
  close(r.mask.ap["mask"].ap, 0.5);
  close(r.mask.ap["no_mask"].ap, 0);
  assert.deepEqual(r.mask.classes, ["mask", "no_mask"]);
  close(r.mask.mAP, 0.25);
  assert.deepEqual(r.mask.confusion.gt, ["mask", "no_mask"]);
  assert.deepEqual(r.mask.confusion.pred, ["mask", "no_mask", "incorrect", "none"]);
  assert.deepEqual(r.mask.confusion.counts, [
    [1, 1, 0, 0],
    [1, 0, 0, 0],
  ]);
  close(r.mask.confusion.accuracy, 1 / 3);
  assert.equal(r.mask.labelled, 3);
  // Face AP ignores the classes.
  assert.equal(r.face.ap, 1);
});

test("per-class AP with every class score as a detection", () => {
  // mask: A .9·.8=.72 (TP on A), B .8·.6=.48 (FP), C .7·.1=.07 (TP on C)
  //   → TP FP TP with 2 GT: recall .5 .5 1, precision 1 .5 2/3 → AP = .5 + .5·2/3 = 5/6.
  // no_mask: C .63 (FP), B .8·.4=.32 (TP), A .9·.2=.18 (FP)
  //   → recall 0 1 1, precision 0 .5 1/3; envelope .5 .5 1/3 → AP = 1·.5 = .5.
  // mAP = (5/6 + 1/2) / 2 = 2/3.
  const r = scoreDetections(maskGt, maskPreds, { classAssignment: "all" });
  assert.ok(r.mask);
  close(r.mask.ap["mask"].ap, 5 / 6);
  close(r.mask.ap["no_mask"].ap, 0.5);
  close(r.mask.mAP, 2 / 3);
});

test("mask labels: raw names normalised, argmax of scores without a label, none counted", () => {
  const gt = [
    gtImage("m", [
      { box: A, label: "mask" },
      { box: B, label: "incorrect" },
      { box: C, label: "no_mask" },
    ]),
  ];
  const preds: ImagePrediction[] = [
    {
      name: "m.jpg", // an extension on the prediction's name is fine
      faces: [
        det(A, 0.9, { label: "with_mask" }),
        det(B, 0.9, { scores: { mask: 0.2, no_mask: 0.1, incorrect: 0.7 } }),
        det(C, 0.9),
      ],
    },
  ];
  const r = scoreDetections(gt, preds);
  assert.ok(r.mask);
  assert.deepEqual(r.mask.confusion.counts, [
    [1, 0, 0, 0],
    [0, 0, 0, 1],
    [0, 0, 1, 0],
  ]);
  assert.deepEqual(r.mask.confusion.gt, ["mask", "no_mask", "incorrect"]);
  assert.equal(r.mask.ap["mask"].ap, 1);
  assert.equal(r.mask.ap["incorrect"].ap, 1);
  assert.equal(r.mask.ap["no_mask"].ap, 0);
  close(r.mask.mAP, 2 / 3);
  close(r.mask.confusion.accuracy, 1);
  assert.deepEqual(r.missingPredictions, []);
});

test("missing and unknown prediction entries are reported", () => {
  const r = scoreDetections([gtImage("a", [A])], [{ name: "zzz", faces: [det(A, 0.9)] }]);
  assert.deepEqual(r.missingPredictions, ["a"]);
  assert.deepEqual(r.unknownPredictions, ["zzz"]);
  assert.equal(r.face.ap, 0);
  assert.equal(r.detections, 0);
});

// Report --------------------------------------------------------------------------------------

test("report: text table, markdown row of numbers, JSON", () => {
  const r = scoreDetections(maskGt, maskPreds);
  const text = formatTable(r, { dataset: "hand", detector: "test" });
  assert.match(text, /AP50/);
  assert.match(text, /mAP \(mask, no_mask\)\s+0\.250/);
  const row = markdownRow(r, ["test"]);
  const cells = row.split("|").slice(1, -1);
  assert.equal(cells.length, MARKDOWN_COLUMNS.length + 1);
  assert.equal(cells[4].trim(), "1.000"); // face AP50
  assert.equal(cells[11].trim(), "0.250"); // mask mAP
  assert.deepEqual(JSON.parse(toJson(r)).face, JSON.parse(JSON.stringify(r.face)));
  const dir = mkdtempSync(path.join(tmpdir(), "maskwatch-report-"));
  try {
    const file = path.join(dir, "report.md");
    appendMarkdownRow(file, r, { detector: "a" });
    appendMarkdownRow(file, r, { detector: "b" });
    const lines = readFileSync(file, "utf8").trim().split("\n");
    assert.equal(lines.length, 4);
    assert.match(lines[0], /^\| detector \| images \|/);
    assert.match(lines[3], /^\| b \| 1 \|/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Classifier on ground-truth boxes ------------------------------------------------------------

/** `n` faces of ground truth `gt` predicted as `pred`. */
function faces(gt: MaskClass, pred: MaskClass, n: number): ClassifiedFace[] {
  return Array.from({ length: n }, () => ({ gt, pred }));
}

// mask: 8 right, 1 → no_mask, 1 → incorrect; no_mask: 2 → mask, 3 right; incorrect: 2 → no_mask.
const CLASSIFIED = [
  ...faces("mask", "mask", 8),
  ...faces("mask", "no_mask", 1),
  ...faces("mask", "incorrect", 1),
  ...faces("no_mask", "mask", 2),
  ...faces("no_mask", "no_mask", 3),
  ...faces("incorrect", "no_mask", 2),
];

test("classification: accuracy, mask vs not, per-class P/R/F1, macro-F1, confusion by hand", () => {
  const r = scoreClassification(CLASSIFIED);
  assert.equal(r.faces, 17);
  assert.deepEqual(r.confusion, {
    labels: ["mask", "no_mask", "incorrect"],
    counts: [
      [8, 1, 1],
      [2, 3, 0],
      [0, 2, 0],
    ],
  });
  close(r.accuracy, 11 / 17, "accuracy");
  // Mask vs not: incorrect → no_mask is right here, mask → incorrect is not.
  close(r.maskVsNot, 13 / 17, "mask vs not");
  assert.deepEqual([r.perClass.mask.support, r.perClass.mask.predicted, r.perClass.mask.tp], [10, 10, 8]);
  close(r.perClass.mask.precision, 0.8);
  close(r.perClass.mask.recall, 0.8);
  close(r.perClass.mask.f1, 0.8);
  close(r.perClass.no_mask.precision, 3 / 6);
  close(r.perClass.no_mask.recall, 3 / 5);
  close(r.perClass.no_mask.f1, (2 * 0.5 * 0.6) / 1.1);
  assert.equal(r.perClass.incorrect.predicted, 1);
  close(r.perClass.incorrect.precision, 0);
  close(r.perClass.incorrect.recall, 0);
  close(r.perClass.incorrect.f1, 0);
  assert.deepEqual(r.macroClasses, ["mask", "no_mask", "incorrect"]);
  close(r.macroF1, (0.8 + (2 * 0.5 * 0.6) / 1.1 + 0) / 3, "macro-F1");
});

test("classification: a class absent from the ground truth is left out of macro-F1", () => {
  // A two-class set (no incorrect faces) and a classifier that sometimes says incorrect.
  const r = scoreClassification([
    ...faces("mask", "mask", 3),
    ...faces("no_mask", "incorrect", 1),
    ...faces("no_mask", "no_mask", 1),
  ]);
  assert.deepEqual(r.macroClasses, ["mask", "no_mask"]);
  assert.equal(r.perClass.incorrect.support, 0);
  assert.equal(r.perClass.incorrect.f1, null);
  assert.equal(r.perClass.incorrect.recall, null);
  close(r.perClass.incorrect.precision, 0);
  // no_mask: P 1/1, R 1/2 → F1 2/3; mask: F1 1.
  close(r.macroF1, (1 + 2 / 3) / 2);
  close(r.maskVsNot, 1);
  // A class present but never predicted: precision undefined, F1 0.
  const never = scoreClassification([...faces("mask", "mask", 2), ...faces("incorrect", "mask", 1)]);
  assert.equal(never.perClass.incorrect.precision, null);
  assert.equal(never.perClass.incorrect.f1, 0);
  const empty = scoreClassification([]);
  assert.equal(empty.accuracy, null);
  assert.equal(empty.macroF1, null);
  assert.throws(
    () => scoreClassification([{ gt: "helmet" as MaskClass, pred: "mask" }]),
    /not a mask class: helmet/,
  );
});

test("classification report: text, markdown tables, markdown row, JSON-ready", () => {
  const run: ClassifyGtRun = {
    meta: { dataset: "hand", split: "test" },
    images: 4,
    imagesClassified: 3,
    gtFaces: 25,
    skipped: {
      small: 2,
      difficult: 1,
      unlabelled: 1,
      unknownLabels: { helmet: 2, "7": 1 },
      inProblemImages: 1,
    },
    minSize: 10,
    maskThreshold: 0.5,
    problems: [
      { file: "/d/annotations/b.xml", problem: "names an image that is not there: /d/images/gone.jpg" },
    ],
    result: scoreClassification(CLASSIFIED),
  };
  const text = formatClassification(run);
  assert.match(text, /classified 17/);
  assert.match(
    text,
    /2 under 10 px, 1 difficult, 1 "face" \(no mask label\), 3 unknown labels \(helmet 2, 7 1\), 1 in unusable images/,
  );
  assert.match(
    text,
    /warning: 1 problem \(left out\):\n {2}\/d\/annotations\/b\.xml: names an image that is not there/,
  );
  assert.match(text, /accuracy 64\.7% · mask vs not 76\.5% · macro-F1 0\.448/);
  assert.match(text, /\nmask\s+8\s+1\s+1\n/);
  assert.match(text, /\nincorrect\s+0\s+2\s+0$/);
  const md = classificationMarkdown(run);
  assert.match(md, /\| 0\.647 \| 0\.765 \| 0\.448 \|/);
  assert.match(md, /\| no_mask \| 5 \| 6 \| 0\.500 \| 0\.600 \| 0\.545 \|/);
  assert.match(
    md,
    /\| GT \\ predicted \| mask \| no_mask \| incorrect \|\n\|---\|---:\|---:\|---:\|\n\| mask \| 8 \| 1 \| 1 \|/,
  );
  assert.match(md, /3 with an unknown label \(helmet 2, 7 1\)/);
  const dir = mkdtempSync(path.join(tmpdir(), "maskwatch-report-"));
  try {
    const file = path.join(dir, "classify.md");
    appendClassificationRow(file, run, { dataset: "a" });
    appendClassificationRow(file, run, { dataset: "b" });
    const lines = readFileSync(file, "utf8").trim().split("\n");
    assert.equal(lines.length, 4);
    assert.equal(lines[0].split("|").slice(1, -1).length, CLASSIFY_COLUMNS.length + 1);
    // faces, skipped (2 + 1 + 1 + 3 + 1), problems, accuracy, mask vs not, macro-F1.
    assert.match(
      lines[3],
      /^\| b \| 17 \| 8 \| 1 \| 0\.647 \| 0\.765 \| 0\.448 \| 0\.800 \| 0\.545 \| 0\.000 \|/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
