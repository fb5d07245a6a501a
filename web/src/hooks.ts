import { type Dispatch, type SetStateAction, useCallback, useEffect, useRef, useState } from "react";
import { api, errorMessage, isAbort } from "./api.ts";

export interface Resource<T> {
  data: T | undefined;
  error: string | null;
  loading: boolean;
  reload(): void;
  setData: Dispatch<SetStateAction<T | undefined>>;
}

/**
 * GET `path` (nothing while it is null), again whenever it changes, and every `refreshMs` while
 * the page is visible. A refresh keeps the data shown; only its error replaces it.
 */
export function useFetch<T>(path: string | null, refreshMs?: number): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(path !== null);
  const [generation, setGeneration] = useState(0);

  // biome-ignore lint/correctness/useExhaustiveDependencies: generation is the reload trigger
  useEffect(() => {
    if (path === null) {
      setLoading(false);
      return;
    }
    let controller = new AbortController();
    const load = async () => {
      try {
        const result = await api<T>(path, { signal: controller.signal });
        setData(result);
        setError(null);
      } catch (err) {
        if (!isAbort(err)) setError(errorMessage(err));
      } finally {
        if (!controller.signal.aborted) setLoading(false);
      }
    };
    setLoading(true);
    load();
    const timer =
      refreshMs === undefined
        ? undefined
        : window.setInterval(() => {
            if (document.hidden) return;
            controller.abort();
            controller = new AbortController();
            load();
          }, refreshMs);
    return () => {
      controller.abort();
      window.clearInterval(timer);
    };
  }, [path, refreshMs, generation]);

  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  return { data, error, loading, reload, setData };
}

export type FeedState = "connecting" | "open" | "reconnecting";

/**
 * Server-Sent Events from `url` (none while null) with a handler per event type; the browser
 * reconnects by itself after a drop. Handlers may change every render without reconnecting.
 */
export function useEventSource(
  url: string | null,
  handlers: Record<string, (data: unknown) => void>,
): FeedState {
  const [state, setState] = useState<FeedState>("connecting");
  const current = useRef(handlers);
  current.current = handlers;
  const types = Object.keys(handlers).sort().join(",");

  useEffect(() => {
    if (url === null) return;
    const source = new EventSource(url);
    setState("connecting");
    source.onopen = () => setState("open");
    source.onerror = () => setState("reconnecting");
    for (const type of types.split(",")) {
      source.addEventListener(type, (e: MessageEvent<string>) => {
        let data: unknown;
        try {
          data = JSON.parse(e.data);
        } catch {
          return; // a malformed message is skipped; the feed goes on
        }
        current.current[type]?.(data);
      });
    }
    return () => source.close();
  }, [url, types]);

  return state;
}

/** `value`, once it has stayed the same for `ms`. */
export function useDebounced<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = window.setTimeout(() => setSettled(value), ms);
    return () => window.clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

export function useDocumentTitle(title: string): void {
  useEffect(() => {
    document.title = `${title} · Maskwatch`;
  }, [title]);
}
