import { type DragEvent, useEffect, useId, useMemo, useRef, useState } from "react";
import {
  api,
  type DetectResult,
  errorMessage,
  isAbort,
  type MaskLabel,
  type ModelsInfo,
  query,
} from "../api.ts";
import { DetectorMissing, DetectorOptions, isInstalled } from "../components/Detectors.tsx";
import { ErrorNotice } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { displayScale, drawAnnotations, type Rect } from "../draw.ts";
import { LABEL_TEXT, labelColor, percent } from "../format.ts";
import { useDebounced, useDocumentTitle, useFetch } from "../hooks.ts";
import { useSession } from "../session.tsx";

/** Detection parameters; null means "the server's default". */
interface Controls {
  detector: string;
  minFaceSize: number | null;
  threshold: number | null;
  pnet: number | null;
  rnet: number | null;
  onet: number | null;
  mask: boolean;
  maskThreshold: number | null;
}

const INITIAL: Controls = {
  detector: "",
  minFaceSize: null,
  threshold: null,
  pnet: null,
  rnet: null,
  onet: null,
  mask: true,
  maskThreshold: null,
};

/** Box colour when masks are not checked. */
const FACE_COLOR = "#2563eb";

function detectQuery(c: Controls): string {
  const mtcnn = c.detector === "mtcnn";
  return query({
    detector: c.detector,
    min_face_size: c.minFaceSize,
    threshold: mtcnn ? null : c.threshold,
    threshold_pnet: mtcnn ? c.pnet : null,
    threshold_rnet: mtcnn ? c.rnet : null,
    threshold_onet: mtcnn ? c.onet : null,
    mask: c.mask,
    mask_threshold: c.mask ? c.maskThreshold : null,
  });
}

interface Picture {
  file: File;
  /**
   * The file's bytes in memory: sent as a disk-backed File, Chromium's devtools (and so the
   * browser tests) lose the answer's body.
   */
  bytes: Blob;
  bitmap: ImageBitmap;
}

export function UploadPage() {
  useDocumentTitle("Upload");
  const { isAdmin } = useSession();
  const models = useFetch<ModelsInfo>("/api/v1/models");
  const [controls, setControls] = useState<Controls>(INITIAL);
  const [picture, setPicture] = useState<Picture | null>(null);
  const [answer, setAnswer] = useState<{ picture: Picture; result: DetectResult } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [running, setRunning] = useState(false);
  const [dragging, setDragging] = useState(false);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [labels, setLabels] = useState<Rect[]>([]);
  const [shownWidth, setShownWidth] = useState(0);

  const detector = controls.detector || models.data?.default_detector || "";
  // A detector the server lacks would only answer 503: offer to install it instead.
  const usable = isInstalled(models.data?.detectors.find((d) => d.id === detector));
  // Moving a slider waits for it to rest; the default detector becoming known does not.
  const settled = useDebounced(controls, 300);
  const params = detectQuery({ ...settled, detector: settled.detector || detector });
  const set = (patch: Partial<Controls>) => setControls((c) => ({ ...c, ...patch }));

  const choose = async (file: File | undefined) => {
    if (!file) return;
    if (!file.type.startsWith("image/")) {
      setError(`${file.name} is not an image. Choose a JPEG, PNG or WebP file.`);
      return;
    }
    try {
      // An ImageBitmap needs no object URL, which the server's Content-Security-Policy would block.
      const bitmap = await createImageBitmap(file);
      const bytes = new Blob([await file.arrayBuffer()], { type: file.type });
      setPicture((old) => {
        old?.bitmap.close();
        return { file, bytes, bitmap };
      });
      setError(null);
    } catch {
      setError(`${file.name} could not be read as an image.`);
    }
  };

  useEffect(() => {
    if (!picture || !detector || !usable) return;
    const controller = new AbortController();
    setRunning(true);
    api<DetectResult>(`/api/v1/detect${params}`, { body: picture.bytes, signal: controller.signal })
      .then((result) => {
        setAnswer({ picture, result });
        setError(null);
      })
      .catch((err) => {
        if (!isAbort(err)) setError(errorMessage(err));
      })
      .finally(() => {
        if (!controller.signal.aborted) setRunning(false);
      });
    return () => controller.abort();
  }, [picture, params, detector, usable]);

  const result = answer && answer.picture === picture ? answer.result : null;
  const facesDrawn = result?.faces.length ?? 0;

  // Captions are sized for the size the picture is shown at: redrawn when that changes.
  useEffect(() => {
    const element = canvas.current;
    if (!element) return;
    const observer = new ResizeObserver(() => setShownWidth(Math.round(element.clientWidth / 8) * 8));
    observer.observe(element);
    return () => observer.disconnect();
  }, []);

  // biome-ignore lint/correctness/useExhaustiveDependencies: shownWidth is the redraw trigger
  useEffect(() => {
    if (canvas.current && picture) setLabels(drawResult(canvas.current, picture.bitmap, result));
  }, [picture, result, shownWidth]);

  const download = () => {
    const element = canvas.current;
    if (!element || !picture) return;
    element.toBlob((blob) => {
      if (!blob) return;
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = `${picture.file.name.replace(/\.[^.]+$/, "")}-faces.png`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    }, "image/png");
  };

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    setDragging(false);
    choose(e.dataTransfer.files[0]);
  };

  const totalMs = result ? Object.values(result.timings_ms).reduce((a, b) => a + b, 0) : 0;
  const counts = result ? countLabels(result) : [];
  const json = useMemo(() => (result ? JSON.stringify(result, null, 2) : ""), [result]);

  return (
    <>
      <PageHeader title="Upload an image">
        <button type="button" className="button" onClick={download} disabled={!result}>
          Download annotated image
        </button>
      </PageHeader>
      <div className="upload-grid">
        <section className="panel upload-controls" aria-label="Image and detection settings">
          <label
            className={dragging ? "dropzone dropzone-active" : "dropzone"}
            onDragOver={(e) => {
              e.preventDefault();
              setDragging(true);
            }}
            onDragLeave={() => setDragging(false)}
            onDrop={onDrop}
          >
            <input
              type="file"
              accept="image/*"
              className="visually-hidden"
              onChange={(e) => {
                choose(e.target.files?.[0]);
                e.target.value = ""; // the same file chosen again still counts as a change
              }}
            />
            <span className="dropzone-title">Drop an image here</span>
            <span className="button button-small">Choose a file</span>
            {picture && <span className="muted dropzone-file">{picture.file.name}</span>}
          </label>

          <label className="field">
            <span>Detector</span>
            <select
              value={detector}
              disabled={!models.data}
              onChange={(e) => set({ detector: e.target.value, threshold: null })}
            >
              <DetectorOptions detectors={models.data?.detectors ?? []} />
            </select>
          </label>
          <DetectorMissing models={models} detector={detector} isAdmin={isAdmin} />
          {models.error && <ErrorNotice message={`Detectors: ${models.error}`} onRetry={models.reload} />}

          <Slider
            label="Min face size"
            unit="px"
            min={8}
            max={300}
            step={1}
            fallback={20}
            value={controls.minFaceSize}
            onChange={(minFaceSize) => set({ minFaceSize })}
          />
          {detector === "mtcnn" ? (
            <>
              <Slider
                label="P-Net threshold"
                fallback={0.6}
                value={controls.pnet}
                onChange={(pnet) => set({ pnet })}
              />
              <Slider
                label="R-Net threshold"
                fallback={0.7}
                value={controls.rnet}
                onChange={(rnet) => set({ rnet })}
              />
              <Slider
                label="O-Net threshold"
                fallback={0.7}
                value={controls.onet}
                onChange={(onet) => set({ onet })}
              />
            </>
          ) : (
            <Slider
              label="Score threshold"
              fallback={0.5}
              value={controls.threshold}
              onChange={(threshold) => set({ threshold })}
            />
          )}
          <label className="check">
            <input
              type="checkbox"
              checked={controls.mask}
              onChange={(e) => set({ mask: e.target.checked })}
            />
            Check masks
          </label>
          {controls.mask && (
            <Slider
              label="Mask threshold"
              fallback={0.5}
              value={controls.maskThreshold}
              onChange={(maskThreshold) => set({ maskThreshold })}
            />
          )}
        </section>

        <section className="panel upload-image" aria-label="Result">
          {error && <ErrorNotice message={error} />}
          <p className="muted" aria-live="polite">
            {!picture
              ? "Choose or drop an image to find its faces."
              : !usable
                ? `${detector} is not installed: choose another detector.`
                : running
                  ? "Detecting…"
                  : result
                    ? `${result.faces.length} ${result.faces.length === 1 ? "face" : "faces"} · ${result.detector} · ${Math.round(totalMs)} ms`
                    : ""}
          </p>
          {counts.length > 0 && (
            <ul className="label-counts" data-testid="upload-counts" aria-label="Faces per label">
              {counts.map((c) => (
                <li key={c.key} data-label={c.key} data-count={c.count}>
                  <span className="swatch" style={{ background: c.color }} />
                  {c.text}: <strong>{c.count}</strong>
                </li>
              ))}
            </ul>
          )}
          <canvas
            ref={canvas}
            className={picture ? "upload-canvas" : "upload-canvas upload-canvas-empty"}
            data-testid="upload-canvas"
            data-faces={facesDrawn}
            data-labels={JSON.stringify(labels.map((r) => [r.x, r.y, r.w, r.h].map(Math.round)))}
            role="img"
            aria-label={
              picture ? `${picture.file.name} with ${facesDrawn} faces marked` : "No image chosen yet"
            }
          />
        </section>

        <section className="panel upload-json" aria-label="JSON answer">
          <h2 className="panel-title">Answer</h2>
          {result ? (
            <pre data-testid="upload-json">{json}</pre>
          ) : (
            <p className="muted">The server's JSON answer appears here.</p>
          )}
        </section>
      </div>
    </>
  );
}

interface SliderProps {
  label: string;
  value: number | null;
  /** Where the thumb rests while the server's default applies. */
  fallback: number;
  onChange(value: number | null): void;
  min?: number;
  max?: number;
  step?: number;
  unit?: string;
}

/** A range input whose value may be "default" (null) until it is moved; Reset goes back. */
function Slider({ label, value, fallback, onChange, min = 0, max = 1, step = 0.01, unit = "" }: SliderProps) {
  const id = useId();
  const digits = step < 1 ? 2 : 0;
  return (
    <div className="slider">
      <label htmlFor={id}>{label}</label>
      <output htmlFor={id}>{value === null ? "default" : `${value.toFixed(digits)}${unit}`}</output>
      <input
        id={id}
        type="range"
        min={min}
        max={max}
        step={step}
        value={value ?? fallback}
        onChange={(e) => onChange(Number(e.target.value))}
      />
      {value !== null && (
        <button type="button" className="link-button" onClick={() => onChange(null)}>
          Reset
          <span className="visually-hidden"> {label}</span>
        </button>
      )}
    </div>
  );
}

/** Faces per label, in a fixed order, the labels present only. */
function countLabels(result: DetectResult): { key: string; text: string; color: string; count: number }[] {
  const order: (MaskLabel | "face")[] = ["mask", "incorrect", "no_mask", "face"];
  const counts = new Map<string, number>();
  for (const face of result.faces) {
    const key = face.mask?.label ?? "face";
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return order
    .filter((key) => counts.has(key))
    .map((key) => ({
      key,
      text: key === "face" ? "Faces (masks not checked)" : LABEL_TEXT[key],
      color: key === "face" ? FACE_COLOR : labelColor(key),
      count: counts.get(key) ?? 0,
    }));
}

/**
 * The image with each face's box, landmarks and "Mask 93% · 0.99" on a filled band, sized for the
 * size the canvas is shown at; returns where the captions went (image pixels).
 */
function drawResult(canvas: HTMLCanvasElement, bitmap: ImageBitmap, result: DetectResult | null): Rect[] {
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return [];
  ctx.drawImage(bitmap, 0, 0);
  if (!result) return [];
  return drawAnnotations(
    ctx,
    canvas.width,
    canvas.height,
    result.faces.map((face) => ({
      box: face.box,
      color: face.mask ? labelColor(face.mask.label) : FACE_COLOR,
      text: face.mask
        ? `${LABEL_TEXT[face.mask.label]} ${percent(face.mask.score)} · ${face.score.toFixed(2)}`
        : face.score.toFixed(2),
      points: Object.values(face.landmarks ?? {}),
    })),
    displayScale(canvas),
  );
}
