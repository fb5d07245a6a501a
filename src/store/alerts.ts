/**
 * The alert repositories: webhooks and their deliveries, compliance rules, and the audit log of admin
 * actions. Validation of what users send lives here, like the other repositories (StoreError codes).
 */
import { randomBytes } from "node:crypto";
import type { Database } from "./db.ts";
import { StoreError } from "./sources.ts";

export const WEBHOOK_EVENTS = [
  "violation",
  "compliance_below",
  "compliance_recovered",
  "daily_summary",
] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number] | "ping";
export const DELIVERY_STATES = ["pending", "delivered", "failed"] as const;
export type DeliveryState = (typeof DELIVERY_STATES)[number];

const MAX_NAME = 100;
const MAX_URL = 2048;
const MIN_SECRET = 16;
const MAX_SECRET = 256;

export interface WebhookRecord {
  id: string;
  name: string;
  url: string;
  events: WebhookEvent[];
  /** Only this source's alerts; null: every source's. */
  sourceId: string | null;
  enabled: boolean;
  createdAt: number;
  updatedAt: number;
}

export interface WebhookWithSecret extends WebhookRecord {
  secret: string;
}

export interface NewWebhook {
  name: string;
  url: string;
  events: string[];
  sourceId?: string | null;
  /** Default: 32 random bytes as hex. */
  secret?: string;
  enabled?: boolean;
  now?: number;
}

export type WebhookPatch = Partial<Omit<NewWebhook, "now">>;

export interface DeliveryRecord {
  id: number;
  webhookId: string;
  event: WebhookEvent;
  payload: string;
  state: DeliveryState;
  attempts: number;
  responseStatus: number | null;
  error: string | null;
  createdAt: number;
  nextAttemptAt: number | null;
  lastAttemptAt: number | null;
  deliveredAt: number | null;
}

function invalid(
  code: "invalid_name" | "invalid_url" | "invalid_value" | "invalid_id",
  message: string,
): never {
  throw new StoreError(code, message);
}

function checkName(name: unknown): string {
  if (typeof name !== "string" || !name.trim() || name.length > MAX_NAME)
    invalid("invalid_name", `name is 1 to ${MAX_NAME} characters`);
  return name.trim();
}

/** http(s) only, no credentials in the URL (they would show in the list). */
export function checkWebhookUrl(url: unknown): string {
  if (typeof url !== "string" || url.length > MAX_URL) invalid("invalid_url", "url is an http(s) URL");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    invalid("invalid_url", "url is not a URL");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:")
    invalid("invalid_url", "url is http or https");
  if (parsed.username || parsed.password)
    invalid("invalid_url", "url must not hold credentials; the receiver checks the signature instead");
  return parsed.toString();
}

function checkEvents(events: unknown): WebhookEvent[] {
  if (!Array.isArray(events) || events.length === 0)
    invalid("invalid_value", `events is a non-empty list of: ${WEBHOOK_EVENTS.join(", ")}`);
  for (const e of events)
    if (!(WEBHOOK_EVENTS as readonly unknown[]).includes(e))
      invalid("invalid_value", `unknown event "${String(e)}"; events are: ${WEBHOOK_EVENTS.join(", ")}`);
  return [...new Set(events as WebhookEvent[])];
}

function checkSecret(secret: unknown): string {
  if (typeof secret !== "string" || secret.length < MIN_SECRET || secret.length > MAX_SECRET)
    invalid("invalid_value", `secret is ${MIN_SECRET} to ${MAX_SECRET} characters`);
  return secret;
}

interface WebhookRow {
  id: string;
  name: string;
  url: string;
  events: string;
  source_id: string | null;
  secret: string;
  enabled: number | boolean;
  created_at: number;
  updated_at: number;
}

function toWebhook(r: WebhookRow): WebhookWithSecret {
  return {
    id: r.id,
    name: r.name,
    url: r.url,
    events: JSON.parse(r.events) as WebhookEvent[],
    sourceId: r.source_id,
    secret: r.secret,
    enabled: Boolean(Number(r.enabled)),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

/** The record without its secret (what lists and answers show). */
export function publicWebhook(w: WebhookWithSecret): WebhookRecord {
  const { secret: _, ...rest } = w;
  return rest;
}

export async function createWebhook(db: Database, w: NewWebhook): Promise<WebhookWithSecret> {
  const now = w.now ?? Date.now();
  const record: WebhookWithSecret = {
    id: `whk_${randomBytes(5).toString("hex")}`,
    name: checkName(w.name),
    url: checkWebhookUrl(w.url),
    events: checkEvents(w.events),
    sourceId: w.sourceId ?? null,
    secret: w.secret === undefined ? randomBytes(32).toString("hex") : checkSecret(w.secret),
    enabled: w.enabled ?? true,
    createdAt: now,
    updatedAt: now,
  };
  await db.run(
    `INSERT INTO webhooks (id, name, url, events, source_id, secret, enabled, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    [
      record.id,
      record.name,
      record.url,
      JSON.stringify(record.events),
      record.sourceId,
      record.secret,
      record.enabled ? 1 : 0,
      now,
      now,
    ],
  );
  return record;
}

export async function listWebhooks(db: Database): Promise<WebhookWithSecret[]> {
  const rows = await db.query<WebhookRow>("SELECT * FROM webhooks ORDER BY created_at, id");
  return rows.map(toWebhook);
}

export async function getWebhook(db: Database, id: string): Promise<WebhookWithSecret> {
  const rows = await db.query<WebhookRow>("SELECT * FROM webhooks WHERE id = ?", [id]);
  if (!rows[0]) throw new StoreError("not_found", `no webhook ${id}`);
  return toWebhook(rows[0]);
}

export async function updateWebhook(
  db: Database,
  id: string,
  patch: WebhookPatch,
  now = Date.now(),
): Promise<WebhookWithSecret> {
  const w = await getWebhook(db, id);
  const next: WebhookWithSecret = {
    ...w,
    name: patch.name === undefined ? w.name : checkName(patch.name),
    url: patch.url === undefined ? w.url : checkWebhookUrl(patch.url),
    events: patch.events === undefined ? w.events : checkEvents(patch.events),
    sourceId: patch.sourceId === undefined ? w.sourceId : patch.sourceId,
    secret: patch.secret === undefined ? w.secret : checkSecret(patch.secret),
    enabled: patch.enabled ?? w.enabled,
    updatedAt: now,
  };
  await db.run(
    "UPDATE webhooks SET name = ?, url = ?, events = ?, source_id = ?, secret = ?, enabled = ?, updated_at = ? WHERE id = ?",
    [
      next.name,
      next.url,
      JSON.stringify(next.events),
      next.sourceId,
      next.secret,
      next.enabled ? 1 : 0,
      now,
      id,
    ],
  );
  return next;
}

/** Deletes the webhook and its deliveries. */
export async function deleteWebhook(db: Database, id: string): Promise<void> {
  const r = await db.run("DELETE FROM webhooks WHERE id = ?", [id]);
  if (r.changes === 0) throw new StoreError("not_found", `no webhook ${id}`);
}

// ---------------------------------------------------------------------------------------------
// Deliveries

interface DeliveryRow {
  id: number;
  webhook_id: string;
  event: string;
  payload: string;
  state: string;
  attempts: number;
  response_status: number | null;
  error: string | null;
  created_at: number;
  next_attempt_at: number | null;
  last_attempt_at: number | null;
  delivered_at: number | null;
}

const num = (v: number | null) => (v === null ? null : Number(v));

function toDelivery(r: DeliveryRow): DeliveryRecord {
  return {
    id: Number(r.id),
    webhookId: r.webhook_id,
    event: r.event as WebhookEvent,
    payload: r.payload,
    state: r.state as DeliveryState,
    attempts: Number(r.attempts),
    responseStatus: num(r.response_status),
    error: r.error,
    createdAt: Number(r.created_at),
    nextAttemptAt: num(r.next_attempt_at),
    lastAttemptAt: num(r.last_attempt_at),
    deliveredAt: num(r.delivered_at),
  };
}

/**
 * One pending delivery of `event` to each enabled webhook that subscribes to it (and to `sourceId`,
 * where the webhook names a source); `only` limits it to one webhook (test pings). Returns their ids.
 */
export async function enqueueDeliveries(
  db: Database,
  event: WebhookEvent,
  payload: unknown,
  opts: { sourceId?: string | null; only?: string; now?: number } = {},
): Promise<number[]> {
  const now = opts.now ?? Date.now();
  const hooks = (await listWebhooks(db)).filter(
    (w) =>
      (opts.only ? w.id === opts.only : w.enabled && w.events.includes(event)) &&
      (w.sourceId === null || opts.sourceId === undefined || w.sourceId === opts.sourceId),
  );
  const body = JSON.stringify(payload);
  const ids: number[] = [];
  for (const w of hooks) {
    const rows = await db.query<{ id: number }>(
      `INSERT INTO webhook_deliveries (webhook_id, event, payload, state, attempts, created_at, next_attempt_at)
       VALUES (?, ?, ?, 'pending', 0, ?, ?) RETURNING id`,
      [w.id, event, body, now, now],
    );
    ids.push(Number(rows[0].id));
  }
  return ids;
}

/**
 * Leases up to `limit` due pending deliveries to the caller until `leaseUntil`: none is handed to two
 * callers (replicas) at once, whatever the engine (the lease condition is re-checked on the row).
 */
export async function claimDueDeliveries(
  db: Database,
  now: number,
  leaseUntil: number,
  limit = 10,
): Promise<(DeliveryRecord & { url: string; secret: string })[]> {
  const rows = await db.query<{ id: number }>(
    `UPDATE webhook_deliveries SET claimed_until = ?
     WHERE id IN (SELECT id FROM webhook_deliveries
                  WHERE state = 'pending' AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)
                  ORDER BY next_attempt_at LIMIT ${Math.max(1, Math.floor(limit))})
       AND state = 'pending' AND (claimed_until IS NULL OR claimed_until < ?)
     RETURNING id`,
    [leaseUntil, now, now, now],
  );
  if (!rows.length) return [];
  const ids = rows.map((r) => Number(r.id));
  const full = await db.query<DeliveryRow & { url: string; secret: string }>(
    `SELECT d.*, w.url AS url, w.secret AS secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
     WHERE d.id IN (${ids.map(() => "?").join(", ")}) ORDER BY d.next_attempt_at, d.id`,
    ids,
  );
  return full.map((r) => ({ ...toDelivery(r), url: r.url, secret: r.secret }));
}

/** Records one attempt: delivered, failed for good, or pending again at `retryAt`. */
export async function recordAttempt(
  db: Database,
  id: number,
  outcome: { ok: boolean; status: number | null; error: string | null; at: number; retryAt: number | null },
): Promise<void> {
  const state: DeliveryState = outcome.ok ? "delivered" : outcome.retryAt === null ? "failed" : "pending";
  await db.run(
    `UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, response_status = ?, error = ?,
       last_attempt_at = ?, next_attempt_at = ?, delivered_at = ?, claimed_until = NULL WHERE id = ?`,
    [
      state,
      outcome.status,
      outcome.error === null ? null : outcome.error.slice(0, 500),
      outcome.at,
      outcome.ok ? null : outcome.retryAt,
      outcome.ok ? outcome.at : null,
      id,
    ],
  );
}

export async function listDeliveries(db: Database, webhookId: string, limit = 50): Promise<DeliveryRecord[]> {
  await getWebhook(db, webhookId);
  const n = Math.min(500, Math.max(1, Math.floor(limit)));
  const rows = await db.query<DeliveryRow>(
    `SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ${n}`,
    [webhookId],
  );
  return rows.map(toDelivery);
}

export async function getDelivery(db: Database, webhookId: string, id: number): Promise<DeliveryRecord> {
  const rows = Number.isSafeInteger(id)
    ? await db.query<DeliveryRow>("SELECT * FROM webhook_deliveries WHERE id = ? AND webhook_id = ?", [
        id,
        webhookId,
      ])
    : [];
  if (!rows[0]) throw new StoreError("not_found", `no delivery ${id} of webhook ${webhookId}`);
  return toDelivery(rows[0]);
}

/** Sends a delivery again from its first attempt (same payload and id), whatever its state. */
export async function resendDelivery(
  db: Database,
  webhookId: string,
  id: number,
  now = Date.now(),
): Promise<DeliveryRecord> {
  await getDelivery(db, webhookId, id);
  await db.run(
    `UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, claimed_until = NULL,
       error = NULL, response_status = NULL, delivered_at = NULL WHERE id = ?`,
    [now, id],
  );
  return getDelivery(db, webhookId, id);
}

// ---------------------------------------------------------------------------------------------
// Compliance rules

export interface AlertRuleRecord {
  id: string;
  name: string;
  /** Only this source's faces; null: all sources together. */
  sourceId: string | null;
  /** Only faces in zones of this name; null: wherever they are. */
  zone: string | null;
  /** Alert when the share of faces wearing a mask correctly falls under this (0–100). */
  belowPercent: number;
  windowMinutes: number;
  /** Faces needed in the window before the rate means anything. */
  minFaces: number;
  enabled: boolean;
  /** Under the threshold now (alerted once; re-armed when it recovers). */
  firing: boolean;
  lastFiredAt: number | null;
  createdAt: number;
  updatedAt: number;
}

export interface NewAlertRule {
  name: string;
  sourceId?: string | null;
  zone?: string | null;
  belowPercent: number;
  windowMinutes: number;
  minFaces?: number;
  enabled?: boolean;
  now?: number;
}

interface RuleRow {
  id: string;
  name: string;
  source_id: string | null;
  zone: string | null;
  below_percent: number;
  window_minutes: number;
  min_faces: number;
  enabled: number | boolean;
  firing: number | boolean;
  last_fired_at: number | null;
  created_at: number;
  updated_at: number;
}

function toRule(r: RuleRow): AlertRuleRecord {
  return {
    id: r.id,
    name: r.name,
    sourceId: r.source_id,
    zone: r.zone,
    belowPercent: Number(r.below_percent),
    windowMinutes: Number(r.window_minutes),
    minFaces: Number(r.min_faces),
    enabled: Boolean(Number(r.enabled)),
    firing: Boolean(Number(r.firing)),
    lastFiredAt: num(r.last_fired_at),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

function checkRule(r: { belowPercent: unknown; windowMinutes: unknown; minFaces: unknown }): void {
  const p = r.belowPercent;
  if (typeof p !== "number" || !(p > 0 && p <= 100))
    invalid("invalid_value", "below_percent is over 0 and at most 100");
  const w = r.windowMinutes;
  if (!Number.isInteger(w) || (w as number) < 1 || (w as number) > 10_080)
    invalid("invalid_value", "window_minutes is a whole number from 1 to 10080 (a week)");
  const m = r.minFaces;
  if (!Number.isInteger(m) || (m as number) < 1 || (m as number) > 1_000_000)
    invalid("invalid_value", "min_faces is a whole number from 1");
}

function checkZoneName(zone: unknown): string {
  if (typeof zone !== "string" || !zone.trim() || zone.length > 100)
    invalid("invalid_value", "zone is a zone's name, 1 to 100 characters");
  return zone.trim();
}

export async function createAlertRule(db: Database, r: NewAlertRule): Promise<AlertRuleRecord> {
  const now = r.now ?? Date.now();
  const rule: AlertRuleRecord = {
    id: `rule_${randomBytes(5).toString("hex")}`,
    name: checkName(r.name),
    sourceId: r.sourceId ?? null,
    zone: r.zone == null ? null : checkZoneName(r.zone),
    belowPercent: r.belowPercent,
    windowMinutes: r.windowMinutes,
    minFaces: r.minFaces ?? 10,
    enabled: r.enabled ?? true,
    firing: false,
    lastFiredAt: null,
    createdAt: now,
    updatedAt: now,
  };
  checkRule(rule);
  await db.run(
    `INSERT INTO alert_rules (id, name, source_id, zone, below_percent, window_minutes, min_faces, enabled, firing,
       last_fired_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, ?)`,
    [
      rule.id,
      rule.name,
      rule.sourceId,
      rule.zone,
      rule.belowPercent,
      rule.windowMinutes,
      rule.minFaces,
      rule.enabled ? 1 : 0,
      now,
      now,
    ],
  );
  return rule;
}

export async function listAlertRules(db: Database): Promise<AlertRuleRecord[]> {
  return (await db.query<RuleRow>("SELECT * FROM alert_rules ORDER BY created_at, id")).map(toRule);
}

export async function getAlertRule(db: Database, id: string): Promise<AlertRuleRecord> {
  const rows = await db.query<RuleRow>("SELECT * FROM alert_rules WHERE id = ?", [id]);
  if (!rows[0]) throw new StoreError("not_found", `no alert rule ${id}`);
  return toRule(rows[0]);
}

export async function deleteAlertRule(db: Database, id: string): Promise<void> {
  const r = await db.run("DELETE FROM alert_rules WHERE id = ?", [id]);
  if (r.changes === 0) throw new StoreError("not_found", `no alert rule ${id}`);
}

/**
 * Moves a rule between armed and firing; true only for the caller whose update changed it, so with
 * several replicas evaluating the same rule exactly one alerts.
 */
export async function setRuleFiring(
  db: Database,
  id: string,
  firing: boolean,
  now: number,
): Promise<boolean> {
  const r = firing
    ? await db.run("UPDATE alert_rules SET firing = 1, last_fired_at = ? WHERE id = ? AND firing = 0", [
        now,
        id,
      ])
    : await db.run("UPDATE alert_rules SET firing = 0 WHERE id = ? AND firing = 1", [id]);
  return r.changes === 1;
}

// ---------------------------------------------------------------------------------------------
// Audit log

export interface AuditEntry {
  id: number;
  at: number;
  /** `user:<name>`, `key:<name>` or `anonymous` (auth off). */
  actor: string;
  action: string;
  target: string | null;
  detail: Record<string, unknown> | null;
}

export async function recordAudit(
  db: Database,
  entry: {
    actor: string;
    action: string;
    target?: string | null;
    detail?: Record<string, unknown>;
    at?: number;
  },
): Promise<void> {
  await db.run("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)", [
    entry.at ?? Date.now(),
    entry.actor.slice(0, 200),
    entry.action.slice(0, 200),
    entry.target?.slice(0, 500) ?? null,
    entry.detail ? JSON.stringify(entry.detail).slice(0, 4000) : null,
  ]);
}

export async function listAudit(
  db: Database,
  opts: { from?: number; to?: number; limit?: number } = {},
): Promise<AuditEntry[]> {
  const where: string[] = [];
  const params: number[] = [];
  if (opts.from !== undefined) {
    where.push("at >= ?");
    params.push(opts.from);
  }
  if (opts.to !== undefined) {
    where.push("at < ?");
    params.push(opts.to);
  }
  const n = Math.min(1000, Math.max(1, Math.floor(opts.limit ?? 100)));
  const rows = await db.query<{
    id: number;
    at: number;
    actor: string;
    action: string;
    target: string | null;
    detail: string | null;
  }>(
    `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ${n}`,
    params,
  );
  return rows.map((r) => ({
    id: Number(r.id),
    at: Number(r.at),
    actor: r.actor,
    action: r.action,
    target: r.target,
    detail: r.detail ? (JSON.parse(r.detail) as Record<string, unknown>) : null,
  }));
}
