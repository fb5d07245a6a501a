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
  type LiveTrack,
  type MonitorSettings,
  SourceMonitor,
  type SourceStatus,
} from "./monitor.ts";
import { checkSourceTarget, type SourcePolicy } from "./source-policy.ts";

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

/**
 * Which replica runs which source when several share the database: a lease per source, held by one
 * replica at a time (src/cluster/leases.ts implements it over Redis). Without it, every source runs here.
 */
export interface SourceLeases {
  readonly replicaId: string;
  acquire(id: string): Promise<boolean>;
  renew(id: string): Promise<boolean>;
  release(id: string): Promise<void>;
  /** Whether this replica may still act for the source (its lease has not run out by its own clock). */
  holds(id: string): boolean;
}

export interface StreamManagerOptions {
  db: Database;
  analyze: Analyze;
  settings: MonitorSettings;
  leases?: SourceLeases;
  /** How often leases are renewed and sources without a replica are taken (ms, default 1000). */
  tickMs?: number;
  /** MASKWATCH_SOURCE: a device, stream URL, file path, or "browser", for the default source. */
  defaultSource?: string;
  /** MASKWATCH_SOURCE_LOOP: a default file source plays in a loop. */
  defaultSourceLoop?: boolean;
  /** Where sources added through the API may point (the default source is the operator's own). */
  policy?: SourcePolicy;
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
  /** Sources whose lease this replica holds. */
  private readonly leased = new Set<string>();
  /** The latest status other replicas reported for the sources they run. */
  private readonly remote = new Map<string, { status: SourceStatus; at: number }>();
  private readonly latestTracks = new Map<string, LiveTrack[]>();
  private timer: NodeJS.Timeout | undefined;
  private reconciling: Promise<void> | undefined;

  constructor(private readonly options: StreamManagerOptions) {
    this.bus.on("status", (status) => {
      if (!this.leased.has(status.id)) this.remote.set(status.id, { status, at: Date.now() });
    });
    this.bus.on("frame", (frame) => this.latestTracks.set(frame.sourceId, frame.tracks));
  }

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
      const loop = this.options.defaultSourceLoop;
      if (loop && spec.kind !== "file")
        this.options.log?.warn(
          { source: defaultSource },
          "MASKWATCH_SOURCE_LOOP applies to video files only",
        );
      await upsertSource(db, {
        id: DEFAULT_SOURCE_ID,
        ...spec,
        options: { ...(existing?.options ?? {}), ...(loop && spec.kind === "file" ? { loop: true } : {}) },
        enabled: existing?.enabled ?? false,
      });
    }
    if (this.options.leases) {
      await this.reconcile();
      this.timer = setInterval(() => void this.reconcile(), this.options.tickMs ?? 1000);
      this.timer.unref();
      return;
    }
    for (const source of await listSources(db)) {
      if (source.enabled) this.monitorFor(source).start();
    }
  }

  /**
   * With leases, once a tick: renew what this replica runs and stop what it lost or what should no longer
   * run (stopped, changed, removed, or a file that ended); take enabled sources that nobody holds; tell the
   * other replicas how the sources here are doing.
   */
  reconcile(): Promise<void> {
    this.reconciling ??= this.reconcileOnce().finally(() => {
      this.reconciling = undefined;
    });
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    const leases = this.options.leases;
    if (!leases) return;
    const { db, log } = this.options;
    let sources: SourceRecord[];
    try {
      sources = await listSources(db);
    } catch (err) {
      log?.warn({ err }, "sources could not be read; leases kept until their deadline");
      for (const id of this.leased) if (!(await leases.renew(id))) await this.drop(id);
      return;
    }
    const wanted = new Map(sources.filter((s) => s.enabled && s.kind !== "browser").map((s) => [s.id, s]));
    for (const id of [...this.leased]) {
      const monitor = this.monitors.get(id);
      const record = wanted.get(id);
      if (!record || !monitor) {
        await this.drop(id);
        continue;
      }
      if (!(await leases.renew(id))) {
        log?.warn({ source: id }, "source lease lost: another replica runs it now");
        await this.drop(id, false);
        continue;
      }
      if (monitor.status().state === "ended") {
        // A file read to its end is done: it must not be read again by whoever takes it next.
        await updateSource(db, id, { enabled: false }).catch(() => {});
        await this.drop(id);
        continue;
      }
      if (record.updatedAt !== monitor.source.updatedAt) {
        await monitor.stop();
        this.monitors.delete(id);
        this.monitorFor(record).start();
      }
    }
    for (const record of wanted.values()) {
      if (this.leased.has(record.id)) continue;
      if (!(await leases.acquire(record.id).catch(() => false))) continue;
      this.leased.add(record.id);
      this.remote.delete(record.id);
      const stale = this.monitors.get(record.id);
      if (stale && stale.source.updatedAt !== record.updatedAt) this.monitors.delete(record.id);
      this.monitorFor(record).start();
      log?.info({ source: record.id, replica: leases.replicaId }, "source taken: running here");
    }
    for (const id of this.leased) {
      const monitor = this.monitors.get(id);
      if (monitor) this.bus.emit("status", monitor.status());
    }
  }

  /** Stop running a source here and give its lease back (unless it is already gone). */
  private async drop(id: string, release = true): Promise<void> {
    this.leased.delete(id);
    await this.monitors.get(id)?.stop();
    if (release) await this.options.leases?.release(id);
  }

  async list(): Promise<SourceView[]> {
    return (await listSources(this.options.db)).map((s) => this.view(s));
  }

  async get(id: string): Promise<SourceView> {
    return this.view(await this.record(id));
  }

  /** Adds a source, stopped; `owner` is recorded (browser sources: only the owner may send frames). */
  async create(input: SourceInput, owner: string | null = null): Promise<SourceView> {
    const spec = validateSource(input);
    await checkSourceTarget(spec.kind, spec.url, this.options.policy ?? { allow: [] });
    const record = await createSource(this.options.db, { id: input.id, ...spec, enabled: false, owner });
    return this.view(record);
  }

  /** Changes a source; a running one restarts with the new settings. */
  async update(id: string, input: SourceInput): Promise<SourceView> {
    const current = await this.record(id);
    const spec = validateSource(input, current);
    if (spec.url !== current.url || spec.kind !== current.kind)
      await checkSourceTarget(spec.kind, spec.url, this.options.policy ?? { allow: [] });
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
    // With leases a browser source runs where its camera connects; others where a lease is won.
    if (this.options.leases && record.kind !== "browser") await this.reconcile();
    else this.monitorFor(record).start();
    this.options.log?.info({ source: id }, "source started");
    return this.view(record);
  }

  async stop(id: string): Promise<SourceView> {
    const record = await updateSource(this.options.db, id, { enabled: false }).catch((e) => {
      throw notFound(e, id);
    });
    // A source running on another replica stops there at its next tick.
    if (this.leased.has(id)) await this.drop(id);
    else await this.monitors.get(id)?.stop();
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
    const source = await getSource(db, sourceId);
    const running = source ? this.view(source).status.state === "running" : false;
    let current = "Inactive";
    if (running) {
      const labels = (this.latestTracks.get(sourceId) ?? []).map((t) => t.label);
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
    clearInterval(this.timer);
    await this.reconciling;
    await Promise.all([...this.monitors.values()].map((m) => m.stop()));
    // Leases given back: another replica takes the sources at once instead of after the TTL.
    await Promise.all([...this.leased].map((id) => this.options.leases?.release(id)));
    this.leased.clear();
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
      const { analyze, db, settings, leases } = this.options;
      monitor = new SourceMonitor(record, settings, {
        analyze,
        db,
        bus: this.bus,
        ...(leases && record.kind !== "browser"
          ? { mayWrite: () => leases.holds(record.id), replica: leases.replicaId }
          : leases
            ? { replica: leases.replicaId }
            : {}),
      });
      this.monitors.set(record.id, monitor);
    }
    return monitor;
  }

  private view(record: SourceRecord): SourceView {
    const local = this.monitors.get(record.id);
    if (!this.options.leases || this.leased.has(record.id) || record.kind === "browser")
      return { ...record, status: local?.status() ?? idleStatus(record.id) };
    // Run elsewhere: the holder reports every tick; silence means it is gone and a takeover is due.
    const remote = this.remote.get(record.id);
    const fresh = remote && Date.now() - remote.at < 5 * (this.options.tickMs ?? 1000);
    if (record.enabled && fresh) return { ...record, status: remote.status };
    const status = idleStatus(record.id);
    if (record.enabled) status.state = "starting";
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
