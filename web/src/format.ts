import type { MaskLabel } from "./api.ts";

export const LABEL_TEXT: Record<MaskLabel, string> = {
  mask: "Mask",
  no_mask: "No mask",
  incorrect: "Mask worn incorrectly",
};

/** Box colours by label, the same on every canvas (no label yet: grey). */
const LABEL_COLOR: Record<MaskLabel | "none", string> = {
  mask: "#16a34a",
  incorrect: "#f59e0b",
  no_mask: "#dc2626",
  none: "#9ca3af",
};

export function labelColor(label: MaskLabel | null | undefined): string {
  return LABEL_COLOR[label ?? "none"];
}

export function percent(value: number | null | undefined, digits = 0): string {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(digits)}%`;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

/** A time as the server sends it (ISO string or epoch ms), in the viewer's time zone. */
export function formatTime(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === "") return "—";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toDateString() === new Date().toDateString() ? timeOnly.format(d) : dateTime.format(d);
}

export function formatNumber(value: number | null | undefined): string {
  return value === null || value === undefined ? "—" : value.toLocaleString();
}

/** A <input type="datetime-local"> value as an ISO time ("" stays ""). */
export function localInputToIso(value: string): string {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}
