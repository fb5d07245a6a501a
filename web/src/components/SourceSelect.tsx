import type { Source } from "../api.ts";

/** The "Source" field of the filter and rule forms: one source, or "" for all of them. */
export function SourceSelect({
  sources,
  value,
  onChange,
}: {
  sources: readonly Source[];
  value: string;
  onChange(id: string): void;
}) {
  return (
    <label className="field">
      <span>Source</span>
      <select value={value} onChange={(e) => onChange(e.target.value)}>
        <option value="">All sources</option>
        {sources.map((s) => (
          <option key={s.id} value={s.id}>
            {s.name}
          </option>
        ))}
      </select>
    </label>
  );
}
