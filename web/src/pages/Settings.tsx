import { type FormEvent, type ReactNode, useEffect, useState } from "react";
import { api, errorMessage, type ModelsInfo, type Role, type Settings, type UserRecord } from "../api.ts";
import { DetectorMissing, DetectorOptions } from "../components/Detectors.tsx";
import { EmptyState, ErrorNotice, Loading } from "../components/Feedback.tsx";
import { PageHeader } from "../components/Layout.tsx";
import { useConfirm } from "../components/Modal.tsx";
import { formatTime } from "../format.ts";
import { useDocumentTitle, useFetch } from "../hooks.ts";
import { useSession } from "../session.tsx";

export function SettingsPage() {
  useDocumentTitle("Settings");
  const session = useSession();
  return (
    <>
      <PageHeader title="Settings" />
      <MonitoringSettings editable={session.isAdmin} />
      {session.isAdmin && <Users currentUserId={session.user?.id ?? null} />}
      {session.user && <ChangePassword />}
    </>
  );
}

/** The form's fields as typed: numbers stay strings until saved, "" meaning "default". */
type Draft = Record<keyof Settings, string | boolean>;

function toDraft(s: Settings): Draft {
  const text = (v: number | null) => (v === null ? "" : String(v));
  return {
    stream_detector: s.stream_detector,
    detection_threshold: text(s.detection_threshold),
    mask_threshold: text(s.mask_threshold),
    min_face_size: text(s.min_face_size),
    smoothing_frames: String(s.smoothing_frames),
    cooldown_seconds: String(s.cooldown_seconds),
    snapshots: s.snapshots,
    blur_snapshots: s.blur_snapshots,
    blur_others: s.blur_others,
    retention_days: String(s.retention_days),
  };
}

function fromDraft(d: Draft): Settings {
  const optional = (v: string | boolean) => (v === "" ? null : Number(v));
  return {
    stream_detector: String(d.stream_detector),
    detection_threshold: optional(d.detection_threshold),
    mask_threshold: optional(d.mask_threshold),
    min_face_size: optional(d.min_face_size),
    smoothing_frames: Number(d.smoothing_frames),
    cooldown_seconds: Number(d.cooldown_seconds),
    snapshots: d.snapshots === true,
    blur_snapshots: d.blur_snapshots === true,
    blur_others: d.blur_others === true,
    retention_days: Number(d.retention_days),
  };
}

/** The numeric settings, in form order; optional ones may be left empty for the default. */
const NUMBER_FIELDS: {
  key: keyof Settings;
  label: string;
  help: string;
  min: number;
  max: number;
  step: number;
  optional?: boolean;
}[] = [
  {
    key: "detection_threshold",
    label: "Detection threshold",
    help: "0–1; empty: the detector's default.",
    min: 0,
    max: 1,
    step: 0.01,
    optional: true,
  },
  {
    key: "mask_threshold",
    label: "Mask threshold",
    help: "0–1; empty: the classifier's default.",
    min: 0,
    max: 1,
    step: 0.01,
    optional: true,
  },
  {
    key: "min_face_size",
    label: "Min face size",
    help: "Pixels; smaller faces are ignored. Empty: default.",
    min: 4,
    max: 4096,
    step: 1,
    optional: true,
  },
  {
    key: "smoothing_frames",
    label: "Smoothing frames",
    help: "Frames averaged before a person's label settles.",
    min: 1,
    max: 100,
    step: 1,
  },
  {
    key: "cooldown_seconds",
    label: "Cooldown (seconds)",
    help: "Before the same person raises another violation.",
    min: 0,
    max: 86400,
    step: 1,
  },
  {
    key: "retention_days",
    label: "Retention (days)",
    help: "Events and snapshots older than this are deleted; 0 keeps all.",
    min: 0,
    max: 36500,
    step: 1,
  },
];

function MonitoringSettings({ editable }: { editable: boolean }) {
  const settings = useFetch<{ settings: Settings }>("/api/v1/settings");
  const models = useFetch<ModelsInfo>("/api/v1/models");
  const [draft, setDraft] = useState<Draft | null>(null);
  const [saving, setSaving] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);

  const loaded = settings.data?.settings;
  useEffect(() => {
    if (loaded) setDraft(toDraft(loaded));
  }, [loaded]);

  const dirty =
    draft !== null && loaded !== undefined && JSON.stringify(draft) !== JSON.stringify(toDraft(loaded));
  const set = (patch: Partial<Draft>) => {
    setDraft((d) => (d ? { ...d, ...patch } : d));
    setSaved(false);
    setError(null);
  };

  const save = async (e: FormEvent) => {
    e.preventDefault();
    if (!draft) return;
    setSaving(true);
    setError(null);
    try {
      const answer = await api<{ settings: Settings }>("/api/v1/settings", {
        method: "PUT",
        body: fromDraft(draft),
      });
      settings.setData(answer);
      setSaved(true);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setSaving(false);
    }
  };

  return (
    <section className="panel" aria-labelledby="monitoring-title">
      <h2 className="panel-title" id="monitoring-title">
        Live monitoring
      </h2>
      {settings.error && <ErrorNotice message={settings.error} onRetry={settings.reload} />}
      {!draft ? (
        settings.loading && <Loading />
      ) : (
        <form className="form" onSubmit={save}>
          {!editable && <p className="muted">Only admins can change these settings.</p>}
          <fieldset className="form-grid" disabled={!editable}>
            <Field label="Stream detector" help="Runs on every live frame; blazeface is the fast one.">
              <select
                value={String(draft.stream_detector)}
                onChange={(e) => set({ stream_detector: e.target.value })}
              >
                {models.data ? (
                  <DetectorOptions detectors={models.data.detectors} />
                ) : (
                  <option value={String(draft.stream_detector)}>{String(draft.stream_detector)}</option>
                )}
              </select>
            </Field>
            <div className="field-wide detector-missing-slot">
              <DetectorMissing models={models} detector={String(draft.stream_detector)} isAdmin={editable} />
            </div>
            {NUMBER_FIELDS.map((f) => (
              <Field key={f.key} label={f.label} help={f.help}>
                <input
                  type="number"
                  min={f.min}
                  max={f.max}
                  step={f.step}
                  required={!f.optional}
                  placeholder={f.optional ? "default" : undefined}
                  value={String(draft[f.key])}
                  onChange={(e) => set({ [f.key]: e.target.value })}
                />
              </Field>
            ))}
            <div className="field checks">
              <label className="check">
                <input
                  type="checkbox"
                  checked={draft.snapshots === true}
                  onChange={(e) => set({ snapshots: e.target.checked })}
                />
                Save a snapshot with each violation
              </label>
              <label className="check">
                <input
                  type="checkbox"
                  checked={draft.blur_snapshots === true}
                  disabled={draft.snapshots !== true}
                  onChange={(e) => set({ blur_snapshots: e.target.checked })}
                />
                Blur faces in snapshots
              </label>
              <label className="check">
                <input
                  type="checkbox"
                  checked={draft.blur_others === true}
                  disabled={draft.snapshots !== true || draft.blur_snapshots === true}
                  onChange={(e) => set({ blur_others: e.target.checked })}
                />
                Blur everyone but the violator in the stored frame
              </label>
            </div>
          </fieldset>
          {error && (
            <p className="notice notice-error" role="alert">
              {error}
            </p>
          )}
          {editable && (
            <div className="actions">
              <button type="submit" className="button button-primary" disabled={saving || !dirty}>
                Save settings
              </button>
              <span className="muted" role="status">
                {saving ? "Saving…" : saved && !dirty ? "Settings saved." : dirty ? "Unsaved changes." : ""}
              </span>
            </div>
          )}
        </form>
      )}
    </section>
  );
}

function Field({ label, help, children }: { label: string; help: string; children: ReactNode }) {
  return (
    // biome-ignore lint/a11y/noLabelWithoutControl: the control is the child passed in
    <label className="field">
      <span>{label}</span>
      {children}
      <small className="help">{help}</small>
    </label>
  );
}

function Users({ currentUserId }: { currentUserId: string | null }) {
  const users = useFetch<{ users: UserRecord[] }>("/api/v1/users");
  const [confirmElement, confirm] = useConfirm();
  const [error, setError] = useState<string | null>(null);

  const remove = async (user: UserRecord) => {
    const ok = await confirm({
      title: "Delete user",
      message: `Delete ${user.username}? They are signed out everywhere.`,
      confirmLabel: "Delete user",
    });
    if (!ok) return;
    setError(null);
    try {
      await api(`/api/v1/users/${encodeURIComponent(user.id)}`, { method: "DELETE" });
      users.reload();
    } catch (err) {
      setError(errorMessage(err));
    }
  };

  const list = users.data?.users ?? [];
  return (
    <section className="panel" aria-labelledby="users-title">
      <h2 className="panel-title" id="users-title">
        Users
      </h2>
      <p className="muted">Admins change everything; viewers watch and upload images.</p>
      {error && <ErrorNotice message={error} />}
      {users.error && <ErrorNotice message={users.error} onRetry={users.reload} />}
      {!users.data ? (
        users.loading && <Loading />
      ) : list.length === 0 ? (
        <EmptyState title="No users yet." />
      ) : (
        <div className="table-wrap">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Username</th>
                <th scope="col">Role</th>
                <th scope="col">Created</th>
                <th scope="col">Last sign-in</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((u) => (
                <tr key={u.id} data-testid="user-row">
                  <td>
                    {u.username}
                    {u.id === currentUserId && <span className="muted"> (you)</span>}
                  </td>
                  <td>
                    <span className="badge badge-role">{u.role}</span>
                  </td>
                  <td>{formatTime(u.created_at)}</td>
                  <td>{u.last_login_at ? formatTime(u.last_login_at) : "Never"}</td>
                  <td className="actions-cell">
                    {u.id !== currentUserId && (
                      <button
                        type="button"
                        className="button button-small button-danger-quiet"
                        onClick={() => remove(u)}
                      >
                        Delete
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <AddUser onAdded={users.reload} />
      {confirmElement}
    </section>
  );
}

function AddUser({ onAdded }: { onAdded(): void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [error, setError] = useState<string | null>(null);
  const [added, setAdded] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setAdded(null);
    try {
      await api("/api/v1/users", { body: { username: username.trim(), password, role } });
      setAdded(`Added ${username.trim()} as ${role}.`);
      setUsername("");
      setPassword("");
      onAdded();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="form form-grid add-user" onSubmit={submit} aria-label="Add a user">
      <h3 className="field-wide">Add a user</h3>
      <label className="field">
        <span>Username</span>
        <input value={username} required autoComplete="off" onChange={(e) => setUsername(e.target.value)} />
      </label>
      <label className="field">
        <span>Password</span>
        <input
          type="password"
          value={password}
          required
          autoComplete="new-password"
          onChange={(e) => setPassword(e.target.value)}
        />
      </label>
      <label className="field">
        <span>Role</span>
        <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
          <option value="viewer">Viewer</option>
          <option value="admin">Admin</option>
        </select>
      </label>
      {error && (
        <p className="notice notice-error field-wide" role="alert">
          {error}
        </p>
      )}
      {added && (
        <p className="notice notice-success field-wide" role="status">
          {added}
        </p>
      )}
      <div className="field-wide">
        <button type="submit" className="button button-primary" disabled={busy}>
          Add user
        </button>
      </div>
    </form>
  );
}

function ChangePassword() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setDone(false);
    try {
      await api("/api/v1/auth/password", { body: { current_password: current, new_password: next } });
      setDone(true);
      setCurrent("");
      setNext("");
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel" aria-labelledby="password-title">
      <h2 className="panel-title" id="password-title">
        Your password
      </h2>
      <form className="form form-grid" onSubmit={submit}>
        <label className="field">
          <span>Current password</span>
          <input
            type="password"
            value={current}
            required
            autoComplete="current-password"
            onChange={(e) => setCurrent(e.target.value)}
          />
        </label>
        <label className="field">
          <span>New password</span>
          <input
            type="password"
            value={next}
            required
            autoComplete="new-password"
            onChange={(e) => setNext(e.target.value)}
          />
        </label>
        {error && (
          <p className="notice notice-error field-wide" role="alert">
            {error}
          </p>
        )}
        {done && (
          <p className="notice notice-success field-wide" role="status">
            Password changed.
          </p>
        )}
        <div className="field-wide">
          <button type="submit" className="button button-primary" disabled={busy}>
            Change password
          </button>
        </div>
      </form>
    </section>
  );
}
