import { useCallback, useEffect, useMemo, useState } from "react";
import { api, type EventItem, type EventsPage, errorMessage, isAbort, query, type Source } from "../api.ts";
import { LabelBadge } from "../components/Badges.tsx";
import { EmptyState, ErrorNotice, FeedIndicator, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { Modal } from "../components/Modal.tsx";
import { SourceSelect } from "../components/SourceSelect.tsx";
import { formatTime, localInputToIso, percent } from "../format.ts";
import { useDebounced, useDocumentTitle, useEventSource, useFetch } from "../hooks.ts";
import { navigate } from "../router.tsx";

const PAGE_SIZE = 50;
/** How long a violation that arrived live stays highlighted. */
const HIGHLIGHT_MS = 6000;

interface Filters {
  from: string;
  to: string;
  source: string;
  zone: string;
  label: "" | "no_mask" | "incorrect";
}

const NO_FILTERS: Filters = { from: "", to: "", source: "", zone: "", label: "" };
const LABELS = new Set(["no_mask", "incorrect"]);

/** The filters in the page's address, so that a reload or a shared link keeps them. */
function filtersFromUrl(): Filters {
  const params = new URLSearchParams(window.location.search);
  const label = params.get("label") ?? "";
  return {
    from: params.get("from") ?? "",
    to: params.get("to") ?? "",
    source: params.get("source") ?? "",
    zone: params.get("zone") ?? "",
    label: LABELS.has(label) ? (label as Filters["label"]) : "",
  };
}

function filtersToUrl(filters: Filters): void {
  const search = query({ ...filters });
  navigate(`/violations${search}`, { replace: true });
}

export function ViolationsPage() {
  useDocumentTitle("Violations");
  // Refreshed now and then so that a source added meanwhile gets its name.
  const sources = useFetch<{ sources: Source[] }>("/api/v1/sources", 60_000);
  const [filters, setFilters] = useState<Filters>(filtersFromUrl);
  const applied = useDebounced(filters, 400);
  useEffect(() => filtersToUrl(applied), [applied]);
  const [rows, setRows] = useState<EventItem[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [loadingMore, setLoadingMore] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fresh, setFresh] = useState<ReadonlySet<number>>(new Set());
  const [shownId, setShownId] = useState<number | null>(null);

  const range = useMemo(
    () => ({
      from: localInputToIso(applied.from),
      to: localInputToIso(applied.to),
      source: applied.source,
      zone: applied.zone.trim() || undefined,
    }),
    [applied],
  );
  const listQuery = query({ ...range, label: applied.label, kind: "violation", limit: PAGE_SIZE });

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    setError(null);
    api<EventsPage>(`/api/v1/events${listQuery}`, { signal: controller.signal })
      .then((page) => {
        setRows(page.events);
        setCursor(page.next_cursor);
      })
      .catch((err) => {
        if (!isAbort(err)) setError(errorMessage(err));
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
  }, [listQuery]);

  const loadMore = async () => {
    if (!cursor) return;
    setLoadingMore(true);
    try {
      const page = await api<EventsPage>(`/api/v1/events${listQuery}&cursor=${encodeURIComponent(cursor)}`);
      setRows((r) => {
        const seen = new Set(r.map((e) => e.id));
        return [...r, ...page.events.filter((e) => !seen.has(e.id))];
      });
      setCursor(page.next_cursor);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setLoadingMore(false);
    }
  };

  // Violations committed from now on join the top of the list when they match the filters.
  const feedState = useEventSource(`/api/v1/live${query({ frames: false, source: range.source })}`, {
    event: (data) => {
      const e = data as EventItem;
      if (e.kind !== "violation" || (applied.label && e.label !== applied.label)) return;
      if (range.zone && e.zone !== range.zone) return;
      const at = Date.parse(e.time);
      if ((range.from && at < Date.parse(range.from)) || (range.to && at >= Date.parse(range.to))) return;
      setRows((r) => (r.some((x) => x.id === e.id) ? r : [e, ...r]));
      setFresh((f) => new Set(f).add(e.id));
      window.setTimeout(
        () =>
          setFresh((f) => {
            const next = new Set(f);
            next.delete(e.id);
            return next;
          }),
        HIGHLIGHT_MS,
      );
    },
  });

  const names = new Map(sources.data?.sources.map((s) => [s.id, s.name]));
  const sourceName = (id: string) => names.get(id) ?? id;
  const set = (patch: Partial<Filters>) => setFilters((f) => ({ ...f, ...patch }));
  const filtered = JSON.stringify(filters) !== JSON.stringify(NO_FILTERS);
  const shownIndex = shownId === null ? -1 : rows.findIndex((e) => e.id === shownId);
  const shown = shownIndex >= 0 ? rows[shownIndex] : null;
  const replaceRow = useCallback(
    (updated: EventItem) => setRows((r) => r.map((e) => (e.id === updated.id ? { ...e, ...updated } : e))),
    [],
  );

  return (
    <>
      <PageHeader title="Violations">
        <FeedIndicator state={feedState} />
        <a
          className="button"
          href={`/api/v1/violations.csv${query({ ...range, label: applied.label })}`}
          download
          title="The violations shown: the chosen period, source and label"
        >
          Export CSV
        </a>
      </PageHeader>

      <form className="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filters">
        <label className="field">
          <span>From</span>
          <input type="datetime-local" value={filters.from} onChange={(e) => set({ from: e.target.value })} />
        </label>
        <label className="field">
          <span>To</span>
          <input type="datetime-local" value={filters.to} onChange={(e) => set({ to: e.target.value })} />
        </label>
        <SourceSelect
          sources={sources.data?.sources ?? []}
          value={filters.source}
          onChange={(source) => set({ source })}
        />
        <label className="field">
          <span>Zone</span>
          <input
            value={filters.zone}
            placeholder="any"
            maxLength={100}
            onChange={(e) => set({ zone: e.target.value })}
          />
        </label>
        <label className="field">
          <span>Label</span>
          <select value={filters.label} onChange={(e) => set({ label: e.target.value as Filters["label"] })}>
            <option value="">No mask and incorrect</option>
            <option value="no_mask">No mask</option>
            <option value="incorrect">Mask worn incorrectly</option>
          </select>
        </label>
        {filtered && (
          <button type="button" className="button button-quiet" onClick={() => setFilters(NO_FILTERS)}>
            Clear filters
          </button>
        )}
      </form>

      {error && <ErrorNotice message={error} />}
      {loading && rows.length === 0 ? (
        <Loading />
      ) : rows.length === 0 && !error ? (
        <EmptyState title={filtered ? "No violations match these filters." : "No violations recorded yet."}>
          New ones appear here as they happen.
        </EmptyState>
      ) : (
        <div className={loading ? "table-wrap is-refreshing" : "table-wrap"}>
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Source</th>
                <th scope="col">Person</th>
                <th scope="col">Label</th>
                <th scope="col" className="num">
                  Confidence
                </th>
                <th scope="col">Snapshot</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((e) => (
                <tr
                  key={e.id}
                  data-testid="violation-row"
                  className={fresh.has(e.id) ? "row-fresh" : undefined}
                >
                  <td>
                    <time dateTime={e.time}>{formatTime(e.time)}</time>
                  </td>
                  <td>{sourceName(e.source_id)}</td>
                  <td>#{e.track_id}</td>
                  <td>
                    <LabelBadge label={e.label} />
                  </td>
                  <td className="num">{percent(e.confidence)}</td>
                  <td>
                    {e.snapshot_url ? (
                      <button type="button" className="thumb" onClick={() => setShownId(e.id)}>
                        <img
                          src={e.snapshot_url}
                          alt={`Snapshot of person #${e.track_id}, ${formatTime(e.time)}`}
                          loading="lazy"
                          width={48}
                          height={48}
                        />
                      </button>
                    ) : e.has_frame ? (
                      <button type="button" className="button button-small" onClick={() => setShownId(e.id)}>
                        View
                      </button>
                    ) : (
                      <span className="muted">—</span>
                    )}
                  </td>
                  <td>
                    {e.acknowledged_at ? (
                      <span
                        className="badge badge-ack"
                        title={`by ${e.acknowledged_by ?? "?"}, ${formatTime(e.acknowledged_at)}`}
                      >
                        Acknowledged
                      </span>
                    ) : (
                      <span className="muted">Open</span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {cursor && rows.length > 0 && (
        <div className="load-more">
          <button type="button" className="button" onClick={loadMore} disabled={loadingMore}>
            {loadingMore ? "Loading…" : "Load more"}
          </button>
        </div>
      )}

      <Modal open={shown !== null} title="Violation" onClose={() => setShownId(null)} wide>
        {shown && (
          <ViolationDetails
            event={shown}
            sourceName={sourceName(shown.source_id)}
            previous={shownIndex > 0 ? () => setShownId(rows[shownIndex - 1].id) : null}
            next={shownIndex < rows.length - 1 ? () => setShownId(rows[shownIndex + 1].id) : null}
            position={`${shownIndex + 1} of ${rows.length}${cursor ? "+" : ""}`}
            onChanged={replaceRow}
          />
        )}
      </Modal>
    </>
  );
}

/**
 * One violation in the dialog: the whole frame it happened in (the person boxed) or its snapshot,
 * previous/next through the list (also ← and →), and acknowledging it.
 */
function ViolationDetails({
  event,
  sourceName,
  previous,
  next,
  position,
  onChanged,
}: {
  event: EventItem;
  sourceName: string;
  previous: (() => void) | null;
  next: (() => void) | null;
  position: string;
  onChanged(event: EventItem): void;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [size, setSize] = useState<{ id: number; w: number; h: number } | null>(null);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === "ArrowLeft" && previous) previous();
      if (e.key === "ArrowRight" && next) next();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [previous, next]);

  // biome-ignore lint/correctness/useExhaustiveDependencies: a new event clears the last one's error
  useEffect(() => setError(null), [event.id]);

  const acknowledge = async () => {
    setBusy(true);
    setError(null);
    try {
      onChanged(await api<EventItem>(`/api/v1/events/${event.id}/acknowledge`, { method: "POST", body: {} }));
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  const [x1, y1, x2, y2] = event.box;
  const frameSize = size?.id === event.id ? size : null;
  return (
    <div className="violation" data-testid="violation-details" data-event-id={event.id}>
      {event.has_frame ? (
        <figure className="snapshot frame">
          <div className="frame-wrap">
            <img
              key={event.id}
              src={`/api/v1/events/${event.id}/frame`}
              alt={`The whole frame when person #${event.track_id} was seen, ${formatTime(event.time)}`}
              data-testid="event-frame"
              onLoad={(e) =>
                setSize({ id: event.id, w: e.currentTarget.naturalWidth, h: e.currentTarget.naturalHeight })
              }
            />
            {frameSize && (
              <svg
                className="frame-box"
                viewBox={`0 0 ${frameSize.w} ${frameSize.h}`}
                preserveAspectRatio="xMidYMid meet"
                aria-hidden="true"
              >
                <rect
                  x={x1}
                  y={y1}
                  width={x2 - x1}
                  height={y2 - y1}
                  fill="none"
                  stroke="#dc2626"
                  strokeWidth={Math.max(2, frameSize.w / 250)}
                />
              </svg>
            )}
          </div>
          {event.snapshot_url && (
            <img
              className="frame-crop"
              src={event.snapshot_url}
              alt={`Snapshot of person #${event.track_id}`}
            />
          )}
        </figure>
      ) : event.snapshot_url ? (
        <figure className="snapshot">
          <img src={event.snapshot_url} alt={`Snapshot of person #${event.track_id}`} />
        </figure>
      ) : (
        <p className="muted">No picture was stored with this violation.</p>
      )}
      <p className="violation-caption">
        {formatTime(event.time)} · {sourceName} · person #{event.track_id} ·{" "}
        <LabelBadge label={event.label} /> {percent(event.confidence)}
      </p>
      {error && <ErrorNotice message={`Could not acknowledge: ${error}`} />}
      <div className="violation-actions">
        <button type="button" className="button" onClick={previous ?? undefined} disabled={!previous}>
          ← Previous
        </button>
        <span className="muted" aria-live="polite">
          {position}
        </span>
        <button type="button" className="button" onClick={next ?? undefined} disabled={!next}>
          Next →
        </button>
        <span className="violation-ack" data-testid="ack-state">
          {event.acknowledged_at ? (
            <span>
              Acknowledged{event.acknowledged_by ? ` by ${event.acknowledged_by}` : ""},{" "}
              {formatTime(event.acknowledged_at)}
            </span>
          ) : (
            <button type="button" className="button button-primary" onClick={acknowledge} disabled={busy}>
              Acknowledge
            </button>
          )}
        </span>
      </div>
    </div>
  );
}
