/**
 * Formatting of eval results: a plain-text table for the terminal, a markdown row (numbers only)
 * to append to a report file, and JSON (the result object as is).
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import type { GtProblem } from "./groundtruth.ts";
import type { ClassificationResult, EvalResult } from "./score.ts";
import { MASK_CLASSES } from "./score.ts";

/** What the run was: shown above the table and as the leading cells of a markdown row. */
export interface ReportMeta {
  dataset?: string;
  split?: string;
  detector?: string;
  classifier?: string;
  /** Free-form extra cells for the markdown row (before the numbers). */
  [key: string]: string | undefined;
}

/** A number to `digits` decimals; null / NaN as "n/a". */
export function fmt(v: number | null | undefined, digits = 3): string {
  return v === null || v === undefined || Number.isNaN(v) ? "n/a" : v.toFixed(digits);
}

function pct(v: number | null | undefined): string {
  return v === null || v === undefined || Number.isNaN(v) ? "n/a" : `${(v * 100).toFixed(1)}%`;
}

function table(rows: string[][], alignRight: (col: number) => boolean = (c) => c > 0): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (alignRight(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** Plain-text report of one result. */
export function formatTable(result: EvalResult, meta: ReportMeta = {}): string {
  const o = result.options;
  const at = result.atThreshold;
  const lines: string[] = [];
  const head = Object.entries(meta)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${k} ${v}`);
  if (head.length > 0) lines.push(head.join(" · "));
  lines.push(
    `images ${result.images} · GT faces ${result.gtFaces} (${result.ignoredGt} ignored: difficult or < ${o.minSize} px) · ` +
      `detections ${result.detections} · IoU ≥ ${o.iouThreshold}`,
  );
  if (result.missingPredictions.length > 0)
    lines.push(`warning: ${result.missingPredictions.length} images had no predictions`);
  if (result.unknownPredictions.length > 0) {
    lines.push(
      `warning: ${result.unknownPredictions.length} predictions name no ground-truth image (not scored)`,
    );
  }
  lines.push("");
  lines.push(
    table([
      ["face", "AP50", "max recall", "TP", "FP", "on ignored"],
      [
        "all scores",
        fmt(result.face.ap),
        pct(result.face.maxRecall),
        String(result.face.tp),
        String(result.face.fp),
        String(result.face.ignored),
      ],
    ]),
  );
  lines.push("");
  lines.push(
    table([
      ["threshold", "recall", "precision", "F1", "TP", "FP", "FN", "on ignored"],
      [
        fmt(at.threshold, 2),
        pct(at.recall),
        pct(at.precision),
        fmt(at.f1),
        String(at.tp),
        String(at.fp),
        String(at.fn),
        String(at.ignored),
      ],
    ]),
  );
  const classes = Object.keys(at.recallByClass);
  if (classes.length > 1 || (classes.length === 1 && classes[0] !== "face")) {
    lines.push("");
    const rows = [["GT class", "faces", "found", "recall"]];
    for (const c of orderLabels(classes)) {
      const r = at.recallByClass[c];
      rows.push([c, String(r.gt), String(r.tp), pct(r.recall)]);
    }
    lines.push(table(rows));
  }
  const m = result.mask;
  if (m) {
    lines.push("");
    const rows = [["mask class", "AP50", "GT", "TP", "FP"]];
    for (const c of orderLabels(Object.keys(m.ap))) {
      const a = m.ap[c];
      rows.push([c, fmt(a.ap), String(a.gt), String(a.tp), String(a.fp)]);
    }
    rows.push([`mAP (${m.classes.join(", ")})`, fmt(m.mAP), "", "", ""]);
    lines.push(table(rows));
    lines.push("");
    lines.push(
      `confusion of faces matched at threshold (rows GT, columns predicted) · accuracy ${pct(m.confusion.accuracy)}`,
    );
    lines.push(
      table([
        ["GT \\ pred", ...m.confusion.pred],
        ...m.confusion.gt.map((g, i) => [g, ...m.confusion.counts[i].map(String)]),
      ]),
    );
  }
  return lines.join("\n");
}

function orderLabels(labels: string[]): string[] {
  const known = (MASK_CLASSES as readonly string[]).filter((c) => labels.includes(c));
  return [...known, ...labels.filter((c) => !known.includes(c)).sort()];
}

/** Column names of the markdown row (after any leading cells). */
export const MARKDOWN_COLUMNS = [
  "images",
  "GT faces",
  "ignored",
  "face AP50",
  "threshold",
  "recall",
  "precision",
  "recall mask",
  "recall no_mask",
  "recall incorrect",
  "mask mAP",
  "AP mask",
  "AP no_mask",
  "AP incorrect",
  "mask acc",
] as const;

/** Markdown header and separator lines for `markdownRow`, with `leading` column names first. */
export function markdownHeader(leading: string[] = []): string {
  const cols = [...leading, ...MARKDOWN_COLUMNS];
  return `| ${cols.join(" | ")} |\n|${cols.map((_, i) => (i < leading.length ? "---" : "---:")).join("|")}|`;
}

/** One markdown table row of numbers (n/a where not measured), after `leading` cells. */
export function markdownRow(result: EvalResult, leading: string[] = []): string {
  const at = result.atThreshold;
  const rc = (c: string) => fmt(at.recallByClass[c]?.recall);
  const ap = (c: string) => fmt(result.mask?.ap[c]?.ap);
  const cells = [
    ...leading.map((s) => s.replace(/\|/g, "\\|")),
    String(result.images),
    String(result.gtFaces),
    String(result.ignoredGt),
    fmt(result.face.ap),
    fmt(at.threshold, 2),
    fmt(at.recall),
    fmt(at.precision),
    rc("mask"),
    rc("no_mask"),
    rc("incorrect"),
    fmt(result.mask?.mAP),
    ap("mask"),
    ap("no_mask"),
    ap("incorrect"),
    fmt(result.mask?.confusion.accuracy),
  ];
  return `| ${cells.join(" | ")} |`;
}

/**
 * Append a row to a markdown report, writing the header first when the file is new or empty.
 * `leading` maps leading column names to cells (for example detector and dataset).
 */
export function appendMarkdownRow(
  file: string,
  result: EvalResult,
  leading: Record<string, string> = {},
): void {
  const names = Object.keys(leading);
  const fresh = !existsSync(file) || readFileSync(file, "utf8").trim() === "";
  const text = `${fresh ? `${markdownHeader(names)}\n` : ""}${markdownRow(result, Object.values(leading))}\n`;
  appendFileSync(file, text);
}

/** JSON of the result object (null where a number is not defined); `meta`, if given, under "meta". */
export function toJson(result: EvalResult, meta?: ReportMeta): string {
  return JSON.stringify(meta ? { meta, ...result } : result, null, 2);
}

// ---------------------------------------------------------------------------------------------
// Classifier on ground-truth boxes

/** What `npm run eval -- --classify-gt` measured, and what it left out. */
export interface ClassifyGtRun {
  meta: ReportMeta;
  /** Images annotated (after --limit), and those classified. */
  images: number;
  imagesClassified: number;
  /** Ground-truth boxes in those images, all of them. */
  gtFaces: number;
  /** Boxes not classified, by reason. */
  skipped: {
    /** Shorter side under minSize px. */
    small: number;
    /** VOC difficult / imglab ignore. */
    difficult: number;
    /** Label "face": a face of unknown mask status. */
    unlabelled: number;
    /** Labels that are no mask class, by name (after normalisation), e.g. a YOLO class id without names. */
    unknownLabels: Record<string, number>;
    /** In an image that could not be used (see problems). */
    inProblemImages: number;
  };
  minSize: number;
  maskThreshold: number;
  /** Annotations and images that could not be used: listed, left out. */
  problems: GtProblem[];
  result: ClassificationResult;
  msPerFace?: number;
}

function unknownText(u: Record<string, number>): string {
  const entries = Object.entries(u).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  return entries.map(([k, v]) => `${k} ${v}`).join(", ");
}

/** Plain-text report of a classify-gt run. */
export function formatClassification(run: ClassifyGtRun, maxProblems = 20): string {
  const r = run.result;
  const sk = run.skipped;
  const lines: string[] = [];
  const head = Object.entries(run.meta)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${k} ${v}`);
  if (head.length > 0) lines.push(head.join(" · "));
  const unknown = Object.values(sk.unknownLabels).reduce((a, b) => a + b, 0);
  lines.push(
    `images ${run.imagesClassified}/${run.images} · GT faces ${run.gtFaces} · classified ${r.faces} · ` +
      `skipped: ${sk.small} under ${run.minSize} px, ${sk.difficult} difficult, ${sk.unlabelled} "face" (no mask label), ` +
      `${unknown} unknown label${unknown === 1 ? "" : "s"}${unknown > 0 ? ` (${unknownText(sk.unknownLabels)})` : ""}, ` +
      `${sk.inProblemImages} in unusable images · mask threshold ${run.maskThreshold}` +
      (run.msPerFace !== undefined ? ` · ${run.msPerFace.toFixed(3)} ms/face` : ""),
  );
  if (run.problems.length > 0) {
    lines.push(`warning: ${run.problems.length} problem${run.problems.length === 1 ? "" : "s"} (left out):`);
    for (const p of run.problems.slice(0, maxProblems)) lines.push(`  ${p.file}: ${p.problem}`);
    if (run.problems.length > maxProblems)
      lines.push(`  … ${run.problems.length - maxProblems} more (all in --json)`);
  }
  lines.push("");
  lines.push(
    `accuracy ${pct(r.accuracy)} · mask vs not ${pct(r.maskVsNot)} · macro-F1 ${fmt(r.macroF1)} (over ${r.macroClasses.join(", ") || "no class"})`,
  );
  lines.push("");
  const rows = [["class", "GT", "predicted", "precision", "recall", "F1"]];
  for (const c of r.confusion.labels) {
    const m = r.perClass[c];
    rows.push([c, String(m.support), String(m.predicted), fmt(m.precision), fmt(m.recall), fmt(m.f1)]);
  }
  lines.push(table(rows));
  lines.push("");
  lines.push("confusion (rows GT, columns predicted)");
  lines.push(
    table([
      ["GT \\ pred", ...r.confusion.labels],
      ...r.confusion.labels.map((g, i) => [g, ...r.confusion.counts[i].map(String)]),
    ]),
  );
  return lines.join("\n");
}

/** A markdown section: the headline numbers, per-class table and confusion matrix. */
export function classificationMarkdown(run: ClassifyGtRun): string {
  const r = run.result;
  const sk = run.skipped;
  const unknown = Object.values(sk.unknownLabels).reduce((a, b) => a + b, 0);
  const head = Object.entries(run.meta)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${k} ${v}`)
    .join(" · ");
  const esc = (v: string) => v.replace(/\|/g, "\\|");
  const out = [
    `### Mask classifier on ground-truth boxes${head ? `: ${esc(head)}` : ""}`,
    "",
    `${r.faces} faces classified in ${run.imagesClassified} of ${run.images} images; skipped ${sk.small} under ${run.minSize} px, ` +
      `${sk.difficult} difficult, ${sk.unlabelled} without a mask label, ${unknown} with an unknown label` +
      `${unknown > 0 ? ` (${esc(unknownText(sk.unknownLabels))})` : ""}, ${sk.inProblemImages} in unusable images; ` +
      `${run.problems.length} problems. Mask threshold ${run.maskThreshold}.`,
    "",
    "| accuracy | mask vs not | macro-F1 |",
    "|---:|---:|---:|",
    `| ${fmt(r.accuracy)} | ${fmt(r.maskVsNot)} | ${fmt(r.macroF1)} |`,
    "",
    "| class | GT | predicted | precision | recall | F1 |",
    "|---|---:|---:|---:|---:|---:|",
    ...r.confusion.labels.map((c) => {
      const m = r.perClass[c];
      return `| ${c} | ${m.support} | ${m.predicted} | ${fmt(m.precision)} | ${fmt(m.recall)} | ${fmt(m.f1)} |`;
    }),
    "",
    `| GT \\ predicted | ${r.confusion.labels.join(" | ")} |`,
    `|---|${r.confusion.labels.map(() => "---:").join("|")}|`,
    ...r.confusion.labels.map((g, i) => `| ${g} | ${r.confusion.counts[i].join(" | ")} |`),
  ];
  return `${out.join("\n")}\n`;
}

/** Column names of the classify-gt markdown row (after any leading cells). */
export const CLASSIFY_COLUMNS = [
  "faces",
  "skipped",
  "problems",
  "accuracy",
  "mask vs not",
  "macro-F1",
  "F1 mask",
  "F1 no_mask",
  "F1 incorrect",
  "recall mask",
  "recall no_mask",
  "recall incorrect",
] as const;

/** Append one classify-gt row to a markdown report (header first when the file is new or empty). */
export function appendClassificationRow(
  file: string,
  run: ClassifyGtRun,
  leading: Record<string, string> = {},
): void {
  const names = Object.keys(leading);
  const cols = [...names, ...CLASSIFY_COLUMNS];
  const header = `| ${cols.join(" | ")} |\n|${cols.map((_, i) => (i < names.length ? "---" : "---:")).join("|")}|\n`;
  const r = run.result;
  const sk = run.skipped;
  const skipped =
    sk.small +
    sk.difficult +
    sk.unlabelled +
    sk.inProblemImages +
    Object.values(sk.unknownLabels).reduce((a, b) => a + b, 0);
  const cells = [
    ...Object.values(leading).map((v) => v.replace(/\|/g, "\\|")),
    String(r.faces),
    String(skipped),
    String(run.problems.length),
    fmt(r.accuracy),
    fmt(r.maskVsNot),
    fmt(r.macroF1),
    fmt(r.perClass.mask.f1),
    fmt(r.perClass.no_mask.f1),
    fmt(r.perClass.incorrect.f1),
    fmt(r.perClass.mask.recall),
    fmt(r.perClass.no_mask.recall),
    fmt(r.perClass.incorrect.recall),
  ];
  const fresh = !existsSync(file) || readFileSync(file, "utf8").trim() === "";
  appendFileSync(file, `${fresh ? header : ""}| ${cells.join(" | ")} |\n`);
}
