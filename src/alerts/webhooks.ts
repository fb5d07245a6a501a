/**
 * Sends webhook deliveries: due rows are leased from the database (so replicas share the work and
 * none is sent twice at once), POSTed with an HMAC-SHA256 signature, and recorded with the answer;
 * a failure is retried with exponential backoff until the attempts run out.
 */
import { createHmac } from "node:crypto";
import { claimDueDeliveries, recordAttempt } from "../store/alerts.ts";
import type { Database } from "../store/db.ts";
import { checkUrlHost } from "../streams/source-policy.ts";

export interface WebhookSettings {
  /** First retry after this; each further one waits 4× longer (MASKWATCH_WEBHOOK_RETRY_MS). */
  retryBaseMs: number;
  /** Attempts before a delivery is marked failed (MASKWATCH_WEBHOOK_ATTEMPTS). */
  attempts: number;
  /** Where webhooks may point (MASKWATCH_WEBHOOK_ALLOW); link-local and metadata hosts are refused otherwise. */
  allow: readonly string[];
  /** How long one POST may take. */
  timeoutMs: number;
  /** How often due deliveries are looked for (a local alert is sent at once). */
  pollMs: number;
}

export const DEFAULT_WEBHOOK_SETTINGS: WebhookSettings = {
  retryBaseMs: 10_000,
  attempts: 6,
  allow: [],
  timeoutMs: 10_000,
  pollMs: 1_000,
};

/** How webhook hosts are named in policy errors. */
export const WEBHOOK_HOSTS = { noun: "webhook", setting: "MASKWATCH_WEBHOOK_ALLOW" } as const;

export const SIGNATURE_HEADER = "x-maskwatch-signature";
export const TIMESTAMP_HEADER = "x-maskwatch-timestamp";

/** `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` under the webhook's secret. */
export function signDelivery(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

/** When the attempt after `attempts` failed ones happens, or null when they are used up. */
export function nextRetryAt(now: number, attemptsMade: number, settings: WebhookSettings): number | null {
  if (attemptsMade >= settings.attempts) return null;
  return now + settings.retryBaseMs * 4 ** (attemptsMade - 1);
}

type Warn = (obj: object, msg: string) => void;

export class WebhookDispatcher {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private readonly inFlight = new Set<AbortController>();

  constructor(
    private readonly db: Database,
    private readonly settings: WebhookSettings,
    private readonly warn?: Warn,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.kick(), this.settings.pollMs);
    this.timer.unref();
    this.kick();
  }

  /** Looks for due deliveries now (after an alert was queued here). */
  kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .catch((err) => this.warn?.({ err }, "webhook deliveries: the database could not be read"))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async drain(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const now = Date.now();
      // The lease outlasts one POST's timeout, so a delivery is never sent by two replicas at once.
      const due = await claimDueDeliveries(this.db, now, now + this.settings.timeoutMs + 30_000, 8);
      if (!due.length) return;
      await Promise.all(due.map((d) => this.send(d)));
    }
  }

  private async send(d: Awaited<ReturnType<typeof claimDueDeliveries>>[number]): Promise<void> {
    const timestamp = Math.floor(Date.now() / 1000);
    let status: number | null = null;
    let error: string | null = null;
    const abort = new AbortController();
    this.inFlight.add(abort);
    const timer = setTimeout(() => abort.abort(), this.settings.timeoutMs);
    try {
      // Checked again at each send: the name may resolve elsewhere now than when it was saved.
      await checkUrlHost(d.url, this.settings.allow, WEBHOOK_HOSTS);
      const res = await fetch(d.url, {
        method: "POST",
        redirect: "manual",
        signal: abort.signal,
        headers: {
          "content-type": "application/json",
          "user-agent": "maskwatch-webhook",
          "x-maskwatch-event": d.event,
          "x-maskwatch-delivery": String(d.id),
          [TIMESTAMP_HEADER]: String(timestamp),
          [SIGNATURE_HEADER]: signDelivery(d.secret, timestamp, d.payload),
        },
        body: d.payload,
      });
      status = res.status;
      await res.body?.cancel().catch(() => {});
      if (status < 200 || status >= 300) error = `answered ${status}`;
    } catch (err) {
      error = abort.signal.aborted
        ? `no answer within ${this.settings.timeoutMs} ms`
        : err instanceof Error
          ? (err.cause instanceof Error ? err.cause.message : err.message) || err.name
          : String(err);
    } finally {
      clearTimeout(timer);
      this.inFlight.delete(abort);
    }
    const at = Date.now();
    const ok = error === null;
    const retryAt = ok ? null : nextRetryAt(at, d.attempts + 1, this.settings);
    if (!ok)
      this.warn?.(
        { delivery: d.id, webhook: d.webhookId, error, retryAt },
        retryAt === null ? "webhook delivery failed for good" : "webhook delivery failed; will retry",
      );
    await recordAttempt(this.db, d.id, { ok, status, error, at, retryAt });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    for (const a of this.inFlight) a.abort();
    await this.running;
  }
}
