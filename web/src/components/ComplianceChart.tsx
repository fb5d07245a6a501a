import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { useEffect, useRef } from "react";
import type { Stats } from "../api.ts";

// Only what this chart draws, so the bundle carries no more of chart.js than that.
Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
);

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const hourLabel = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  hour: "2-digit",
  minute: "2-digit",
});
// Day buckets are UTC days: label them as such so a day never shows as the one before.
const dayLabel = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

export interface ChartBucket {
  start: number;
  compliance: number | null;
  violations: number;
}

/** Every bucket from `from` to now, the empty ones too, so the time axis has no jumps. */
export function fillBuckets(stats: Stats, from: number): ChartBucket[] {
  const size = stats.bucket === "day" ? DAY : HOUR;
  const byStart = new Map(stats.buckets.map((b) => [Date.parse(b.start), b]));
  const out: ChartBucket[] = [];
  for (let t = Math.floor(from / size) * size; t <= Date.now(); t += size) {
    const b = byStart.get(t);
    out.push({
      start: t,
      compliance: b?.compliance_rate === null || b === undefined ? null : b.compliance_rate * 100,
      violations: b?.violations ?? 0,
    });
  }
  return out;
}

/** Compliance (line, %) and violations (bars) per bucket. */
export function ComplianceChart({ buckets, bucket }: { buckets: ChartBucket[]; bucket: "hour" | "day" }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);

  useEffect(() => {
    if (!canvas.current) return;
    const styles = getComputedStyle(document.documentElement);
    const color = (name: string) => styles.getPropertyValue(name).trim();
    chart.current = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: [],
        datasets: [
          {
            type: "line",
            label: "Compliance %",
            data: [],
            yAxisID: "rate",
            borderColor: color("--green"),
            backgroundColor: color("--green"),
            borderWidth: 3,
            pointRadius: 4,
            pointHoverRadius: 6,
            tension: 0.25,
            // Hours without labelled faces have no rate: the line joins the hours that do.
            spanGaps: true,
            // Drawn over the bars.
            order: 0,
          },
          {
            type: "bar",
            label: "Violations",
            data: [],
            yAxisID: "count",
            backgroundColor: color("--red-soft"),
            borderRadius: 3,
            order: 1,
          },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { color: color("--text-muted") } } },
        scales: {
          x: {
            ticks: { color: color("--text-muted"), maxRotation: 0, autoSkipPadding: 16 },
            grid: { display: false },
          },
          rate: {
            position: "left",
            min: 0,
            max: 100,
            title: {
              display: true,
              text: "Compliance (%)",
              color: color("--green"),
              font: { weight: "bold" },
            },
            ticks: { color: color("--text-muted"), callback: (v) => `${v}%` },
            grid: { color: color("--border") },
          },
          count: {
            position: "right",
            beginAtZero: true,
            title: { display: true, text: "Violations", color: color("--red"), font: { weight: "bold" } },
            ticks: { color: color("--text-muted"), precision: 0 },
            grid: { display: false },
          },
        },
      },
    });
    return () => {
      chart.current?.destroy();
      chart.current = null;
    };
  }, []);

  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    const format = bucket === "day" ? dayLabel : hourLabel;
    c.data.labels = buckets.map((b) => format.format(b.start));
    c.data.datasets[0].data = buckets.map((b) => b.compliance);
    c.data.datasets[1].data = buckets.map((b) => b.violations);
    c.update();
  }, [buckets, bucket]);

  const known = buckets.filter((b) => b.compliance !== null);
  const summary = known.length
    ? `Compliance per ${bucket}, from ${Math.min(...known.map((b) => b.compliance ?? 0)).toFixed(0)}% to ${Math.max(...known.map((b) => b.compliance ?? 0)).toFixed(0)}%.`
    : `No labelled faces in this period.`;
  return (
    <div
      className="chart"
      data-testid="compliance-chart"
      data-compliance-points={known.length}
      data-axis-titles="Compliance (%)|Violations"
    >
      <canvas ref={canvas} role="img" aria-label={summary} />
    </div>
  );
}
