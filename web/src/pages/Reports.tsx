import { useState } from "react";
import { query, type Source } from "../api.ts";
import { EmptyState, ErrorNotice, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { SourceSelect } from "../components/SourceSelect.tsx";
import { formatNumber, formatTime, localInputToIso, percent } from "../format.ts";
import { useDocumentTitle, useFetch } from "../hooks.ts";

interface Counts {
  events: number;
  violations: number;
  mask: number;
  no_mask: number;
  incorrect: number;
  compliance_rate: number | null;
}

interface Report {
  from: string | null;
  to: string | null;
  source_id: string | null;
  bucket: "hour" | "day";
  totals: Counts;
  buckets: (Counts & { start: string })[];
  peaks: {
    most_violations: { start: string; violations: number } | null;
    lowest_compliance: { start: string; compliance_rate: number; faces: number } | null;
  };
  top_hours: (Counts & { hour: number })[];
  by_source: (Counts & { source_id: string })[];
}

/** Local date-time input value for `daysAgo` days before now (at the current time). */
function daysAgo(days: number): string {
  const d = new Date(Date.now() - days * 86_400_000 - new Date().getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

/** A bucket's start in UTC, as the buckets are counted: a day, or a day and hour. */
const bucketText = (iso: string, bucket: "hour" | "day") =>
  bucket === "day" ? iso.slice(0, 10) : `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;

const hourText = (h: number) =>
  `${String(h).padStart(2, "0")}:00–${String((h + 1) % 24).padStart(2, "0")}:00 UTC`;

export function ReportsPage() {
  useDocumentTitle("Reports");
  const [form, setForm] = useState({
    from: daysAgo(7),
    to: "",
    source: "",
    zone: "",
    bucket: "day" as "day" | "hour",
  });
  const [applied, setApplied] = useState(form);
  const sources = useFetch<{ sources: Source[] }>("/api/v1/sources").data?.sources ?? [];
  const params = {
    from: localInputToIso(applied.from),
    to: localInputToIso(applied.to),
    source: applied.source || undefined,
    zone: applied.zone.trim() || undefined,
    bucket: applied.bucket,
  };
  const report = useFetch<Report>(`/api/v1/reports${query(params)}`);
  const r = report.data;
  const sourceName = (id: string | null) =>
    id ? (sources.find((s) => s.id === id)?.name ?? id) : "All sources";

  return (
    <>
      <PageHeader title="Compliance report">
        <div className="no-print">
          <a className="button" href={`/api/v1/reports${query({ ...params, format: "csv" })}`} download>
            Download CSV
          </a>
          <button type="button" className="button button-primary" onClick={() => window.print()}>
            Print / save as PDF
          </button>
        </div>
      </PageHeader>
      <form
        className="filters no-print"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(form);
        }}
      >
        <label className="field">
          <span>From</span>
          <input
            type="datetime-local"
            value={form.from}
            onChange={(e) => setForm({ ...form, from: e.target.value })}
          />
        </label>
        <label className="field">
          <span>To</span>
          <input
            type="datetime-local"
            value={form.to}
            onChange={(e) => setForm({ ...form, to: e.target.value })}
          />
        </label>
        <SourceSelect
          sources={sources}
          value={form.source}
          onChange={(source) => setForm({ ...form, source })}
        />
        <label className="field">
          <span>Zone</span>
          <input
            value={form.zone}
            placeholder="any"
            maxLength={100}
            onChange={(e) => setForm({ ...form, zone: e.target.value })}
          />
        </label>
        <label className="field">
          <span>Per</span>
          <select
            value={form.bucket}
            onChange={(e) => setForm({ ...form, bucket: e.target.value as "day" | "hour" })}
          >
            <option value="day">day</option>
            <option value="hour">hour</option>
          </select>
        </label>
        <button type="submit" className="button">
          Show
        </button>
      </form>
      {report.error && <ErrorNotice message={report.error} onRetry={report.reload} />}
      {!r ? (
        report.loading && <Loading />
      ) : (
        <article className="report" data-testid="report">
          <p className="muted">
            {sourceName(r.source_id)} · {r.from ? formatTime(r.from) : "the beginning"} to{" "}
            {r.to ? formatTime(r.to) : "now"}
          </p>
          <section className="cards" aria-label="Totals">
            <div className="card">
              <p className="card-label">Compliance</p>
              <p className="card-value" data-testid="report-compliance">
                {percent(r.totals.compliance_rate, 1)}
              </p>
            </div>
            <div className="card card-red">
              <p className="card-label">Violations</p>
              <p className="card-value">{formatNumber(r.totals.violations)}</p>
            </div>
            <div className="card card-green">
              <p className="card-label">Faces with a mask</p>
              <p className="card-value">{formatNumber(r.totals.mask)}</p>
            </div>
            <div className="card">
              <p className="card-label">No mask / worn wrong</p>
              <p className="card-value">
                {formatNumber(r.totals.no_mask)} / {formatNumber(r.totals.incorrect)}
              </p>
            </div>
          </section>
          {r.totals.events === 0 ? (
            <EmptyState title="No events in this range." />
          ) : (
            <>
              <h2>Peaks</h2>
              <ul>
                {r.peaks.most_violations && (
                  <li>
                    Most violations: {r.peaks.most_violations.violations} in{" "}
                    {r.bucket === "day" ? "the day" : "the hour from"}{" "}
                    {bucketText(r.peaks.most_violations.start, r.bucket)}
                  </li>
                )}
                {r.peaks.lowest_compliance && (
                  <li>
                    Lowest compliance: {percent(r.peaks.lowest_compliance.compliance_rate, 1)} of{" "}
                    {r.peaks.lowest_compliance.faces} faces in{" "}
                    {r.bucket === "day" ? "the day" : "the hour from"}{" "}
                    {bucketText(r.peaks.lowest_compliance.start, r.bucket)}
                  </li>
                )}
              </ul>
              {r.top_hours.length > 0 && (
                <>
                  <h2>Hours of the day with the most violations</h2>
                  <CountsTable
                    rows={r.top_hours.map((h) => ({ key: hourText(h.hour), ...h }))}
                    first="Hour"
                  />
                </>
              )}
              {r.by_source.length > 1 && (
                <>
                  <h2>By source</h2>
                  <CountsTable
                    rows={r.by_source.map((s) => ({ key: sourceName(s.source_id), ...s }))}
                    first="Source"
                  />
                </>
              )}
              <h2>Per {r.bucket}</h2>
              <CountsTable
                rows={r.buckets.map((b) => ({ key: formatTime(b.start), ...b }))}
                first={r.bucket}
              />
            </>
          )}
        </article>
      )}
    </>
  );
}

function CountsTable({ rows, first }: { rows: (Counts & { key: string })[]; first: string }) {
  return (
    <div className="table-wrap">
      <table className="table table-compact">
        <thead>
          <tr>
            <th scope="col">{first}</th>
            <th scope="col">Compliance</th>
            <th scope="col">Violations</th>
            <th scope="col">Mask</th>
            <th scope="col">No mask</th>
            <th scope="col">Worn wrong</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.key}>
              <td>{r.key}</td>
              <td>{percent(r.compliance_rate, 1)}</td>
              <td>{formatNumber(r.violations)}</td>
              <td>{formatNumber(r.mask)}</td>
              <td>{formatNumber(r.no_mask)}</td>
              <td>{formatNumber(r.incorrect)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
