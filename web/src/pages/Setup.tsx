import { type FormEvent, useState } from "react";
import { errorMessage } from "../api.ts";
import { AuthCard } from "../components/AuthCard.tsx";
import { ErrorNotice, Loading } from "../components/Feedback.tsx";
import { useDocumentTitle, useFetch } from "../hooks.ts";
import { Link } from "../router.tsx";
import { useSession } from "../session.tsx";

/** First run: the one-time setup code from the server log makes the first admin. */
export function SetupPage() {
  useDocumentTitle("Set up");
  const session = useSession();
  const setup = useFetch<{ needed: boolean }>("/api/v1/auth/setup");
  const [setupCode, setSetupCode] = useState("");
  const [username, setUsername] = useState("admin");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await session.createAdmin(setupCode.trim(), username, password);
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };

  if (setup.loading && !setup.data) {
    return (
      <AuthCard title="Set up Maskwatch">
        <Loading />
      </AuthCard>
    );
  }
  if (setup.error) {
    return (
      <AuthCard title="Set up Maskwatch">
        <ErrorNotice message={setup.error} onRetry={setup.reload} />
      </AuthCard>
    );
  }
  if (!setup.data?.needed) {
    return (
      <AuthCard title="Set up Maskwatch">
        <p>Maskwatch already has an administrator.</p>
        <Link className="button button-primary" to={`/login${window.location.search}`}>
          Go to sign in
        </Link>
      </AuthCard>
    );
  }

  return (
    <AuthCard title="Create the first admin">
      <p className="muted">
        The setup code is printed in the server log when Maskwatch first starts without an admin.
      </p>
      <form className="form" onSubmit={submit}>
        <label className="field">
          <span>Setup code</span>
          <input
            name="setup_code"
            autoComplete="one-time-code"
            required
            spellCheck={false}
            value={setupCode}
            onChange={(e) => setSetupCode(e.target.value)}
          />
        </label>
        <label className="field">
          <span>Username</span>
          <input
            name="username"
            autoComplete="username"
            required
            value={username}
            onChange={(e) => setUsername(e.target.value)}
          />
        </label>
        <label className="field">
          <span>Password</span>
          <input
            name="password"
            type="password"
            autoComplete="new-password"
            required
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
        {error && (
          <p className="notice notice-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="button button-primary" disabled={busy}>
          Create admin
        </button>
      </form>
    </AuthCard>
  );
}
