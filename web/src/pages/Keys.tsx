import { type FormEvent, useState } from "react";
import { type ApiKey, api, type CreatedApiKey, errorMessage } from "../api.ts";
import { EmptyState, ErrorNotice, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { useConfirm } from "../components/Modal.tsx";
import { formatTime } from "../format.ts";
import { useDocumentTitle, useFetch } from "../hooks.ts";
import { useSession } from "../session.tsx";

type Scope = ApiKey["scopes"][number];
const SCOPES: { scope: Scope; label: string }[] = [
  { scope: "detect", label: "detect: send images to /api/v1/detect, batches and jobs" },
  { scope: "events:read", label: "events:read: read violations, snapshots, statistics, CSV and live views" },
  { scope: "admin", label: "admin: everything, including sources, settings and keys" },
];

export function KeysPage() {
  useDocumentTitle("API keys");
  const { isAdmin } = useSession();
  if (!isAdmin) {
    return (
      <>
        <PageHeader title="API keys" />
        <EmptyState title="Only admins can manage API keys." />
      </>
    );
  }
  return <KeyManager />;
}

function KeyManager() {
  const keys = useFetch<{ keys: ApiKey[] }>("/api/v1/keys");
  const [created, setCreated] = useState<CreatedApiKey | null>(null);
  const [confirmElement, confirm] = useConfirm();
  const [error, setError] = useState<string | null>(null);

  const revoke = async (key: ApiKey) => {
    const ok = await confirm({
      title: "Revoke API key",
      message: `Revoke “${key.name}” (${key.prefix}…)? Programs using it stop working at once.`,
      confirmLabel: "Revoke key",
    });
    if (!ok) return;
    setError(null);
    try {
      await api(`/api/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      keys.reload();
    } catch (err) {
      setError(errorMessage(err));
    }
  };

  const list = keys.data?.keys ?? [];
  const active = list.filter((k) => k.revokedAt === null);
  const revoked = list.filter((k) => k.revokedAt !== null);
  return (
    <>
      <PageHeader title="API keys" />
      <p className="muted lead">
        Programs send a key in the <code>X-API-Key</code> header. Keys with the detect scope can only analyse
        images.
      </p>
      <CreateKey
        onCreated={(key) => {
          setCreated(key);
          keys.reload();
        }}
      />
      {created && <NewKey created={created} onDone={() => setCreated(null)} />}
      {error && <ErrorNotice message={error} />}
      {keys.error && <ErrorNotice message={keys.error} onRetry={keys.reload} />}
      {!keys.data ? (
        keys.loading && <Loading />
      ) : active.length === 0 ? (
        <EmptyState title="No active API keys." />
      ) : (
        <KeyTable keys={active} onRevoke={revoke} />
      )}
      {revoked.length > 0 && (
        <details className="revoked">
          <summary>Revoked keys ({revoked.length})</summary>
          <KeyTable keys={revoked} />
        </details>
      )}
      {confirmElement}
    </>
  );
}

function KeyTable({ keys, onRevoke }: { keys: ApiKey[]; onRevoke?: (key: ApiKey) => void }) {
  return (
    <div className="table-wrap">
      <table className="table">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Key</th>
            <th scope="col">Scopes</th>
            <th scope="col">Created</th>
            <th scope="col">{onRevoke ? "Last used" : "Revoked"}</th>
            {onRevoke && (
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            )}
          </tr>
        </thead>
        <tbody>
          {keys.map((k) => (
            <tr key={k.id} data-testid="key-row">
              <td>{k.name}</td>
              <td>
                <code>{k.prefix}…</code>
              </td>
              <td>
                {k.scopes.map((s) => (
                  <span key={s} className="badge badge-role">
                    {s}
                  </span>
                ))}
              </td>
              <td>{formatTime(k.createdAt)}</td>
              <td>
                {onRevoke ? (k.lastUsedAt ? formatTime(k.lastUsedAt) : "Never") : formatTime(k.revokedAt)}
              </td>
              {onRevoke && (
                <td className="actions-cell">
                  <button
                    type="button"
                    className="button button-small button-danger-quiet"
                    onClick={() => onRevoke(k)}
                  >
                    Revoke
                  </button>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function CreateKey({ onCreated }: { onCreated(key: CreatedApiKey): void }) {
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<Scope[]>(["detect"]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (scopes.length === 0) {
      setError("Choose at least one scope.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      onCreated(await api<CreatedApiKey>("/api/v1/keys", { body: { name: name.trim(), scopes } }));
      setName("");
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  const toggle = (scope: Scope, on: boolean) =>
    setScopes((s) => (on ? [...s.filter((x) => x !== scope), scope] : s.filter((x) => x !== scope)));

  return (
    <section className="panel" aria-labelledby="create-key-title">
      <h2 className="panel-title" id="create-key-title">
        Create a key
      </h2>
      <form className="form form-grid" onSubmit={submit}>
        <label className="field">
          <span>Name</span>
          <input
            value={name}
            required
            maxLength={100}
            placeholder="e.g. door camera script"
            onChange={(e) => setName(e.target.value)}
          />
        </label>
        <fieldset className="field checks">
          <legend>Scopes</legend>
          {SCOPES.map(({ scope, label }) => (
            <label key={scope} className="check">
              <input
                type="checkbox"
                name="scopes"
                value={scope}
                checked={scopes.includes(scope)}
                onChange={(e) => toggle(scope, e.target.checked)}
              />
              {label}
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
            Create key
          </button>
        </div>
      </form>
    </section>
  );
}

/** The new key, shown this once, with a copy button. */
function NewKey({ created, onDone }: { created: CreatedApiKey; onDone(): void }) {
  const [copied, setCopied] = useState<"yes" | "failed" | null>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(created.key);
      setCopied("yes");
    } catch {
      setCopied("failed");
    }
  };
  return (
    <section className="panel new-key" aria-labelledby="new-key-title">
      <h2 className="panel-title" id="new-key-title">
        Key “{created.name}” created
      </h2>
      <p className="notice notice-warning">
        Copy this key now and store it safely: it will not be shown again.
      </p>
      <div className="key-box">
        <code data-testid="new-key">{created.key}</code>
        <button type="button" className="button button-small" onClick={copy}>
          Copy
        </button>
      </div>
      <p className="muted" role="status">
        {copied === "yes"
          ? "Copied to the clipboard."
          : copied === "failed"
            ? "Copying failed: select the key and copy it."
            : ""}
      </p>
      <button type="button" className="button" onClick={onDone}>
        Done
      </button>
    </section>
  );
}
