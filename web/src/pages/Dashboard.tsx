import { useEffect, useMemo, useRef, useState } from "react";
import type { CompatStats, EventItem, EventsPage, LiveStatus, Source, Stats } from "../api.ts";
import { ComplianceChart, fillBuckets } from "../components/ComplianceChart.tsx";
import { EmptyState, ErrorNotice, FeedIndicator, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { formatNumber, formatTime, LABEL_TEXT, percent } from "../format.ts";
import { useDocumentTitle, useEventSource, useFetch } from "../hooks.ts";
import { Link } from "../router.tsx";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const PERIODS = {
  hour: { label: "Last 24 hours", size: HOUR, count: 24 },
  day: { label: "Last 30 days", size: DAY, count: 30 },
} as const;
type Bucket = keyof typeof PERIODS;

const FEED_LENGTH = 50;
/** New events refresh the counters, at most this often. */
const STATS_REFRESH_MS = 5000;

/** One line of the activity feed; the source is named when shown, once the names are known. */
interface FeedItem {
  key: string;
  time: string;
  sourceId: string;
  message: string;
  tone: "violation" | "ok" | "info";
}

function eventItem(e: EventItem): FeedItem {
  return {
    key: `event-${e.id}`,
    time: e.time,
    sourceId: e.source_id,
    message: `person #${e.track_id}: ${LABEL_TEXT[e.label]} (${percent(e.confidence)})`,
    tone: e.kind === "violation" ? "violation" : "ok",
  };
}

export function DashboardPage() {
  useDocumentTitle("Dashboard");
  const [bucket, setBucket] = useState<Bucket>("hour");
  const period = PERIODS[bucket];
  // Whole buckets only, so the address (and the fetch) changes once per bucket, not per render.
  const from = (Math.floor(Date.now() / period.size) - (period.count - 1)) * period.size;
  const stats = useFetch<Stats>(
    `/api/v1/stats?bucket=${bucket}&from=${new Date(from).toISOString()}`,
    60_000,
  );
  const compat = useFetch<CompatStats>("/get_stats", 30_000);
  const sources = useFetch<{ sources: Source[] }>("/api/v1/sources", 10_000);
  const recent = useFetch<EventsPage>("/api/v1/events?limit=20");
  const [feed, setFeed] = useState<FeedItem[]>([]);
  const lastStates = useRef(new Map<string, string>());
  const statusCount = useRef(0);
  const statsTimer = useRef<number | undefined>(undefined);

  const names = useMemo(() => new Map(sources.data?.sources.map((s) => [s.id, s.name])), [sources.data]);
  const sourceName = (id: string) => names.get(id) ?? id;

  useEffect(() => () => window.clearTimeout(statsTimer.current), []);

  const feedState = useEventSource("/api/v1/live?frames=false", {
    event: (data) => {
      const e = data as EventItem;
      setFeed((items) =>
        [eventItem(e), ...items.filter((i) => i.key !== `event-${e.id}`)].slice(0, FEED_LENGTH),
      );
      if (statsTimer.current === undefined) {
        statsTimer.current = window.setTimeout(() => {
          statsTimer.current = undefined;
          stats.reload();
          compat.reload();
        }, STATS_REFRESH_MS);
      }
    },
    status: (data) => {
      const s = data as LiveStatus;
      const before = lastStates.current.get(s.id);
      lastStates.current.set(s.id, s.state);
      if (before === undefined || before === s.state) return;
      const item: FeedItem = {
        key: `status-${++statusCount.current}`,
        time: new Date().toISOString(),
        sourceId: s.id,
        message: `now ${s.state}${s.lastError && s.state !== "running" ? ` (${s.lastError})` : ""}`,
        tone: "info",
      };
      setFeed((items) => [item, ...items].slice(0, FEED_LENGTH));
    },
  });

  // The feed starts with the latest stored events; live ones go on top.
  const initial = recent.data?.events;
  useEffect(() => {
    if (!initial) return;
    setFeed((items) => {
      const seen = new Set(items.map((i) => i.key));
      return [...items, ...initial.map(eventItem).filter((i) => !seen.has(i.key))].slice(0, FEED_LENGTH);
    });
  }, [initial]);

  const totals = stats.data?.totals;
  const all = sources.data?.sources ?? [];
  const running = all.filter((s) => s.status.state === "running").length;
  const hasDefault = all.some((s) => s.id === "default");

  return (
    <>
      <PageHeader title="Dashboard">
        <fieldset className="segmented" aria-label="Period">
          {(Object.keys(PERIODS) as Bucket[]).map((b) => (
            <label key={b} className={b === bucket ? "segment segment-active" : "segment"}>
              <input
                type="radio"
                name="period"
                value={b}
                checked={b === bucket}
                onChange={() => setBucket(b)}
                className="visually-hidden"
              />
              {PERIODS[b].label}
            </label>
          ))}
        </fieldset>
      </PageHeader>

      {stats.error && <ErrorNotice message={`Statistics: ${stats.error}`} onRetry={stats.reload} />}
      <section className="cards" aria-label={`Counts, ${period.label.toLowerCase()}`}>
        <Counter
          label="Faces seen"
          value={formatNumber(totals?.events)}
          hint="settled labels of tracked people"
        />
        <Counter label="Mask" value={formatNumber(totals?.mask)} tone="green" />
        <Counter label="No mask" value={formatNumber(totals?.no_mask)} tone="red" />
        <Counter label="Worn incorrectly" value={formatNumber(totals?.incorrect)} tone="amber" />
        <Counter label="Compliance" value={percent(totals?.compliance_rate, 1)} />
        <Counter
          label="Sources running"
          value={sources.data ? `${running} / ${all.length}` : "—"}
          hint={sources.error ?? (sources.data ? "running now, of all sources" : undefined)}
          testId="sources-running"
        />
      </section>

      {hasDefault && compat.data && (
        <p className="muted compat-line">
          Default camera since the last reset: {formatNumber(compat.data.total_detections)} detections (
          {formatNumber(compat.data.mask_count)} mask, {formatNumber(compat.data.no_mask_count)} no mask) ·
          now {compat.data.current_status.toLowerCase()}
        </p>
      )}

      <div className="dashboard-grid">
        <section className="panel">
          <h2 className="panel-title">Compliance over time</h2>
          {stats.data ? (
            <ComplianceChart buckets={fillBuckets(stats.data, from)} bucket={stats.data.bucket} />
          ) : stats.loading ? (
            <Loading />
          ) : null}
        </section>
        <section className="panel">
          <div className="panel-title-row">
            <h2 className="panel-title">Activity</h2>
            <FeedIndicator state={feedState} />
          </div>
          {recent.error && <ErrorNotice message={recent.error} onRetry={recent.reload} />}
          {feed.length === 0 && !recent.loading ? (
            <EmptyState title="No activity yet.">
              Events appear here as cameras see people. <Link to="/live">Start a camera</Link>.
            </EmptyState>
          ) : null}
          <ol className="feed" data-testid="activity-feed" aria-live="polite" aria-relevant="additions">
            {feed.map((item) => (
              <li key={item.key} className={`feed-item feed-${item.tone}`}>
                <time dateTime={item.time}>{formatTime(item.time)}</time>
                <span>
                  <strong>{sourceName(item.sourceId)}</strong> · {item.message}
                </span>
              </li>
            ))}
          </ol>
        </section>
      </div>
    </>
  );
}

function Counter({
  label,
  value,
  hint,
  tone,
  testId,
}: {
  label: string;
  value: string;
  hint?: string;
  tone?: "green" | "red" | "amber";
  testId?: string;
}) {
  return (
    <div className={tone ? `card card-${tone}` : "card"} data-testid={testId}>
      <p className="card-label">{label}</p>
      <p className="card-value">{value}</p>
      {hint && <p className="card-hint">{hint}</p>}
    </div>
  );
}
