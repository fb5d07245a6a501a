import type { MaskLabel, SourceState } from "../api.ts";
import { LABEL_TEXT } from "../format.ts";

export function LabelBadge({ label }: { label: MaskLabel | null }) {
  return <span className={`badge badge-${label ?? "none"}`}>{label ? LABEL_TEXT[label] : "Unknown"}</span>;
}

const STATE_TEXT: Record<SourceState, string> = {
  stopped: "Stopped",
  starting: "Starting",
  running: "Running",
  reconnecting: "Reconnecting",
  ended: "Ended",
};

export function StateBadge({ state }: { state: SourceState | null | undefined }) {
  const s = state ?? "stopped";
  return <span className={`badge badge-state-${s}`}>{STATE_TEXT[s] ?? s}</span>;
}
