import { useState } from "react";
import { api, type DetectorInfo, errorMessage, type ModelsInfo, type PullAnswer } from "../api.ts";
import type { Resource } from "../hooks.ts";

/** Whether the server has the detector's models (older servers do not say: assume so). */
export function isInstalled(d: DetectorInfo | undefined): boolean {
  return d?.installed !== false;
}

export function detectorOptionText(d: DetectorInfo): string {
  return isInstalled(d) ? d.id : `${d.id} (not installed)`;
}

/** The detectors as <option>s, the missing ones marked. */
export function DetectorOptions({ detectors }: { detectors: readonly DetectorInfo[] }) {
  return (
    <>
      {detectors.map((d) => (
        <option key={d.id} value={d.id} title={d.description}>
          {detectorOptionText(d)}
        </option>
      ))}
    </>
  );
}

/**
 * Shown under a detector select while the chosen detector is not installed: admins may pull it
 * (POST /api/v1/models/pull), everyone else is told to ask one.
 */
export function DetectorMissing({
  models,
  detector,
  isAdmin,
}: {
  models: Resource<ModelsInfo>;
  detector: string;
  isAdmin: boolean;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const info = models.data?.detectors.find((d) => d.id === detector);

  const install = async () => {
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const answer = await api<PullAnswer>("/api/v1/models/pull", { body: { detector } });
      setDone(`Installed ${answer.detector}.`);
      models.reload();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  if (done && isInstalled(info))
    return (
      <p className="notice notice-success" role="status">
        {done}
      </p>
    );
  if (!info || isInstalled(info)) return null;
  return (
    <div className="notice notice-warning detector-missing" data-testid="detector-missing">
      {isAdmin ? (
        <>
          <span>
            <strong>{detector}</strong> is not installed on the server ({info.models.join(", ")}).
          </span>
          <button type="button" className="button button-small" onClick={install} disabled={busy}>
            {busy ? "Installing…" : "Install"}
          </button>
        </>
      ) : (
        <span>
          <strong>{detector}</strong>: not installed — ask an admin to install it.
        </span>
      )}
      {error && (
        <p className="detector-error" role="alert">
          Could not install {detector}: {error}
        </p>
      )}
    </div>
  );
}
