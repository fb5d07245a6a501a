/**
 * A source's zones drawn over its picture: click to place a polygon's corners, name it, save. With
 * any zone active, only faces whose centre is inside one count. Coordinates are fractions (0–1) of
 * the frame, so zones hold whatever size the frames are scaled to.
 */
import { type FormEvent, type PointerEvent, useRef, useState } from "react";
import { api, errorMessage, type Source } from "../api.ts";
import { useFetch } from "../hooks.ts";
import { ErrorNotice, Loading } from "./Feedback.tsx";

type Point = [number, number];

interface Zone {
  id: string;
  name: string;
  polygon: Point[];
  active: boolean;
}

const COLORS = ["#0f766e", "#7c3aed", "#c2410c", "#0369a1", "#be123c", "#4d7c0f"];

export function ZoneEditor({ source }: { source: Source }) {
  const base = `/api/v1/sources/${encodeURIComponent(source.id)}/zones`;
  const zones = useFetch<{ zones: Zone[] }>(base);
  const [points, setPoints] = useState<Point[]>([]);
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [imageFailed, setImageFailed] = useState(false);
  const area = useRef<SVGSVGElement>(null);
  const running = source.status.state === "running";

  const place = (e: PointerEvent<SVGSVGElement>) => {
    const r = area.current?.getBoundingClientRect();
    if (!r) return;
    const x = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, (e.clientY - r.top) / r.height));
    setPoints((p) => (p.length >= 64 ? p : [...p, [round(x), round(y)]]));
  };

  const act = async (fn: () => Promise<unknown>) => {
    setError(null);
    try {
      await fn();
      zones.reload();
      return true;
    } catch (err) {
      setError(errorMessage(err));
      return false;
    }
  };

  const save = async (e: FormEvent) => {
    e.preventDefault();
    if (points.length < 3) return setError("Click at least three corners on the picture.");
    if (await act(() => api(base, { body: { name: name.trim(), polygon: points } }))) {
      setPoints([]);
      setName("");
    }
  };

  const list = zones.data?.zones ?? [];
  return (
    <div className="zone-editor">
      <p className="muted">
        Click the picture to place a zone's corners, name it and save. With any zone active, only faces whose
        centre is inside one are counted, and each event records its zone.
      </p>
      <div className="zone-canvas">
        {running && !imageFailed ? (
          <img
            src={`/api/v1/sources/${encodeURIComponent(source.id)}/mjpeg`}
            alt={`Live view of ${source.name}`}
            className="zone-video"
            onError={() => setImageFailed(true)}
          />
        ) : (
          <div className="zone-placeholder">Start the source to draw over its picture</div>
        )}
        <svg
          ref={area}
          viewBox="0 0 1 1"
          preserveAspectRatio="none"
          onPointerDown={place}
          data-testid="zone-area"
          role="img"
          aria-label="Zones; click to add a corner"
        >
          {list.map((z, i) => (
            <polygon
              key={z.id}
              points={z.polygon.map((p) => p.join(",")).join(" ")}
              fill={COLORS[i % COLORS.length]}
              fillOpacity={z.active ? 0.25 : 0.08}
              stroke={COLORS[i % COLORS.length]}
              strokeWidth={0.004}
              strokeDasharray={z.active ? undefined : "0.015 0.01"}
              data-testid="zone-shape"
            />
          ))}
          {points.length > 0 && (
            <polygon
              points={points.map((p) => p.join(",")).join(" ")}
              fill="#f59e0b"
              fillOpacity={0.2}
              stroke="#f59e0b"
              strokeWidth={0.005}
            />
          )}
          {points.map(([x, y]) => (
            <circle key={`${x},${y}`} cx={x} cy={y} r={0.008} fill="#f59e0b" />
          ))}
        </svg>
      </div>
      <form className="form zone-form" onSubmit={save} aria-label="New zone">
        <label className="field">
          <span>Zone name</span>
          <input
            value={name}
            required
            maxLength={100}
            placeholder="e.g. entrance"
            onChange={(e) => setName(e.target.value)}
          />
        </label>
        <span className="muted" data-testid="zone-corners">
          {points.length} corner{points.length === 1 ? "" : "s"}
        </span>
        <button type="submit" className="button button-primary">
          Save zone
        </button>
        <button type="button" className="button" onClick={() => setPoints([])} disabled={!points.length}>
          Clear corners
        </button>
      </form>
      {error && <ErrorNotice message={error} />}
      {zones.error && <ErrorNotice message={zones.error} onRetry={zones.reload} />}
      {!zones.data ? (
        zones.loading && <Loading />
      ) : list.length === 0 ? (
        <p className="muted">No zones: every face in the picture counts.</p>
      ) : (
        <ul className="zone-list">
          {list.map((z, i) => (
            <li key={z.id} data-testid="zone-row">
              <span className="zone-swatch" style={{ background: COLORS[i % COLORS.length] }} />
              <strong>{z.name}</strong>
              <span className="muted">{z.active ? "active" : "off"}</span>
              <button
                type="button"
                className="button button-small"
                onClick={() =>
                  act(() => api(`${base}/${z.id}`, { method: "PATCH", body: { active: !z.active } }))
                }
              >
                {z.active ? "Turn off" : "Turn on"}
              </button>
              <button
                type="button"
                className="button button-small button-danger-quiet"
                onClick={() => act(() => api(`${base}/${z.id}`, { method: "DELETE" }))}
              >
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

const round = (v: number) => Math.round(v * 1000) / 1000;
