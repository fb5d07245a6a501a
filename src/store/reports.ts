/**
 * Compliance reports over a time range: totals, counts per hour or day, the worst bucket, the hours
 * of the day with the most violations, and each source's share. JSON for the API, CSV for
 * spreadsheets (one row per bucket).
 */
import type { Database } from "./db.ts";
import {
  type EventCounts,
  type EventFilter,
  eventStats,
  eventsByHourOfDay,
  eventsBySource,
  eventTotals,
  type StatsBucket,
} from "./events.ts";

export interface ReportCounts {
  events: number;
  violations: number;
  mask: number;
  no_mask: number;
  incorrect: number;
  /** mask / (mask + no_mask + incorrect); null without faces. */
  compliance_rate: number | null;
}

export interface Report {
  from: string | null;
  to: string | null;
  source_id: string | null;
  bucket: StatsBucket;
  totals: ReportCounts;
  buckets: (ReportCounts & { start: string })[];
  peaks: {
    /** The bucket with the most violations. */
    most_violations: { start: string; violations: number } | null;
    /** The bucket with the lowest compliance (among those with faces). */
    lowest_compliance: { start: string; compliance_rate: number; faces: number } | null;
  };
  /** UTC hours of the day with the most violations, most first (at most 5). */
  top_hours: (ReportCounts & { hour: number })[];
  by_source: (ReportCounts & { source_id: string })[];
}

function counts(c: EventCounts): ReportCounts {
  const faces = c.mask + c.noMask + c.incorrect;
  return {
    events: c.events,
    violations: c.violations,
    mask: c.mask,
    no_mask: c.noMask,
    incorrect: c.incorrect,
    compliance_rate: faces ? c.mask / faces : null,
  };
}

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** Throws StoreError `invalid_filter` / `invalid_bucket` for a bad range or bucket. */
export async function buildReport(
  db: Database,
  opts: EventFilter & { bucket: StatsBucket },
): Promise<Report> {
  const filter: EventFilter = { from: opts.from, to: opts.to, sourceId: opts.sourceId, zone: opts.zone };
  const [totals, buckets, hours, sources] = await Promise.all([
    eventTotals(db, filter),
    eventStats(db, { ...filter, bucket: opts.bucket }),
    eventsByHourOfDay(db, filter),
    eventsBySource(db, filter),
  ]);
  const rows = buckets.map((b) => ({ start: new Date(b.start).toISOString(), ...counts(b) }));
  const worst = rows
    .filter((b) => b.compliance_rate !== null)
    .reduce<(typeof rows)[number] | null>(
      (w, b) => (w === null || (b.compliance_rate as number) < (w.compliance_rate as number) ? b : w),
      null,
    );
  const busiest = rows.reduce<(typeof rows)[number] | null>(
    (w, b) => (b.violations > 0 && (w === null || b.violations > w.violations) ? b : w),
    null,
  );
  return {
    from: iso(opts.from),
    to: iso(opts.to),
    source_id: opts.sourceId ?? null,
    bucket: opts.bucket,
    totals: counts(totals),
    buckets: rows,
    peaks: {
      most_violations: busiest && { start: busiest.start, violations: busiest.violations },
      lowest_compliance: worst && {
        start: worst.start,
        compliance_rate: worst.compliance_rate as number,
        faces: worst.mask + worst.no_mask + worst.incorrect,
      },
    },
    top_hours: hours
      .filter((h) => h.violations > 0)
      .sort((a, b) => b.violations - a.violations || a.hour - b.hour)
      .slice(0, 5)
      .map((h) => ({ hour: h.hour, ...counts(h) })),
    by_source: sources.map((s) => ({ source_id: s.sourceId, ...counts(s) })),
  };
}

const CSV_COLUMNS = [
  "start",
  "events",
  "violations",
  "mask",
  "no_mask",
  "incorrect",
  "compliance_rate",
] as const;

/** One row per bucket, then a `total` row. */
export function reportCsv(report: Report): string {
  const line = (start: string, c: ReportCounts) =>
    [
      start,
      c.events,
      c.violations,
      c.mask,
      c.no_mask,
      c.incorrect,
      c.compliance_rate === null ? "" : c.compliance_rate.toFixed(4),
    ].join(",");
  return `${[CSV_COLUMNS.join(","), ...report.buckets.map((b) => line(b.start, b)), line("total", report.totals)].join("\r\n")}\r\n`;
}
