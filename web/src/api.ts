/**
 * The one way the console talks to the server: same-origin fetch with the session cookie, the
 * CSRF token on every state-changing request, and error bodies turned into ApiError.
 */

export type Role = "admin" | "viewer";
export type MaskLabel = "mask" | "no_mask" | "incorrect";
export type Box = [number, number, number, number];

export interface User {
  id: string;
  username: string;
  role: Role;
}

export interface SessionInfo {
  auth: boolean;
  user: User | null;
  csrf_token: string | null;
}

export interface SignedIn {
  user: User;
  csrf_token: string;
}

export interface UserRecord extends User {
  created_at: string | number | null;
  last_login_at: string | number | null;
}

export interface Settings {
  stream_detector: string;
  detection_threshold: number | null;
  mask_threshold: number | null;
  min_face_size: number | null;
  smoothing_frames: number;
  cooldown_seconds: number;
  snapshots: boolean;
  blur_snapshots: boolean;
  blur_others: boolean;
  retention_days: number;
}

export type SourceKind = "browser" | "device" | "stream" | "file";
export type SourceState = "stopped" | "starting" | "running" | "reconnecting" | "ended";

export interface SourceStatus {
  state: SourceState;
  fps: number;
  frames: number;
  dropped: number;
  faces: number;
  events: number;
  latency_ms: number | null;
  last_error: string | null;
  last_frame_at: string | null;
  started_at: string | null;
}

export interface Source {
  id: string;
  name: string;
  kind: SourceKind;
  url: string | null;
  options: { fps?: number; width?: number; loop?: boolean; realtime?: boolean };
  enabled: boolean;
  /** Who added it (`user:<id>` or an API key's id). */
  owner: string | null;
  /** Whether the signed-in user added it (their browser camera). */
  mine: boolean;
  created_at: string | null;
  updated_at: string | null;
  status: SourceStatus;
}

export interface SourceInput {
  name: string;
  kind: SourceKind;
  url?: string | null;
  options?: Source["options"];
}

export interface EventItem {
  id: number;
  time: string;
  source_id: string;
  track_id: number;
  kind: "violation" | "observation";
  label: MaskLabel;
  confidence: number;
  box: Box;
  /** The source's zone it happened in (null: the source has no zones). */
  zone?: string | null;
  snapshot_url: string | null;
  /** When and by whom it was acknowledged (null: not yet; absent from older servers). */
  acknowledged_at?: string | null;
  acknowledged_by?: string | null;
  /** Whether the whole frame is stored (GET /api/v1/events/:id/frame). */
  has_frame?: boolean;
}

export interface EventsPage {
  events: EventItem[];
  next_cursor: string | null;
}

export interface StatsCounts {
  events: number;
  violations: number;
  observations: number;
  mask: number;
  no_mask: number;
  incorrect: number;
  compliance_rate: number | null;
}

export interface Stats {
  bucket: "hour" | "day";
  source: string | null;
  totals: StatsCounts;
  buckets: (StatsCounts & { start: string })[];
}

/** The old app's /get_stats (the default source since the last reset). */
export interface CompatStats {
  total_detections: number;
  mask_count: number;
  no_mask_count: number;
  incorrect_count?: number;
  current_status: string;
  activity: { time: string; message: string; type: string }[];
}

/** A source's status as the live feed sends it (the monitor's own camelCase fields). */
export interface LiveStatus {
  id: string;
  state: SourceState;
  fps: number;
  faces: number;
  lastError: string | null;
}

export interface LiveTrack {
  id: number;
  box: Box;
  label: MaskLabel | null;
  confidence: number;
}

export interface DetectorInfo {
  id: string;
  description: string;
  models: string[];
  /** false: an optional detector whose models are not on the server yet (absent: assume installed). */
  installed?: boolean;
}

export interface ModelInfo {
  id: string;
  version?: string;
  description?: string;
  installed?: boolean;
}

export interface ModelsInfo {
  default_detector: string;
  detectors: DetectorInfo[];
  models?: ModelInfo[];
}

/** POST /api/v1/models/pull's answer. */
export interface PullAnswer {
  detector: string;
  installed: boolean;
  models: { id: string; status: string }[];
}

export interface Face {
  box: Box;
  score: number;
  landmarks?: Record<string, [number, number]>;
  label?: string;
  mask?: { label: MaskLabel; score: number; scores: Record<MaskLabel, number> };
}

export interface DetectResult {
  width: number;
  height: number;
  detector: string;
  models: { id: string; version: string }[];
  faces: Face[];
  timings_ms: Record<string, number>;
}

/** API keys as the server lists them (never the key itself). */
export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  scopes: ("detect" | "events:read" | "admin")[];
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

export interface CreatedApiKey extends ApiKey {
  key: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

let csrfToken: string | null = null;
let notLoggedInHandler: (() => void) | null = null;

export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

/** Called when a request answers 401 because the session ended or expired. */
export function onNotLoggedIn(handler: (() => void) | null): void {
  notLoggedInHandler = handler;
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

export interface RequestOptions {
  method?: string;
  /** JSON-encoded, except a Blob/File, which is sent raw with its own content type. */
  body?: unknown;
  signal?: AbortSignal;
}

export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const method = options.method ?? (options.body === undefined ? "GET" : "POST");
  const headers: Record<string, string> = { Accept: "application/json" };
  let body: BodyInit | undefined;
  if (options.body instanceof Blob) {
    body = options.body;
    headers["Content-Type"] = options.body.type || "application/octet-stream";
  } else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["Content-Type"] = "application/json";
  }
  if (!SAFE_METHODS.has(method) && csrfToken) headers["X-CSRF-Token"] = csrfToken;

  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body,
      credentials: "same-origin",
      signal: options.signal,
    });
  } catch (err) {
    if (options.signal?.aborted) throw err;
    throw new ApiError(0, "network_error", "Cannot reach the Maskwatch server. Check that it is running.");
  }

  const isJson = response.headers.get("content-type")?.includes("application/json") ?? false;
  const data: unknown = isJson ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const err = data as { code?: string; message?: string } | null;
    const code = err?.code ?? `http_${response.status}`;
    // Any 401 but a failed sign-in means the session is gone (expired, ended elsewhere, user removed).
    if (response.status === 401 && code !== "invalid_credentials") notLoggedInHandler?.();
    throw new ApiError(response.status, code, err?.message ?? `${response.status} ${response.statusText}`);
  }
  return data as T;
}

/** A query string of the given parameters, leaving out empty ones ("" when none are left). */
export function query(params: Record<string, string | number | boolean | null | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const s = search.toString();
  return s ? `?${s}` : "";
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
