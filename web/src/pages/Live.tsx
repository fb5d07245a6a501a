import { useEffect, useRef, useState } from "react";
import { api, errorMessage, type LiveTrack, type Source } from "../api.ts";
import { type CameraAnswer, CameraSession } from "../camera.ts";
import { StateBadge } from "../components/Badges.tsx";
import { EmptyState, ErrorNotice, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { displayScale, drawAnnotations } from "../draw.ts";
import { formatNumber, LABEL_TEXT, labelColor, percent } from "../format.ts";
import { useDocumentTitle, useEventSource, useFetch } from "../hooks.ts";
import { navigate, useLocation } from "../router.tsx";
import { useSession } from "../session.tsx";

/** Each user's camera is a source of its own: two cameras must never feed one tracker. */
const browserSourceName = (username: string | undefined) =>
  username ? `Browser camera (${username})` : "Browser camera";
const ACTIVE_STATES = new Set(["starting", "running", "reconnecting"]);
/** Tracks older than this (no frame since) are no longer "in view". */
const TRACKS_FRESH_MS = 3000;

/** People in view of one source: the tracks of its latest analysed frame. */
interface InView {
  sourceId: string;
  sourceName: string;
  at: number;
  tracks: LiveTrack[];
}

/** The page's address: `?sources=a,b` (several server sources), `?source=a` (older links), or the browser camera. */
function chosenSources(params: URLSearchParams): string[] | null {
  const many = params.get("sources");
  if (many !== null) return many.split(",").filter(Boolean);
  const one = params.get("source");
  return one && one !== "browser" ? [one] : null;
}

function showSources(ids: string[] | null): void {
  navigate(ids === null ? "/live" : `/live?sources=${ids.map(encodeURIComponent).join(",")}`, {
    replace: true,
  });
}

function toggleFullscreen(element: HTMLElement | null): void {
  if (!element) return;
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  else element.requestFullscreen?.().catch(() => {});
}

function FullscreenButton({ target, label }: { target: () => HTMLElement | null; label: string }) {
  return (
    <button type="button" className="button button-small" onClick={() => toggleFullscreen(target())}>
      <svg className="icon" viewBox="0 0 16 16" aria-hidden="true">
        <path
          d="M2 6V2h4M10 2h4v4M14 10v4h-4M6 14H2v-4"
          fill="none"
          stroke="currentColor"
          strokeWidth="1.6"
          strokeLinecap="round"
        />
      </svg>
      Fullscreen
      <span className="visually-hidden"> {label}</span>
    </button>
  );
}

export function LivePage() {
  useDocumentTitle("Live");
  const { user } = useSession();
  const { params } = useLocation();
  const sources = useFetch<{ sources: Source[] }>("/api/v1/sources", 2000);
  const serverSources = sources.data?.sources.filter((s) => s.kind !== "browser") ?? [];
  const chosen = chosenSources(params);
  const mode = chosen === null ? "browser" : "server";

  const switchTo = (next: "browser" | "server") => {
    if (next === mode) return;
    if (next === "browser") return showSources(null);
    // Start with what is running (or the first source), so the grid is not empty.
    const running = serverSources.filter((s) => ACTIVE_STATES.has(s.status.state)).map((s) => s.id);
    showSources(running.length ? running : serverSources.slice(0, 1).map((s) => s.id));
  };

  return (
    <>
      <PageHeader title="Live">
        <fieldset className="segmented" aria-label="What to watch">
          {(
            [
              ["browser", "This browser's camera"],
              ["server", "Server sources"],
            ] as const
          ).map(([value, text]) => (
            <label key={value} className={value === mode ? "segment segment-active" : "segment"}>
              <input
                type="radio"
                name="live-mode"
                value={value}
                checked={value === mode}
                onChange={() => switchTo(value)}
                className="visually-hidden"
              />
              {text}
            </label>
          ))}
        </fieldset>
      </PageHeader>
      {chosen === null ? (
        <BrowserCamera sourceName={browserSourceName(user?.username)} />
      ) : sources.error && !sources.data ? (
        <ErrorNotice message={sources.error} onRetry={sources.reload} />
      ) : !sources.data ? (
        <Loading />
      ) : (
        <SourceGrid all={serverSources} chosen={chosen} onChanged={sources.reload} />
      )}
    </>
  );
}

/** The id of this user's browser source: the existing one, or a new one. */
async function browserSourceId(name: string): Promise<string> {
  const { sources } = await api<{ sources: Source[] }>("/api/v1/sources");
  const found = sources.find((s) => s.kind === "browser" && s.mine && s.name === name);
  if (found) return found.id;
  const created = await api<Source>("/api/v1/sources", { body: { name, kind: "browser" } });
  return created.id;
}

interface CameraStats {
  frames: number;
  tracks: number;
  fps: number;
}

function BrowserCamera({ sourceName }: { sourceName: string }) {
  const video = useRef<HTMLVideoElement>(null);
  const overlay = useRef<HTMLCanvasElement>(null);
  const frame = useRef<HTMLDivElement>(null);
  const session = useRef<CameraSession | null>(null);
  const answerTimes = useRef<number[]>([]);
  const [phase, setPhase] = useState<"off" | "starting" | "on">("off");
  const [error, setError] = useState<string | null>(null);
  const [frameError, setFrameError] = useState<string | null>(null);
  const [stats, setStats] = useState<CameraStats>({ frames: 0, tracks: 0, fps: 0 });
  const [inView, setInView] = useState<InView | null>(null);

  useEffect(() => () => session.current?.stop(), []);

  const onAnswer = (answer: CameraAnswer) => {
    const now = performance.now();
    const times = answerTimes.current.filter((t) => now - t < 2000);
    times.push(now);
    answerTimes.current = times;
    const fps = times.length > 1 ? ((times.length - 1) * 1000) / (now - times[0]) : 0;
    setStats((s) => ({ frames: s.frames + 1, tracks: answer.tracks.length, fps }));
    setInView({ sourceId: "browser", sourceName, at: Date.now(), tracks: answer.tracks });
    setFrameError(null);
    if (overlay.current) drawTracks(overlay.current, answer.width, answer.height, answer.tracks);
  };

  const start = async () => {
    if (!video.current) return;
    setPhase("starting");
    setError(null);
    setFrameError(null);
    setStats({ frames: 0, tracks: 0, fps: 0 });
    setInView(null);
    answerTimes.current = [];
    const camera = new CameraSession(video.current, {
      answer: onAnswer,
      frameError: setFrameError,
      ended: (message) => {
        session.current = null;
        setPhase("off");
        setInView(null);
        setError(message);
      },
    });
    session.current = camera;
    try {
      await camera.start(await browserSourceId(sourceName));
      if (session.current === camera) setPhase("on");
    } catch (err) {
      camera.stop();
      if (session.current !== camera) return; // stopped meanwhile
      session.current = null;
      setPhase("off");
      setError(errorMessage(err));
    }
  };

  const stop = () => {
    session.current?.stop();
    session.current = null;
    setPhase("off");
    setInView(null);
    const canvas = overlay.current;
    canvas?.getContext("2d")?.clearRect(0, 0, canvas.width, canvas.height);
  };

  return (
    <section className="live">
      <div className="toolbar">
        {phase === "off" ? (
          <button type="button" className="button button-primary" onClick={start}>
            Start
          </button>
        ) : (
          <button type="button" className="button" onClick={stop}>
            Stop
          </button>
        )}
        <FullscreenButton target={() => frame.current} label="camera view" />
        <p className="live-status" data-testid="live-fps" aria-live="polite">
          {phase === "off"
            ? "Camera off"
            : phase === "starting"
              ? "Starting camera…"
              : `${stats.fps.toFixed(1)} fps · ${stats.tracks} ${stats.tracks === 1 ? "face" : "faces"} · ${formatNumber(stats.frames)} frames analysed`}
        </p>
      </div>
      {error && <ErrorNotice message={error} />}
      {frameError && <p className="notice notice-warning">Last frame: {frameError}</p>}
      <div className="live-layout">
        <div>
          <div ref={frame} className={phase === "off" ? "video-frame video-frame-off" : "video-frame"}>
            <video ref={video} muted playsInline aria-label="Live video from this browser" />
            <canvas
              ref={overlay}
              className="overlay"
              data-testid="live-overlay"
              data-tracks={stats.tracks}
              data-frames={stats.frames}
            />
            {phase === "off" && (
              <p className="video-placeholder">
                Start to send this camera to Maskwatch. Frames are analysed on the server; nothing is recorded
                except violation snapshots.
              </p>
            )}
          </div>
          <Legend />
        </div>
        <PeopleInView views={inView ? [inView] : []} />
      </div>
    </section>
  );
}

/** Boxes coloured by label with "#id label 93%", in the coordinates of the frame that was sent. */
function drawTracks(canvas: HTMLCanvasElement, width: number, height: number, tracks: readonly LiveTrack[]) {
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  drawAnnotations(
    ctx,
    width,
    height,
    tracks.map((track) => ({
      box: track.box,
      color: labelColor(track.label),
      text: track.label
        ? `#${track.id} ${LABEL_TEXT[track.label]} ${Math.round(track.confidence * 100)}%`
        : `#${track.id}`,
    })),
    displayScale(canvas),
  );
}

function Legend() {
  return (
    <ul className="legend" aria-label="Box colours">
      {(["mask", "incorrect", "no_mask"] as const).map((label) => (
        <li key={label}>
          <span className="swatch" style={{ background: labelColor(label) }} />
          {LABEL_TEXT[label]}
        </li>
      ))}
      <li>
        <span className="swatch" style={{ background: labelColor(null) }} />
        Not yet decided
      </li>
    </ul>
  );
}

/** The people the cameras see now: one row per track of each source's latest frame. */
function PeopleInView({ views }: { views: InView[] }) {
  const now = Date.now();
  const rows = views
    .filter((v) => now - v.at < TRACKS_FRESH_MS)
    .flatMap((v) => v.tracks.map((t) => ({ view: v, track: t })));
  const several = views.length > 1;
  return (
    <section className="panel people" aria-labelledby="people-title">
      <h2 className="panel-title" id="people-title">
        People in view <span className="muted">({rows.length})</span>
      </h2>
      {rows.length === 0 ? (
        <p className="muted">Nobody in view.</p>
      ) : (
        <div className="table-wrap">
          <table className="table table-compact" data-testid="people">
            <thead>
              <tr>
                {several && <th scope="col">Source</th>}
                <th scope="col">Person</th>
                <th scope="col">Label</th>
                <th scope="col" className="num">
                  Confidence
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map(({ view, track }) => (
                <tr key={`${view.sourceId}:${track.id}`} data-testid="person-row">
                  {several && <td>{view.sourceName}</td>}
                  <td>#{track.id}</td>
                  <td>
                    <span className="swatch-inline" style={{ background: labelColor(track.label) }} />
                    {track.label ? LABEL_TEXT[track.label] : "Not yet decided"}
                  </td>
                  <td className="num">{track.label ? percent(track.confidence) : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

interface FrameMessage {
  source_id: string;
  tracks: LiveTrack[];
}

/** Several server sources side by side, each its MJPEG view and status, with the people they see. */
function SourceGrid({ all, chosen, onChanged }: { all: Source[]; chosen: string[]; onChanged(): void }) {
  const { isAdmin } = useSession();
  const grid = useRef<HTMLDivElement>(null);
  const [latest, setLatest] = useState<Record<string, { at: number; tracks: LiveTrack[] }>>({});
  const shown = chosen.map((id) => all.find((s) => s.id === id) ?? id);
  const missing = shown.filter((s): s is string => typeof s === "string");
  const sources = shown.filter((s): s is Source => typeof s !== "string");

  const feedUrl =
    sources.length === 0
      ? null
      : `/api/v1/live${sources.length === 1 ? `?source=${encodeURIComponent(sources[0].id)}` : ""}`;
  useEventSource(feedUrl, {
    frame: (data) => {
      const f = data as FrameMessage;
      if (!chosen.includes(f.source_id)) return;
      setLatest((l) => ({ ...l, [f.source_id]: { at: Date.now(), tracks: f.tracks ?? [] } }));
    },
  });

  const toggle = (id: string, on: boolean) =>
    showSources(on ? [...chosen.filter((x) => x !== id), id] : chosen.filter((x) => x !== id));

  if (all.length === 0)
    return (
      <EmptyState title="No server sources yet.">
        {isAdmin ? "Add a camera stream or a video file on the Sources page." : "An admin can add cameras."}
      </EmptyState>
    );

  const views: InView[] = sources
    .filter((s) => s.status.state === "running" && latest[s.id])
    .map((s) => ({ sourceId: s.id, sourceName: s.name, ...latest[s.id] }));

  return (
    <section className="live">
      <fieldset className="source-picker" aria-label="Sources shown">
        <legend>Sources shown</legend>
        {all.map((s) => (
          <label key={s.id} className="check">
            <input
              type="checkbox"
              checked={chosen.includes(s.id)}
              onChange={(e) => toggle(s.id, e.target.checked)}
            />
            {s.name} <StateBadge state={s.status.state} />
          </label>
        ))}
        <FullscreenButton target={() => grid.current} label="all sources shown" />
      </fieldset>
      {missing.map((id) => (
        <p key={id} className="notice notice-warning">
          There is no source “{id}”. It may have been deleted.
        </p>
      ))}
      <div className="live-layout">
        <div ref={grid} className="live-grid" data-count={sources.length}>
          {sources.length === 0 ? (
            <EmptyState title="No source chosen.">Tick the sources to watch above.</EmptyState>
          ) : (
            sources.map((s) => <SourceTile key={s.id} source={s} isAdmin={isAdmin} onChanged={onChanged} />)
          )}
        </div>
        <PeopleInView views={views} />
      </div>
      <Legend />
    </section>
  );
}

function SourceTile({ source, isAdmin, onChanged }: { source: Source; isAdmin: boolean; onChanged(): void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);
  const [streamLost, setStreamLost] = useState(false);
  const tile = useRef<HTMLElement>(null);
  const { status } = source;
  const active = ACTIVE_STATES.has(status.state);
  const running = status.state === "running";

  const toggle = async () => {
    setBusy(true);
    setError(null);
    try {
      await api(`/api/v1/sources/${encodeURIComponent(source.id)}/${active ? "stop" : "start"}`, {
        method: "POST",
      });
      setStreamLost(false);
      onChanged();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <article
      ref={tile}
      className="panel live-tile"
      data-testid="live-tile"
      data-source-id={source.id}
      data-state={status.state}
      aria-label={source.name}
    >
      <div className="live-tile-head">
        <h2 className="source-name">{source.name}</h2>
        <StateBadge state={status.state} />
      </div>
      <p className="live-status" data-testid="tile-status" aria-live="polite">
        {running
          ? `${status.fps.toFixed(1)} fps · ${status.faces} ${status.faces === 1 ? "face" : "faces"} · `
          : ""}
        {formatNumber(status.frames)} {status.frames === 1 ? "frame" : "frames"}
        {status.dropped > 0 && ` (${formatNumber(status.dropped)} skipped)`}
      </p>
      {error && <ErrorNotice message={error} />}
      {status.last_error && !running && (
        <p className="notice notice-warning">Last error: {status.last_error}</p>
      )}
      <div className={active ? "video-frame" : "video-frame video-frame-off"}>
        {active && !streamLost ? (
          <MjpegImage
            // A new connection whenever the source (re)starts or the viewer retries.
            key={`${source.id}:${status.started_at}:${attempt}`}
            src={`/api/v1/sources/${encodeURIComponent(source.id)}/mjpeg`}
            alt={`Live view of ${source.name}, faces boxed by mask label`}
            onLost={() => setStreamLost(true)}
          />
        ) : (
          <div className="video-placeholder">
            {active ? (
              <>
                <p>The video stream was interrupted.</p>
                <button
                  type="button"
                  className="button"
                  onClick={() => {
                    setStreamLost(false);
                    setAttempt((n) => n + 1);
                  }}
                >
                  Reconnect
                </button>
              </>
            ) : (
              <p>
                {source.name} is {status.state}.{" "}
                {isAdmin ? "Start it to watch." : "An admin can start it from here or the Sources page."}
              </p>
            )}
          </div>
        )}
      </div>
      <div className="actions">
        {isAdmin && (
          <button
            type="button"
            className={active ? "button button-small" : "button button-small button-primary"}
            onClick={toggle}
            disabled={busy}
          >
            {active ? "Stop" : "Start"}
            <span className="visually-hidden"> {source.name}</span>
          </button>
        )}
        <FullscreenButton target={() => tile.current} label={source.name} />
      </div>
    </article>
  );
}

/** An MJPEG <img> that closes its never-ending response when it leaves the page. */
function MjpegImage({ src, alt, onLost }: { src: string; alt: string; onLost(): void }) {
  const img = useRef<HTMLImageElement>(null);
  useEffect(() => {
    const element = img.current;
    if (!element) return;
    element.src = src;
    return () => element.removeAttribute("src");
  }, [src]);
  return <img ref={img} alt={alt} onError={onLost} />;
}
