/**
 * Every source the server watches: their records (store), their monitors (frame loops), start
 * and stop, and the default source the old app's endpoints drive. A source that fails reports
 * it in its status; it never throws into the server.
 */
import { existsSync } from "node:fs";
import type { Database } from "../store/db.ts";
import { eventTotals, listEvents } from "../store/events.ts";
import { getSetting, setSetting } from "../store/settings.ts";
import {
  createSource,
  deleteSource,
  getSource,
  listSources,
  type SourceKind,
  type SourceRecord,
  updateSource,
  upsertSource,
} from "../store/sources.ts";
import {
  type Analyze,
  createBus,
  type MonitorSettings,
  SourceMonitor,
  type SourceStatus,
} from "./monitor.ts";

export const DEFAULT_SOURCE_ID = "default";
const STATS_RESET_KEY = "stats_reset_at";

/** The old app's /get_stats answer. */
export interface CompatStats {
  total_detections: number;
  mask_count: number;
  no_mask_count: number;
  incorrect_count: number;
  current_status: string;
  activity: { time: string; message: string; type: "violation" | "info" }[];
}

const LABEL_WORDS = { mask: "mask on", no_mask: "no mask", incorrect: "mask worn incorrectly" } as const;
export const SOURCE_KINDS: readonly SourceKind[] = ["browser", "device", "stream", "file"];

export type StreamErrorCode = "invalid_source" | "source_not_found" | "no_default_source";

export class StreamError extends Error {
  override name = "StreamError";
  constructor(
    readonly code: StreamErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface SourceInput {
  id?: string;
  name?: string;
  kind?: SourceKind;
  url?: string | null;
  options?: Record<string, unknown>;
}

export interface SourceView extends SourceRecord {
  status: SourceStatus;
}

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface StreamManagerOptions {
  db: Database;
  analyze: Analyze;
  settings: MonitorSettings;
  /** MASKWATCH_SOURCE: a device, stream URL, file path, or "browser", for the default source. */
  defaultSource?: string;
  log?: Logger;
}

/** What MASKWATCH_SOURCE means: /dev/video0 (or 0 as OpenCV numbers cameras), rtsp/http URLs, browser, or a file. */
export function parseSourceSpec(spec: string): { kind: SourceKind; url: string | null } {
  const s = spec.trim();
  if (/^\d+$/.test(s)) return { kind: "device", url: `/dev/video${s}` };
  if (s.startsWith("/dev/")) return { kind: "device", url: s };
  if (/^(rtsps?|rtmps?|https?|srt|udp|tcp):\/\//i.test(s)) return { kind: "stream", url: s };
  if (s === "browser") return { kind: "browser", url: null };
  return { kind: "file", url: s };
}

/** Checks and normalises a source's kind, url and options (throws StreamError invalid_source). */
export function validateSource(input: SourceInput, base?: SourceRecord): Required<Omit<SourceInput, "id">> {
  const bad = (msg: string) => new StreamError("invalid_source", msg);
  const kind = input.kind ?? base?.kind;
  if (!kind || !SOURCE_KINDS.includes(kind)) throw bad(`kind must be one of ${SOURCE_KINDS.join(", ")}`);
  const name = (input.name ?? base?.name ?? "").trim() || (input.id ?? base?.id ?? kind);
  if (name.length > 100) throw bad("name must be at most 100 characters");
  const url = input.url === undefined ? (base?.url ?? null) : input.url;
  if (kind === "browser") {
    if (url) throw bad("a browser source takes no url: its frames come over the WebSocket");
  } else if (!url) {
    throw bad(`a ${kind} source needs a url`);
  } else if (kind === "device" && !url.startsWith("/dev/")) {
    throw bad("a device url is a V4L2 device path such as /dev/video0");
  } else if (kind === "stream" && !/^(rtsps?|rtmps?|https?|srt|udp|tcp):\/\//i.test(url)) {
    throw bad("a stream url starts with rtsp://, http://, https://, rtmp:// or srt://");
  } else if (kind === "file" && !existsSync(url)) {
    throw bad(`the file ${url} does not exist`);
  }
  const options = { ...(base?.options ?? {}), ...(input.options ?? {}) };
  for (const [key, value] of Object.entries(options)) {
    const range = OPTION_RANGES[key];
    if (range) {
      if (typeof value !== "number" || !(value >= range[0] && value <= range[1]))
        throw bad(`options.${key} must be a number from ${range[0]} to ${range[1]}`);
    } else if (key === "loop" || key === "realtime") {
      if (typeof value !== "boolean") throw bad(`options.${key} must be true or false`);
    } else {
      throw bad(`unknown option ${key} (known: fps, width, loop, realtime)`);
    }
  }
  return { name, kind, url, options };
}

const OPTION_RANGES: Record<string, [number, number]> = { fps: [0.1, 60], width: [32, 3840] };

export class StreamManager {
  readonly bus = createBus();
  private readonly monitors = new Map<string, SourceMonitor>();

  constructor(private readonly options: StreamManagerOptions) {}

  /** The live-analysis settings every monitor shares. */
  get settings(): Readonly<MonitorSettings> {
    return this.options.settings;
  }

  /** Change the shared settings: from the next frame, but the smoothing window from each source's next start. */
  updateSettings(patch: Partial<Omit<MonitorSettings, "dataDir">>): void {
    Object.assign(this.options.settings, patch);
  }

  /** Records the default source (when configured) and resumes the sources left running. */
  async init(): Promise<void> {
    const { db, defaultSource } = this.options;
    if (defaultSource) {
      const existing = await getSource(db, DEFAULT_SOURCE_ID);
      const spec = validateSource({
        id: DEFAULT_SOURCE_ID,
        name: "Default camera",
        ...parseSourceSpec(defaultSource),
      });
      await upsertSource(db, {
        id: DEFAULT_SOURCE_ID,
        ...spec,
        options: existing?.options ?? {},
        enabled: existing?.enabled ?? false,
      });
    }
    for (const source of await listSources(db)) {
      if (source.enabled) this.monitorFor(source).start();
    }
  }

  async list(): Promise<SourceView[]> {
    return (await listSources(this.options.db)).map((s) => this.view(s));
  }

  async get(id: string): Promise<SourceView> {
    return this.view(await this.record(id));
  }

  async create(input: SourceInput): Promise<SourceView> {
    const spec = validateSource(input);
    const record = await createSource(this.options.db, { id: input.id, ...spec, enabled: false });
    return this.view(record);
  }

  /** Changes a source; a running one restarts with the new settings. */
  async update(id: string, input: SourceInput): Promise<SourceView> {
    const current = await this.record(id);
    const spec = validateSource(input, current);
    const record = await updateSource(this.options.db, id, spec);
    const monitor = this.monitors.get(id);
    if (monitor) {
      const wasRunning = monitor.running;
      await monitor.stop();
      this.monitors.delete(id);
      if (wasRunning) this.monitorFor(record).start();
    }
    return this.view(record);
  }

  async remove(id: string): Promise<void> {
    await this.record(id);
    await this.monitors.get(id)?.stop();
    this.monitors.delete(id);
    await deleteSource(this.options.db, id);
  }

  /** Starts the source and remembers it should run (it resumes after a restart). */
  async start(id: string): Promise<SourceView> {
    const record = await updateSource(this.options.db, id, { enabled: true }).catch((e) => {
      throw notFound(e, id);
    });
    this.monitorFor(record).start();
    this.options.log?.info({ source: id }, "source started");
    return this.view(record);
  }

  async stop(id: string): Promise<SourceView> {
    const record = await updateSource(this.options.db, id, { enabled: false }).catch((e) => {
      throw notFound(e, id);
    });
    await this.monitors.get(id)?.stop();
    this.options.log?.info({ source: id }, "source stopped");
    return this.view(record);
  }

  /** Status of every source that has a monitor (started at least once since the server started). */
  statuses(): SourceStatus[] {
    return [...this.monitors.values()].map((m) => m.status());
  }

  monitor(id: string): SourceMonitor | undefined {
    return this.monitors.get(id);
  }

  /** The monitor of a source, created (stopped) when there is none yet. */
  async monitorOf(id: string): Promise<SourceMonitor> {
    return this.monitors.get(id) ?? this.monitorFor(await this.record(id));
  }

  /** The default source's id, or a no_default_source error saying how to configure one. */
  async defaultSourceId(): Promise<string> {
    if (await getSource(this.options.db, DEFAULT_SOURCE_ID)) return DEFAULT_SOURCE_ID;
    throw new StreamError(
      "no_default_source",
      'no default source: set MASKWATCH_SOURCE (e.g. /dev/video0, an rtsp:// URL or a video file) or create a source with id "default"',
    );
  }

  /** Starts /get_stats counting again from now; the event log itself is kept. */
  async resetStats(): Promise<void> {
    await setSetting(this.options.db, STATS_RESET_KEY, Date.now());
  }

  /**
   * The default source's counts since the last reset: every event is one person's settled
   * label (a violation or an observation), so a person is counted once, not once per frame.
   */
  async compatStats(): Promise<CompatStats> {
    const { db } = this.options;
    const from = (await getSetting<number>(db, STATS_RESET_KEY)) ?? 0;
    const sourceId = DEFAULT_SOURCE_ID;
    const [totals, recent] = await Promise.all([
      eventTotals(db, { from, sourceId }),
      listEvents(db, { from, sourceId, limit: 20 }),
    ]);
    const monitor = this.monitors.get(sourceId);
    let current = "Inactive";
    if (monitor?.running) {
      const labels = monitor.tracks().map((t) => t.label);
      if (labels.includes("no_mask")) current = "No Mask Detected";
      else if (labels.includes("incorrect")) current = "Mask Worn Incorrectly";
      else if (labels.includes("mask")) current = "Mask Detected";
      else current = labels.length ? "Analyzing" : "No Face Detected";
    }
    return {
      total_detections: totals.events,
      mask_count: totals.mask,
      no_mask_count: totals.noMask + totals.incorrect,
      incorrect_count: totals.incorrect,
      current_status: current,
      activity: recent.events.map((e) => ({
        time: new Date(e.at).toISOString(),
        message: `Face ${e.trackId}: ${LABEL_WORDS[e.label]} (${Math.round(e.confidence * 100)}%)`,
        type: e.kind === "violation" ? "violation" : "info",
      })),
    };
  }

  /** Stops every monitor, leaving each source's enabled flag as it is (they resume at next start). */
  async close(): Promise<void> {
    await Promise.all([...this.monitors.values()].map((m) => m.stop()));
    this.monitors.clear();
  }

  private async record(id: string): Promise<SourceRecord> {
    const record = await getSource(this.options.db, id);
    if (!record) throw new StreamError("source_not_found", `there is no source ${id}`);
    return record;
  }

  private monitorFor(record: SourceRecord): SourceMonitor {
    let monitor = this.monitors.get(record.id);
    if (!monitor) {
      const { analyze, db, settings } = this.options;
      monitor = new SourceMonitor(record, settings, { analyze, db, bus: this.bus });
      this.monitors.set(record.id, monitor);
    }
    return monitor;
  }

  private view(record: SourceRecord): SourceView {
    const status = this.monitors.get(record.id)?.status() ?? idleStatus(record.id);
    return { ...record, status };
  }
}

function idleStatus(id: string): SourceStatus {
  return {
    id,
    state: "stopped",
    fps: 0,
    frames: 0,
    dropped: 0,
    faces: 0,
    events: 0,
    latencyMs: null,
    lastError: null,
    lastFrameAt: null,
    startedAt: null,
  };
}

function notFound(err: unknown, id: string): unknown {
  return (err as { code?: string }).code === "not_found"
    ? new StreamError("source_not_found", `there is no source ${id}`)
    : err;
}
