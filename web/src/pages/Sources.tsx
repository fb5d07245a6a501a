import { type FormEvent, useState } from "react";
import { api, errorMessage, type Source, type SourceInput, type SourceKind } from "../api.ts";
import { StateBadge } from "../components/Badges.tsx";
import { EmptyState, ErrorNotice, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { Modal, useConfirm } from "../components/Modal.tsx";
import { ZoneEditor } from "../components/ZoneEditor.tsx";
import { formatNumber, formatTime } from "../format.ts";
import { useDocumentTitle, useFetch } from "../hooks.ts";
import { Link } from "../router.tsx";
import { useSession } from "../session.tsx";

const ACTIVE_STATES = new Set(["starting", "running", "reconnecting"]);

const KINDS: Record<SourceKind, { label: string; urlLabel?: string; placeholder?: string; help: string }> = {
  stream: {
    label: "Network stream",
    urlLabel: "Stream URL",
    placeholder: "rtsp://camera.local/stream",
    help: "An RTSP, HTTP(S), RTMP or SRT address the server can reach.",
  },
  device: {
    label: "Camera on the server",
    urlLabel: "Device",
    placeholder: "/dev/video0",
    help: "A V4L2 camera attached to the Maskwatch server.",
  },
  file: {
    label: "Video file",
    urlLabel: "File path",
    placeholder: "/srv/videos/entrance.mp4",
    help: "A video file on the server, played at its own speed.",
  },
  browser: {
    label: "Browser camera",
    help: "Frames come from a browser that opens the Live page.",
  },
};

export function SourcesPage() {
  useDocumentTitle("Sources");
  const { isAdmin } = useSession();
  const sources = useFetch<{ sources: Source[] }>("/api/v1/sources", 2000);
  const [confirmElement, confirm] = useConfirm();
  const [actionError, setActionError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [zonesOf, setZonesOf] = useState<string | null>(null);

  const act = async (source: Source, action: "start" | "stop" | "delete") => {
    if (
      action === "delete" &&
      !(await confirm({
        title: "Delete source",
        message: `Delete “${source.name}”? It stops now; its recorded events stay in the log.`,
        confirmLabel: "Delete source",
      }))
    )
      return;
    setBusy(source.id);
    setActionError(null);
    try {
      const path = `/api/v1/sources/${encodeURIComponent(source.id)}`;
      if (action === "delete") await api(path, { method: "DELETE" });
      else await api(`${path}/${action}`, { method: "POST" });
      sources.reload();
    } catch (err) {
      setActionError(`${source.name}: ${errorMessage(err)}`);
    } finally {
      setBusy(null);
    }
  };

  const list = sources.data?.sources ?? [];
  return (
    <>
      <PageHeader title="Sources" />
      {isAdmin && <AddSource onAdded={sources.reload} />}
      {actionError && <ErrorNotice message={actionError} />}
      {sources.error && <ErrorNotice message={sources.error} onRetry={sources.reload} />}
      {!sources.data ? (
        sources.loading && <Loading />
      ) : list.length === 0 ? (
        <EmptyState title="No sources yet.">
          {isAdmin
            ? "Add a camera stream, a server camera or a video file above, or start a camera on the Live page."
            : "An admin can add cameras here."}
        </EmptyState>
      ) : (
        <ul className="source-list" aria-label="Sources">
          {list.map((s) => {
            const active = ACTIVE_STATES.has(s.status.state);
            const running = s.status.state === "running";
            if (editing === s.id)
              return (
                <li key={s.id} className="panel source" data-testid="source-row">
                  <EditSource
                    source={s}
                    onDone={(changed) => {
                      setEditing(null);
                      if (changed) sources.reload();
                    }}
                  />
                </li>
              );
            return (
              <li key={s.id} className="panel source" data-testid="source-row">
                <div className="source-head">
                  <h2 className="source-name">{s.name}</h2>
                  <StateBadge state={s.status.state} />
                </div>
                <p className="muted source-meta">
                  {KINDS[s.kind]?.label ?? s.kind}
                  {s.url && (
                    <>
                      {" · "}
                      <code>{s.url}</code>
                    </>
                  )}
                  {s.options.fps !== undefined && ` · ${s.options.fps} fps`}
                  {s.options.loop && " · loops"}
                </p>
                <dl className="stats-row">
                  <div>
                    <dt>FPS</dt>
                    <dd>{running ? s.status.fps.toFixed(1) : "—"}</dd>
                  </div>
                  <div>
                    <dt>Faces</dt>
                    <dd>{running ? s.status.faces : "—"}</dd>
                  </div>
                  <div>
                    <dt>Frames</dt>
                    <dd>{formatNumber(s.status.frames)}</dd>
                  </div>
                  <div>
                    <dt>Events</dt>
                    <dd>{formatNumber(s.status.events)}</dd>
                  </div>
                  <div>
                    <dt>Last frame</dt>
                    <dd>{formatTime(s.status.last_frame_at)}</dd>
                  </div>
                </dl>
                {s.status.last_error && (
                  <p className="notice notice-warning">Last error: {s.status.last_error}</p>
                )}
                <div className="actions">
                  {s.kind !== "browser" && (
                    <Link className="button button-small" to={`/live?sources=${encodeURIComponent(s.id)}`}>
                      Watch
                    </Link>
                  )}
                  {isAdmin && (
                    <>
                      <button
                        type="button"
                        className="button button-small"
                        disabled={busy === s.id}
                        onClick={() => act(s, active ? "stop" : "start")}
                      >
                        {active ? "Stop" : "Start"}
                      </button>
                      {s.kind !== "browser" && (
                        <button
                          type="button"
                          className="button button-small"
                          disabled={busy === s.id}
                          onClick={() => setEditing(s.id)}
                        >
                          Edit<span className="visually-hidden"> {s.name}</span>
                        </button>
                      )}
                      <button type="button" className="button button-small" onClick={() => setZonesOf(s.id)}>
                        Zones<span className="visually-hidden"> of {s.name}</span>
                      </button>
                      <button
                        type="button"
                        className="button button-small button-danger-quiet"
                        disabled={busy === s.id}
                        onClick={() => act(s, "delete")}
                      >
                        Delete
                      </button>
                    </>
                  )}
                </div>
              </li>
            );
          })}
        </ul>
      )}
      {zonesOf && list.some((s) => s.id === zonesOf) && (
        <Modal
          open
          wide
          title={`Zones of ${list.find((s) => s.id === zonesOf)?.name}`}
          onClose={() => {
            setZonesOf(null);
            sources.reload();
          }}
        >
          <ZoneEditor source={list.find((s) => s.id === zonesOf) as Source} />
        </Modal>
      )}
      {confirmElement}
    </>
  );
}

function AddSource({ onAdded }: { onAdded(): void }) {
  const [name, setName] = useState("");
  const [kind, setKind] = useState<SourceKind>("stream");
  const [url, setUrl] = useState("");
  const [fps, setFps] = useState("");
  const [loop, setLoop] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [added, setAdded] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const spec = KINDS[kind];

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setAdded(null);
    const options: SourceInput["options"] = {};
    if (fps) options.fps = Number(fps);
    if (kind === "file") options.loop = loop;
    try {
      const created = await api<Source>("/api/v1/sources", {
        body: {
          name: name.trim(),
          kind,
          url: spec.urlLabel ? url.trim() : null,
          options,
        } satisfies SourceInput,
      });
      setAdded(`Added “${created.name}”. Start it when you are ready.`);
      setName("");
      setUrl("");
      setFps("");
      onAdded();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel add-panel" aria-labelledby="add-source-title">
      <h2 className="panel-title" id="add-source-title">
        Add a source
      </h2>
      <form className="form form-grid" onSubmit={submit}>
        <label className="field">
          <span>Name</span>
          <input value={name} required maxLength={100} onChange={(e) => setName(e.target.value)} />
        </label>
        <label className="field">
          <span>Kind</span>
          <select value={kind} onChange={(e) => setKind(e.target.value as SourceKind)}>
            {(Object.keys(KINDS) as SourceKind[]).map((k) => (
              <option key={k} value={k}>
                {KINDS[k].label}
              </option>
            ))}
          </select>
        </label>
        {spec.urlLabel && (
          <label className="field field-wide">
            <span>{spec.urlLabel}</span>
            <input
              value={url}
              required
              placeholder={spec.placeholder}
              spellCheck={false}
              onChange={(e) => setUrl(e.target.value)}
            />
          </label>
        )}
        {kind !== "browser" && (
          <label className="field">
            <span>Frames per second</span>
            <input
              type="number"
              min={0.1}
              max={60}
              step="any"
              placeholder="server default"
              value={fps}
              onChange={(e) => setFps(e.target.value)}
            />
          </label>
        )}
        {kind === "file" && (
          <label className="check">
            <input type="checkbox" checked={loop} onChange={(e) => setLoop(e.target.checked)} />
            Loop the file
          </label>
        )}
        <p className="muted field-wide">{spec.help}</p>
        {error && (
          <p className="notice notice-error field-wide" role="alert">
            {error}
          </p>
        )}
        {added && (
          <p className="notice notice-success field-wide" role="status">
            {added}
          </p>
        )}
        <div className="field-wide">
          <button type="submit" className="button button-primary" disabled={busy}>
            Add source
          </button>
        </div>
      </form>
    </section>
  );
}

/** A source's name, address, frame rate and looping, changed in place (a running source restarts). */
function EditSource({ source, onDone }: { source: Source; onDone(changed: boolean): void }) {
  const spec = KINDS[source.kind];
  const [name, setName] = useState(source.name);
  const [url, setUrl] = useState(source.url ?? "");
  const [fps, setFps] = useState(source.options.fps === undefined ? "" : String(source.options.fps));
  const [loop, setLoop] = useState(source.options.loop ?? false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    // The server replaces the options as a whole: keep the ones this form does not show.
    const { fps: _fps, loop: _loop, ...rest } = source.options;
    const options: SourceInput["options"] = { ...rest };
    if (fps) options.fps = Number(fps);
    if (source.kind === "file") options.loop = loop;
    try {
      await api<Source>(`/api/v1/sources/${encodeURIComponent(source.id)}`, {
        method: "PATCH",
        body: { name: name.trim(), ...(spec.urlLabel ? { url: url.trim() } : {}), options },
      });
      onDone(true);
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };

  return (
    <form className="form form-grid" onSubmit={submit} aria-label={`Edit ${source.name}`}>
      <h2 className="field-wide source-name">Edit “{source.name}”</h2>
      <label className="field">
        <span>Name</span>
        <input value={name} required maxLength={100} onChange={(e) => setName(e.target.value)} />
      </label>
      {spec.urlLabel && (
        <label className="field field-wide">
          <span>{spec.urlLabel}</span>
          <input
            value={url}
            required
            placeholder={spec.placeholder}
            spellCheck={false}
            onChange={(e) => setUrl(e.target.value)}
          />
        </label>
      )}
      <label className="field">
        <span>Frames per second</span>
        <input
          type="number"
          min={0.1}
          max={60}
          step="any"
          placeholder="server default"
          value={fps}
          onChange={(e) => setFps(e.target.value)}
        />
      </label>
      {source.kind === "file" && (
        <label className="check">
          <input type="checkbox" checked={loop} onChange={(e) => setLoop(e.target.checked)} />
          Loop the file
        </label>
      )}
      {ACTIVE_STATES.has(source.status.state) && (
        <p className="muted field-wide">Saving restarts the source with the new settings.</p>
      )}
      {error && (
        <p className="notice notice-error field-wide" role="alert">
          {error}
        </p>
      )}
      <div className="field-wide actions">
        <button type="submit" className="button button-primary" disabled={busy}>
          Save changes
        </button>
        <button type="button" className="button" onClick={() => onDone(false)} disabled={busy}>
          Cancel
        </button>
      </div>
    </form>
  );
}
