import { type FormEvent, useState } from "react";
import { api, errorMessage, type Source } from "../api.ts";
import { EmptyState, ErrorNotice, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { useConfirm } from "../components/Modal.tsx";
import { SourceSelect } from "../components/SourceSelect.tsx";
import { formatTime, percent } from "../format.ts";
import { useDocumentTitle, useFetch } from "../hooks.ts";
import { useSession } from "../session.tsx";

const EVENTS = [
  { id: "violation", label: "violation: a person without a mask, or wearing it wrong" },
  { id: "compliance_below", label: "compliance_below: a compliance rule's rate fell under its threshold" },
  { id: "compliance_recovered", label: "compliance_recovered: and is back above it" },
  { id: "daily_summary", label: "daily_summary: yesterday's counts (MASKWATCH_DAILY_SUMMARY_HOUR)" },
] as const;

interface Webhook {
  id: string;
  name: string;
  url: string;
  events: string[];
  source_id: string | null;
  enabled: boolean;
  created_at: string;
}

interface Delivery {
  id: number;
  event: string;
  state: "pending" | "delivered" | "failed";
  attempts: number;
  response_status: number | null;
  error: string | null;
  created_at: string;
  last_attempt_at: string | null;
  next_attempt_at: string | null;
}

interface Rule {
  id: string;
  name: string;
  source_id: string | null;
  zone: string | null;
  below_percent: number;
  window_minutes: number;
  min_faces: number;
  firing: boolean;
  last_fired_at: string | null;
}

export function AlertsPage() {
  useDocumentTitle("Alerts");
  const { isAdmin } = useSession();
  if (!isAdmin) {
    return (
      <>
        <PageHeader title="Alerts" />
        <EmptyState title="Only admins can manage alerts." />
      </>
    );
  }
  return (
    <>
      <PageHeader title="Alerts" />
      <p className="muted lead">
        Webhooks receive each alert as a signed JSON POST (<code>X-Maskwatch-Signature</code>); failed
        deliveries are retried with growing waits and can be sent again from here.
      </p>
      <Webhooks />
      <Rules />
    </>
  );
}

function Webhooks() {
  const hooks = useFetch<{ webhooks: Webhook[] }>("/api/v1/webhooks");
  const [secret, setSecret] = useState<{ name: string; secret: string } | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [confirmElement, confirm] = useConfirm();

  const act = async (fn: () => Promise<unknown>) => {
    setError(null);
    try {
      await fn();
      hooks.reload();
    } catch (err) {
      setError(errorMessage(err));
    }
  };
  const remove = async (w: Webhook) => {
    const ok = await confirm({
      title: "Remove webhook",
      message: `Remove “${w.name}” and its delivery log?`,
      confirmLabel: "Remove webhook",
    });
    if (ok) await act(() => api(`/api/v1/webhooks/${encodeURIComponent(w.id)}`, { method: "DELETE" }));
  };

  const list = hooks.data?.webhooks ?? [];
  return (
    <section className="panel" aria-labelledby="webhooks-title">
      <h2 className="panel-title" id="webhooks-title">
        Webhooks
      </h2>
      <CreateWebhook
        onCreated={(name, s) => {
          setSecret({ name, secret: s });
          hooks.reload();
        }}
      />
      {secret && (
        <div className="notice notice-warning" data-testid="webhook-secret">
          Signing secret of “{secret.name}” (shown once): <code>{secret.secret}</code>{" "}
          <button type="button" className="button button-small" onClick={() => setSecret(null)}>
            Done
          </button>
        </div>
      )}
      {error && <ErrorNotice message={error} />}
      {hooks.error && <ErrorNotice message={hooks.error} onRetry={hooks.reload} />}
      {!hooks.data ? (
        hooks.loading && <Loading />
      ) : list.length === 0 ? (
        <EmptyState title="No webhooks yet." />
      ) : (
        <div className="table-wrap">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">URL</th>
                <th scope="col">Events</th>
                <th scope="col">Source</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((w) => (
                <WebhookRow
                  key={w.id}
                  hook={w}
                  open={open === w.id}
                  onToggle={() => setOpen(open === w.id ? null : w.id)}
                  onTest={() =>
                    act(() => api(`/api/v1/webhooks/${encodeURIComponent(w.id)}/test`, { method: "POST" }))
                  }
                  onEnable={(enabled) =>
                    act(() =>
                      api(`/api/v1/webhooks/${encodeURIComponent(w.id)}`, {
                        method: "PATCH",
                        body: { enabled },
                      }),
                    )
                  }
                  onRemove={() => remove(w)}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {confirmElement}
    </section>
  );
}

function WebhookRow(props: {
  hook: Webhook;
  open: boolean;
  onToggle(): void;
  onTest(): void;
  onEnable(enabled: boolean): void;
  onRemove(): void;
}) {
  const w = props.hook;
  return (
    <>
      <tr data-testid="webhook-row">
        <td>
          {w.name}
          {!w.enabled && <span className="badge">disabled</span>}
        </td>
        <td className="break">
          <code>{w.url}</code>
        </td>
        <td>
          {w.events.map((e) => (
            <span key={e} className="badge badge-role">
              {e}
            </span>
          ))}
        </td>
        <td>{w.source_id ?? "all"}</td>
        <td className="actions-cell">
          <button
            type="button"
            className="button button-small"
            onClick={props.onToggle}
            aria-expanded={props.open}
          >
            Deliveries
          </button>
          <button type="button" className="button button-small" onClick={props.onTest}>
            Send test
          </button>
          <button type="button" className="button button-small" onClick={() => props.onEnable(!w.enabled)}>
            {w.enabled ? "Disable" : "Enable"}
          </button>
          <button type="button" className="button button-small button-danger-quiet" onClick={props.onRemove}>
            Remove
          </button>
        </td>
      </tr>
      {props.open && (
        <tr>
          <td colSpan={5}>
            <Deliveries hook={w} />
          </td>
        </tr>
      )}
    </>
  );
}

function Deliveries({ hook }: { hook: Webhook }) {
  const base = `/api/v1/webhooks/${encodeURIComponent(hook.id)}`;
  const deliveries = useFetch<{ deliveries: Delivery[] }>(`${base}/deliveries?limit=50`, 3000);
  const [error, setError] = useState<string | null>(null);
  const resend = async (d: Delivery) => {
    setError(null);
    try {
      await api(`${base}/deliveries/${d.id}/resend`, { method: "POST" });
      deliveries.reload();
    } catch (err) {
      setError(errorMessage(err));
    }
  };
  const list = deliveries.data?.deliveries ?? [];
  return (
    <div className="deliveries" data-testid="deliveries">
      {error && <ErrorNotice message={error} />}
      {!deliveries.data ? (
        deliveries.loading && <Loading />
      ) : list.length === 0 ? (
        <p className="muted">Nothing sent yet.</p>
      ) : (
        <table className="table table-compact">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Event</th>
              <th scope="col">State</th>
              <th scope="col">Attempts</th>
              <th scope="col">Last answer</th>
              <th scope="col">Last attempt</th>
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((d) => (
              <tr key={d.id} data-testid="delivery-row" data-state={d.state}>
                <td>{d.id}</td>
                <td>{d.event}</td>
                <td>
                  <span className={`badge delivery-${d.state}`}>{d.state}</span>
                  {d.state === "pending" && d.next_attempt_at && (
                    <span className="muted"> next {formatTime(d.next_attempt_at)}</span>
                  )}
                </td>
                <td>{d.attempts}</td>
                <td>{d.error ?? (d.response_status ? `HTTP ${d.response_status}` : "—")}</td>
                <td>{d.last_attempt_at ? formatTime(d.last_attempt_at) : "—"}</td>
                <td className="actions-cell">
                  {d.state !== "pending" && (
                    <button type="button" className="button button-small" onClick={() => resend(d)}>
                      Resend
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function useSources(): Source[] {
  return useFetch<{ sources: Source[] }>("/api/v1/sources").data?.sources ?? [];
}

function CreateWebhook({ onCreated }: { onCreated(name: string, secret: string): void }) {
  const [name, setName] = useState("");
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState<string[]>(["violation"]);
  const [source, setSource] = useState("");
  const sources = useSources();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!events.length) return setError("Choose at least one event.");
    setBusy(true);
    setError(null);
    try {
      const made = await api<Webhook & { secret: string }>("/api/v1/webhooks", {
        body: { name: name.trim(), url: url.trim(), events, source_id: source || null },
      });
      onCreated(made.name, made.secret);
      setName("");
      setUrl("");
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form form-grid" onSubmit={submit} aria-label="Add a webhook">
      <label className="field">
        <span>Name</span>
        <input
          value={name}
          required
          maxLength={100}
          placeholder="e.g. front desk chat"
          onChange={(e) => setName(e.target.value)}
        />
      </label>
      <label className="field">
        <span>URL</span>
        <input
          value={url}
          required
          type="url"
          placeholder="https://hooks.example.com/maskwatch"
          onChange={(e) => setUrl(e.target.value)}
        />
      </label>
      <SourceSelect sources={sources} value={source} onChange={setSource} />
      <fieldset className="field checks field-wide">
        <legend>Events</legend>
        {EVENTS.map((ev) => (
          <label key={ev.id} className="check">
            <input
              type="checkbox"
              name="events"
              value={ev.id}
              checked={events.includes(ev.id)}
              onChange={(e) =>
                setEvents((s) =>
                  e.target.checked ? [...s.filter((x) => x !== ev.id), ev.id] : s.filter((x) => x !== ev.id),
                )
              }
            />
            {ev.label}
          </label>
        ))}
      </fieldset>
      {error && (
        <p className="notice notice-error field-wide" role="alert">
          {error}
        </p>
      )}
      <div className="field-wide">
        <button type="submit" className="button button-primary" disabled={busy}>
          Add webhook
        </button>
      </div>
    </form>
  );
}

function Rules() {
  const rules = useFetch<{ rules: Rule[] }>("/api/v1/alert-rules", 10_000);
  const [name, setName] = useState("");
  const [below, setBelow] = useState("90");
  const [windowMinutes, setWindowMinutes] = useState("15");
  const [minFaces, setMinFaces] = useState("10");
  const [source, setSource] = useState("");
  const sources = useSources();
  const [zone, setZone] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await api("/api/v1/alert-rules", {
        body: {
          name: name.trim(),
          source_id: source || null,
          zone: zone.trim() || null,
          below_percent: Number(below),
          window_minutes: Number(windowMinutes),
          min_faces: Number(minFaces),
        },
      });
      setName("");
      rules.reload();
    } catch (err) {
      setError(errorMessage(err));
    }
  };
  const remove = async (r: Rule) => {
    try {
      await api(`/api/v1/alert-rules/${encodeURIComponent(r.id)}`, { method: "DELETE" });
      rules.reload();
    } catch (err) {
      setError(errorMessage(err));
    }
  };
  const list = rules.data?.rules ?? [];
  return (
    <section className="panel" aria-labelledby="rules-title">
      <h2 className="panel-title" id="rules-title">
        Compliance rules
      </h2>
      <p className="muted">
        Alert (<code>compliance_below</code>) when the share of faces wearing a mask correctly over a window
        falls under a threshold; once per dip, and <code>compliance_recovered</code> when it is back.
      </p>
      <form className="form form-grid" onSubmit={submit} aria-label="Add a compliance rule">
        <label className="field">
          <span>Name</span>
          <input
            value={name}
            required
            maxLength={100}
            placeholder="e.g. entrance"
            onChange={(e) => setName(e.target.value)}
          />
        </label>
        <SourceSelect sources={sources} value={source} onChange={setSource} />
        <label className="field">
          <span>Zone (optional)</span>
          <input
            value={zone}
            maxLength={100}
            placeholder="a zone's name"
            onChange={(e) => setZone(e.target.value)}
          />
        </label>
        <label className="field">
          <span>Below (%)</span>
          <input
            type="number"
            min={1}
            max={100}
            step="any"
            required
            value={below}
            onChange={(e) => setBelow(e.target.value)}
          />
        </label>
        <label className="field">
          <span>Over the last (minutes)</span>
          <input
            type="number"
            min={1}
            max={10080}
            required
            value={windowMinutes}
            onChange={(e) => setWindowMinutes(e.target.value)}
          />
        </label>
        <label className="field">
          <span>At least (faces)</span>
          <input
            type="number"
            min={1}
            required
            value={minFaces}
            onChange={(e) => setMinFaces(e.target.value)}
          />
        </label>
        {error && (
          <p className="notice notice-error field-wide" role="alert">
            {error}
          </p>
        )}
        <div className="field-wide">
          <button type="submit" className="button button-primary">
            Add rule
          </button>
        </div>
      </form>
      {list.length > 0 && (
        <div className="table-wrap">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Source</th>
                <th scope="col">Alert below</th>
                <th scope="col">Window</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((r) => (
                <tr key={r.id} data-testid="rule-row">
                  <td>{r.name}</td>
                  <td>
                    {r.source_id ?? "all"}
                    {r.zone && ` · ${r.zone}`}
                  </td>
                  <td>{percent(r.below_percent / 100)}</td>
                  <td>
                    {r.window_minutes} min, ≥ {r.min_faces} faces
                  </td>
                  <td>
                    {r.firing ? (
                      <span className="badge delivery-failed">below</span>
                    ) : (
                      <span className="badge">ok</span>
                    )}
                    {r.last_fired_at && <span className="muted"> last {formatTime(r.last_fired_at)}</span>}
                  </td>
                  <td className="actions-cell">
                    <button
                      type="button"
                      className="button button-small button-danger-quiet"
                      onClick={() => remove(r)}
                    >
                      Remove
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
