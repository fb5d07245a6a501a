import { useEffect, useRef, useState } from "react";
import { api, errorMessage, type LiveTrack, type Source } from "../api.ts";
import { type CameraAnswer, CameraSession } from "../camera.ts";
import { StateBadge } from "../components/Badges.tsx";
import { EmptyState, ErrorNotice, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { formatNumber, LABEL_TEXT, labelColor } from "../format.ts";
import { useDocumentTitle, useFetch } from "../hooks.ts";
import { useSearchParam } from "../router.tsx";
import { useSession } from "../session.tsx";

const BROWSER = "browser";
/** Each user's camera is a source of its own: two cameras must never feed one tracker. */
const browserSourceName = (username: string | undefined) =>
  username ? `Browser camera (${username})` : "Browser camera";
const ACTIVE_STATES = new Set(["starting", "running", "reconnecting"]);

export function LivePage() {
  useDocumentTitle("Live");
  const { isAdmin, user } = useSession();
  const [choice, setChoice] = useSearchParam("source");
  const sources = useFetch<{ sources: Source[] }>("/api/v1/sources", 2000);
  const serverSources = sources.data?.sources.filter((s) => s.kind !== "browser") ?? [];
  const selected = choice ?? BROWSER;
  const source = serverSources.find((s) => s.id === selected);

  return (
    <>
      <PageHeader title="Live">
        <label className="inline-field">
          <span>Camera</span>
          <select
            value={selected}
            onChange={(e) => setChoice(e.target.value === BROWSER ? null : e.target.value)}
          >
            <option value={BROWSER}>This browser's camera</option>
            {serverSources.length > 0 && (
              <optgroup label="Server sources">
                {serverSources.map((s) => (
                  <option key={s.id} value={s.id}>
                    {s.name}
                  </option>
                ))}
              </optgroup>
            )}
            {selected !== BROWSER && !source && <option value={selected}>{selected}</option>}
          </select>
        </label>
      </PageHeader>
      {selected === BROWSER ? (
        <BrowserCamera sourceName={browserSourceName(user?.username)} />
      ) : source ? (
        <ServerSourceView source={source} isAdmin={isAdmin} onChanged={sources.reload} />
      ) : sources.error ? (
        <ErrorNotice message={sources.error} onRetry={sources.reload} />
      ) : sources.data ? (
        <EmptyState title={`There is no source "${selected}".`}>It may have been deleted.</EmptyState>
      ) : (
        <Loading />
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
  const session = useRef<CameraSession | null>(null);
  const answerTimes = useRef<number[]>([]);
  const [phase, setPhase] = useState<"off" | "starting" | "on">("off");
  const [error, setError] = useState<string | null>(null);
  const [frameError, setFrameError] = useState<string | null>(null);
  const [stats, setStats] = useState<CameraStats>({ frames: 0, tracks: 0, fps: 0 });

  useEffect(() => () => session.current?.stop(), []);

  const onAnswer = (answer: CameraAnswer) => {
    const now = performance.now();
    const times = answerTimes.current.filter((t) => now - t < 2000);
    times.push(now);
    answerTimes.current = times;
    const fps = times.length > 1 ? ((times.length - 1) * 1000) / (now - times[0]) : 0;
    setStats((s) => ({ frames: s.frames + 1, tracks: answer.tracks.length, fps }));
    setFrameError(null);
    if (overlay.current) drawTracks(overlay.current, answer);
  };

  const start = async () => {
    if (!video.current) return;
    setPhase("starting");
    setError(null);
    setFrameError(null);
    setStats({ frames: 0, tracks: 0, fps: 0 });
    answerTimes.current = [];
    const camera = new CameraSession(video.current, {
      answer: onAnswer,
      frameError: setFrameError,
      ended: (message) => {
        session.current = null;
        setPhase("off");
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
      <div className={phase === "off" ? "video-frame video-frame-off" : "video-frame"}>
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
    </section>
  );
}

/** Boxes coloured by label with "#id label 93%", in the coordinates of the frame that was sent. */
function drawTracks(canvas: HTMLCanvasElement, answer: CameraAnswer) {
  if (canvas.width !== answer.width || canvas.height !== answer.height) {
    canvas.width = answer.width;
    canvas.height = answer.height;
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const line = Math.max(2, Math.round(canvas.width / 240));
  const font = Math.max(12, Math.round(canvas.width / 40));
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const track of answer.tracks) drawTrack(ctx, track, line, font);
}

function drawTrack(ctx: CanvasRenderingContext2D, track: LiveTrack, line: number, font: number) {
  const [x1, y1, x2, y2] = track.box;
  const color = labelColor(track.label);
  ctx.strokeStyle = color;
  ctx.lineWidth = line;
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  const text = track.label
    ? `#${track.id} ${LABEL_TEXT[track.label]} ${Math.round(track.confidence * 100)}%`
    : `#${track.id}`;
  const width = ctx.measureText(text).width + 8;
  const height = font + 6;
  const top = y1 - height >= 0 ? y1 - height : y1;
  const left = Math.max(0, Math.min(x1 - line / 2, ctx.canvas.width - width));
  ctx.fillStyle = color;
  ctx.fillRect(left, top, width, height);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, left + 4, top + 3);
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

function ServerSourceView({
  source,
  isAdmin,
  onChanged,
}: {
  source: Source;
  isAdmin: boolean;
  onChanged(): void;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);
  const [streamLost, setStreamLost] = useState(false);
  const { status } = source;
  const active = ACTIVE_STATES.has(status.state);

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
    <section className="live">
      <div className="toolbar">
        {isAdmin && (
          <button
            type="button"
            className={active ? "button" : "button button-primary"}
            onClick={toggle}
            disabled={busy}
          >
            {active ? "Stop" : "Start"}
          </button>
        )}
        <p className="live-status" data-testid="live-fps" aria-live="polite">
          <StateBadge state={status.state} /> {status.fps.toFixed(1)} fps · {status.faces}{" "}
          {status.faces === 1 ? "face" : "faces"} · {formatNumber(status.frames)} frames
          {status.dropped > 0 && ` (${formatNumber(status.dropped)} skipped)`}
        </p>
      </div>
      {error && <ErrorNotice message={error} />}
      {status.last_error && <p className="notice notice-warning">Last error: {status.last_error}</p>}
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
      <Legend />
    </section>
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
