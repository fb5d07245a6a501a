import type { ReactNode } from "react";
import type { FeedState } from "../hooks.ts";

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <p className="loading" role="status">
      <span className="spinner" aria-hidden="true" />
      {label}
    </p>
  );
}

export function ErrorNotice({ message, onRetry }: { message: string; onRetry?: () => void }) {
  return (
    <div className="notice notice-error" role="alert">
      <span>{message}</span>
      {onRetry && (
        <button type="button" className="button button-small" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <p className="empty-title">{title}</p>
      {children && <div className="empty-body">{children}</div>}
    </div>
  );
}

/** Whether a live (Server-Sent Events) feed is connected. */
export function FeedIndicator({ state }: { state: FeedState }) {
  const text = { connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…" }[state];
  return (
    <span className={`feed-state feed-state-${state}`} role="status">
      <span className="dot" aria-hidden="true" />
      {text}
    </span>
  );
}
