/**
 * Formatting of eval results: a plain-text table for the terminal, a markdown row (numbers only)
 * to append to a report file, and JSON (the result object as is).
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import type { EvalResult } from "./score.ts";
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
