import { type FormEvent, useState } from "react";
import { errorMessage } from "../api.ts";
import { AuthCard } from "../components/AuthCard.tsx";
import { useDocumentTitle, useFetch } from "../hooks.ts";
import { Redirect, useLocation } from "../router.tsx";
import { useSession } from "../session.tsx";

export function LoginPage() {
  useDocumentTitle("Sign in");
  const session = useSession();
  const { params } = useLocation();
  const setup = useFetch<{ needed: boolean }>("/api/v1/auth/setup");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  // A fresh install has no admin yet: the first visit creates one.
  if (setup.data?.needed) return <Redirect to={`/setup${window.location.search}`} />;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await session.signIn(username, password);
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };

  return (
    <AuthCard title="Sign in">
      {params.get("next") && <p className="muted">Sign in to continue.</p>}
      <form className="form" onSubmit={submit}>
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
            autoComplete="current-password"
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
          Sign in
        </button>
      </form>
    </AuthCard>
  );
}
