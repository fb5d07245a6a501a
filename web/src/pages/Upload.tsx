import { type DragEvent, useEffect, useId, useMemo, useRef, useState } from "react";
import { api, type DetectResult, errorMessage, isAbort, type ModelsInfo, query } from "../api.ts";
import { ErrorNotice } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { LABEL_TEXT, labelColor, percent } from "../format.ts";
import { useDebounced, useDocumentTitle, useFetch } from "../hooks.ts";

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
  const models = useFetch<ModelsInfo>("/api/v1/models");
  const [controls, setControls] = useState<Controls>(INITIAL);
  const [picture, setPicture] = useState<Picture | null>(null);
  const [answer, setAnswer] = useState<{ picture: Picture; result: DetectResult } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [running, setRunning] = useState(false);
  const [dragging, setDragging] = useState(false);
  const canvas = useRef<HTMLCanvasElement>(null);

  const detector = controls.detector || models.data?.default_detector || "";
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
    if (!picture || !detector) return;
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
  }, [picture, params, detector]);

  const result = answer && answer.picture === picture ? answer.result : null;
  const facesDrawn = result?.faces.length ?? 0;

  useEffect(() => {
    if (canvas.current && picture) drawResult(canvas.current, picture.bitmap, result);
  }, [picture, result]);

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
              {models.data?.detectors.map((d) => (
                <option key={d.id} value={d.id} title={d.description}>
                  {d.id}
                </option>
              ))}
            </select>
          </label>
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
              : running
                ? "Detecting…"
                : result
                  ? `${result.faces.length} ${result.faces.length === 1 ? "face" : "faces"} · ${result.detector} · ${Math.round(totalMs)} ms`
                  : ""}
          </p>
          <canvas
            ref={canvas}
            className={picture ? "upload-canvas" : "upload-canvas upload-canvas-empty"}
            data-testid="upload-canvas"
            data-faces={facesDrawn}
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

/** The image with each face's box, landmarks and "score · mask label", scaled to the image size. */
function drawResult(canvas: HTMLCanvasElement, bitmap: ImageBitmap, result: DetectResult | null) {
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.drawImage(bitmap, 0, 0);
  if (!result) return;
  const side = Math.max(bitmap.width, bitmap.height);
  const line = Math.max(2, Math.round(side / 250));
  const font = Math.max(13, Math.round(side / 36));
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const face of result.faces) {
    const [x1, y1, x2, y2] = face.box;
    const color = face.mask ? labelColor(face.mask.label) : FACE_COLOR;
    ctx.strokeStyle = color;
    ctx.lineWidth = line;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = color;
    for (const [x, y] of Object.values(face.landmarks ?? {})) {
      ctx.beginPath();
      ctx.arc(x, y, line * 1.2, 0, Math.PI * 2);
      ctx.fill();
    }
    const text = face.mask
      ? `${LABEL_TEXT[face.mask.label]} ${percent(face.mask.score)} · ${face.score.toFixed(2)}`
      : face.score.toFixed(2);
    const width = ctx.measureText(text).width + 8;
    const height = font + 6;
    const top = y1 - height >= 0 ? y1 - height : y2;
    const left = Math.max(0, Math.min(x1 - line / 2, canvas.width - width));
    ctx.fillRect(left, top, width, height);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, left + 4, top + 3);
  }
}
