/**
 * Settings an admin changes from the console: the environment gives the defaults, the `settings` table
 * keeps what was changed (and wins over the environment from then on), and the live monitors pick them up.
 */
import type { Database } from "../store/db.ts";
import { getSetting, setSetting } from "../store/settings.ts";
import type { StreamManager } from "../streams/manager.ts";
import type { Config } from "./config.ts";

export interface RuntimeSettings {
  stream_detector: string;
  detection_threshold: number | null;
  mask_threshold: number | null;
  min_face_size: number | null;
  smoothing_frames: number;
  cooldown_seconds: number;
  snapshots: boolean;
  blur_snapshots: boolean;
  /** Blur every face in a violation's stored frame except the violator's. */
  blur_others: boolean;
  retention_days: number;
}

const KEY = "console.settings";

export function defaultSettings(config: Config): RuntimeSettings {
  return {
    stream_detector: config.stream.detector,
    detection_threshold: null,
    mask_threshold: null,
    min_face_size: null,
    smoothing_frames: config.stream.window,
    cooldown_seconds: config.stream.cooldownSeconds,
    snapshots: config.stream.snapshots,
    blur_snapshots: config.stream.blur,
    blur_others: config.stream.blurOthers,
    retention_days: config.retentionDays,
  };
}

/** The defaults with what is stored laid over them (unknown stored fields are ignored). */
export async function loadSettings(db: Database, config: Config): Promise<RuntimeSettings> {
  const base = defaultSettings(config);
  const stored = (await getSetting<Partial<RuntimeSettings>>(db, KEY)) ?? {};
  const known = Object.fromEntries(Object.entries(stored).filter(([k]) => k in base));
  return { ...base, ...known };
}

/** Store a change (validated by the route's schema) and return the whole settings. */
export async function saveSettings(
  db: Database,
  current: RuntimeSettings,
  patch: Partial<RuntimeSettings>,
): Promise<RuntimeSettings> {
  const next = { ...current, ...patch };
  const stored = (await getSetting<Partial<RuntimeSettings>>(db, KEY)) ?? {};
  await setSetting(db, KEY, { ...stored, ...patch });
  return next;
}

/** Hand the settings to the live monitors. */
export function applySettings(settings: RuntimeSettings, streams: StreamManager): void {
  streams.updateSettings({
    detector: settings.stream_detector,
    threshold: settings.detection_threshold ?? undefined,
    maskThreshold: settings.mask_threshold ?? undefined,
    minFaceSize: settings.min_face_size ?? undefined,
    window: settings.smoothing_frames,
    cooldownMs: settings.cooldown_seconds * 1000,
    snapshots: settings.snapshots,
    blur: settings.blur_snapshots,
    blurOthers: settings.blur_others,
  });
}
