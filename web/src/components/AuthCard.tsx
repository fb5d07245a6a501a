import type { ReactNode } from "react";
import { Logo } from "./Layout.tsx";

/** The centred card the sign-in and setup pages share. */
export function AuthCard({ title, children }: { title: string; children: ReactNode }) {
  return (
    <div className="center-screen">
      <main className="auth-card">
        <p className="auth-brand">
          <Logo /> Maskwatch
        </p>
        <h1 className="auth-title">{title}</h1>
        {children}
      </main>
    </div>
  );
}
