/** Who is using the console: loaded once, changed by signing in/out, lost on any 401 not_logged_in. */
import { createContext, type ReactNode, useCallback, useContext, useEffect, useMemo, useState } from "react";
import {
  ApiError,
  api,
  onNotLoggedIn,
  type SessionInfo,
  type SignedIn,
  setCsrfToken,
  type User,
} from "./api.ts";

export type SessionState =
  | { status: "loading" }
  | { status: "failed"; message: string }
  | { status: "signed-out" }
  | { status: "signed-in"; auth: boolean; user: User | null };

export interface Session {
  state: SessionState;
  user: User | null;
  /** False when the server runs without authentication: no login, everything allowed. */
  authEnabled: boolean;
  isAdmin: boolean;
  reload(): void;
  signIn(username: string, password: string): Promise<void>;
  createAdmin(setupCode: string, username: string, password: string): Promise<void>;
  signOut(): Promise<void>;
}

const SessionContext = createContext<Session | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<SessionState>({ status: "loading" });

  const load = useCallback(async () => {
    try {
      const info = await api<SessionInfo>("/api/v1/auth/session");
      setCsrfToken(info.csrf_token);
      // Signed out is a 401, or (equally) an answer with authentication on and no user.
      setState(
        info.auth && !info.user
          ? { status: "signed-out" }
          : { status: "signed-in", auth: info.auth, user: info.user },
      );
    } catch (err) {
      setCsrfToken(null);
      if (err instanceof ApiError && err.status === 401) setState({ status: "signed-out" });
      else setState({ status: "failed", message: (err as Error).message });
    }
  }, []);

  useEffect(() => {
    load();
    onNotLoggedIn(() => {
      setCsrfToken(null);
      setState({ status: "signed-out" });
    });
    return () => onNotLoggedIn(null);
  }, [load]);

  const value = useMemo<Session>(() => {
    const signedIn = (answer: SignedIn) => {
      setCsrfToken(answer.csrf_token);
      setState({ status: "signed-in", auth: true, user: answer.user });
    };
    const user = state.status === "signed-in" ? state.user : null;
    const authEnabled = state.status !== "signed-in" || state.auth;
    return {
      state,
      user,
      authEnabled,
      isAdmin: state.status === "signed-in" && (!state.auth || state.user?.role === "admin"),
      reload: () => {
        setState({ status: "loading" });
        load();
      },
      signIn: async (username, password) =>
        signedIn(await api<SignedIn>("/api/v1/auth/login", { body: { username, password } })),
      createAdmin: async (setup_code, username, password) =>
        signedIn(await api<SignedIn>("/api/v1/auth/setup", { body: { setup_code, username, password } })),
      signOut: async () => {
        try {
          await api("/api/v1/auth/logout", { method: "POST" });
        } finally {
          setCsrfToken(null);
          setState({ status: "signed-out" });
        }
      },
    };
  }, [state, load]);

  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside SessionProvider");
  return session;
}
