import type { FastifyInstance } from "fastify";
import { WEBHOOK_HOSTS } from "../../alerts/webhooks.ts";
import {
  type AlertRuleRecord,
  checkWebhookUrl,
  createAlertRule,
  createWebhook,
  type DeliveryRecord,
  deleteAlertRule,
  deleteWebhook,
  getAlertRule,
  getDelivery,
  getWebhook,
  listAlertRules,
  listAudit,
  listDeliveries,
  listWebhooks,
  publicWebhook,
  resendDelivery,
  updateWebhook,
  WEBHOOK_EVENTS,
  type WebhookRecord,
} from "../../store/alerts.ts";
import { checkUrlHost, SourcePolicyError } from "../../streams/source-policy.ts";
import { requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";

const webhookProperties = {
  name: { type: "string", minLength: 1, maxLength: 100 },
  url: { type: "string", minLength: 1, maxLength: 2048, description: "http(s) URL the alerts are POSTed to" },
  events: {
    type: "array",
    items: { type: "string", enum: [...WEBHOOK_EVENTS] },
    minItems: 1,
    description: "violation, compliance_below, compliance_recovered, daily_summary",
  },
  source_id: { type: ["string", "null"], maxLength: 128, description: "only this source's alerts" },
  secret: {
    type: "string",
    minLength: 16,
    maxLength: 256,
    description: "signs each delivery (HMAC-SHA256); made for you when left out, shown once",
  },
  enabled: { type: "boolean" },
} as const;

interface WebhookBody {
  name?: string;
  url?: string;
  events?: string[];
  source_id?: string | null;
  secret?: string;
  enabled?: boolean;
}

function webhookJson(w: WebhookRecord) {
  return {
    id: w.id,
    name: w.name,
    url: w.url,
    events: w.events,
    source_id: w.sourceId,
    enabled: w.enabled,
    created_at: new Date(w.createdAt).toISOString(),
    updated_at: new Date(w.updatedAt).toISOString(),
  };
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function deliveryJson(d: DeliveryRecord) {
  let payload: unknown = d.payload;
  try {
    payload = JSON.parse(d.payload);
  } catch {
    // stored as sent
  }
  return {
    id: d.id,
    webhook_id: d.webhookId,
    event: d.event,
    state: d.state,
    attempts: d.attempts,
    response_status: d.responseStatus,
    error: d.error,
    created_at: iso(d.createdAt),
    last_attempt_at: iso(d.lastAttemptAt),
    next_attempt_at: d.state === "pending" ? iso(d.nextAttemptAt) : null,
    delivered_at: iso(d.deliveredAt),
    payload,
  };
}

function ruleJson(r: AlertRuleRecord) {
  return {
    id: r.id,
    name: r.name,
    source_id: r.sourceId,
    zone: r.zone,
    below_percent: r.belowPercent,
    window_minutes: r.windowMinutes,
    min_faces: r.minFaces,
    enabled: r.enabled,
    firing: r.firing,
    last_fired_at: iso(r.lastFiredAt),
    created_at: iso(r.createdAt),
  };
}

/**
 * Alerts for an admin: webhooks (signed deliveries, their log, re-sending, a test ping), compliance
 * rules, and the audit log of admin actions.
 */
export async function alertRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  app.addHook("onRequest", async (request) => requireScope(request, "admin", ctx.config.auth));

  const checkHost = async (url: string | undefined) => {
    if (url === undefined) return;
    checkWebhookUrl(url);
    try {
      await checkUrlHost(url, ctx.config.alerts.allow, WEBHOOK_HOSTS);
    } catch (err) {
      if (err instanceof SourcePolicyError) throw new HttpError(400, "invalid_url", err.message);
      throw err;
    }
  };

  app.post<{ Body: WebhookBody }>(
    "/api/v1/webhooks",
    {
      config: { audit: "webhook.create" },
      schema: {
        summary: "Add a webhook (the secret is in this answer only)",
        tags: ["alerts"],
        body: {
          type: "object",
          required: ["name", "url", "events"],
          properties: webhookProperties,
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const b = request.body;
      await checkHost(b.url);
      const w = await createWebhook(ctx.db, {
        name: b.name as string,
        url: b.url as string,
        events: b.events as string[],
        sourceId: b.source_id ?? null,
        secret: b.secret,
        enabled: b.enabled,
      });
      reply.status(201);
      return { ...webhookJson(w), secret: w.secret };
    },
  );

  app.get(
    "/api/v1/webhooks",
    { schema: { summary: "Webhooks (never their secrets)", tags: ["alerts"] } },
    async () => ({
      webhooks: (await listWebhooks(ctx.db)).map((w) => webhookJson(publicWebhook(w))),
    }),
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/webhooks/:id",
    { schema: { summary: "One webhook", tags: ["alerts"] } },
    async (request) => webhookJson(publicWebhook(await getWebhook(ctx.db, request.params.id))),
  );

  app.patch<{ Params: { id: string }; Body: WebhookBody }>(
    "/api/v1/webhooks/:id",
    {
      config: { audit: "webhook.update" },
      schema: {
        summary: "Change a webhook (a new secret takes effect at the next delivery)",
        tags: ["alerts"],
        body: { type: "object", properties: webhookProperties, additionalProperties: false },
      },
    },
    async (request) => {
      const b = request.body;
      await checkHost(b.url);
      const w = await updateWebhook(ctx.db, request.params.id, {
        name: b.name,
        url: b.url,
        events: b.events,
        sourceId: b.source_id,
        secret: b.secret,
        enabled: b.enabled,
      });
      return webhookJson(publicWebhook(w));
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/api/v1/webhooks/:id",
    {
      config: { audit: "webhook.delete" },
      schema: { summary: "Remove a webhook and its log", tags: ["alerts"] },
    },
    async (request) => {
      await deleteWebhook(ctx.db, request.params.id);
      return { status: "ok" };
    },
  );

  app.post<{ Params: { id: string } }>(
    "/api/v1/webhooks/:id/test",
    { schema: { summary: "Send a `ping` delivery to this webhook now", tags: ["alerts"] } },
    async (request, reply) => {
      const w = await getWebhook(ctx.db, request.params.id);
      const [id] = await ctx.alerts.alert("ping", { webhook_id: w.id, name: w.name }, undefined, w.id);
      reply.status(202);
      return deliveryJson(await getDelivery(ctx.db, w.id, id));
    },
  );

  app.get<{ Params: { id: string }; Querystring: { limit?: number } }>(
    "/api/v1/webhooks/:id/deliveries",
    {
      schema: {
        summary: "A webhook's deliveries, newest first: state, attempts, last answer, payload",
        tags: ["alerts"],
        querystring: {
          type: "object",
          properties: { limit: { type: "integer", minimum: 1, maximum: 500 } },
          additionalProperties: false,
        },
      },
    },
    async (request) => ({
      deliveries: (await listDeliveries(ctx.db, request.params.id, request.query.limit ?? 50)).map(
        deliveryJson,
      ),
    }),
  );

  app.post<{ Params: { id: string; delivery: number } }>(
    "/api/v1/webhooks/:id/deliveries/:delivery/resend",
    {
      config: { audit: "webhook.resend" },
      schema: {
        summary: "Send a delivery again (same payload and id, attempts from the start)",
        tags: ["alerts"],
        params: {
          type: "object",
          properties: { id: { type: "string" }, delivery: { type: "integer", minimum: 1 } },
          required: ["id", "delivery"],
        },
      },
    },
    async (request, reply) => {
      const d = await resendDelivery(ctx.db, request.params.id, request.params.delivery);
      ctx.alerts.dispatcher.kick();
      reply.status(202);
      return deliveryJson(d);
    },
  );

  app.post<{
    Body: {
      name: string;
      source_id?: string | null;
      zone?: string | null;
      below_percent: number;
      window_minutes: number;
      min_faces?: number;
    };
  }>(
    "/api/v1/alert-rules",
    {
      config: { audit: "alert_rule.create" },
      schema: {
        summary: "Alert when compliance falls under below_percent over the last window_minutes",
        tags: ["alerts"],
        body: {
          type: "object",
          required: ["name", "below_percent", "window_minutes"],
          properties: {
            name: { type: "string", minLength: 1, maxLength: 100 },
            source_id: {
              type: ["string", "null"],
              maxLength: 128,
              description: "null: all sources together",
            },
            zone: {
              type: ["string", "null"],
              maxLength: 100,
              description: "only faces in zones of this name",
            },
            below_percent: { type: "number", exclusiveMinimum: 0, maximum: 100 },
            window_minutes: { type: "integer", minimum: 1, maximum: 10080 },
            min_faces: {
              type: "integer",
              minimum: 1,
              description: "faces needed in the window (default 10)",
            },
          },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const rule = await createAlertRule(ctx.db, {
        name: b.name,
        sourceId: b.source_id ?? null,
        zone: b.zone ?? null,
        belowPercent: b.below_percent,
        windowMinutes: b.window_minutes,
        minFaces: b.min_faces,
      });
      void ctx.alerts.tick();
      reply.status(201);
      return ruleJson(rule);
    },
  );

  app.get(
    "/api/v1/alert-rules",
    { schema: { summary: "Compliance rules and whether each is firing", tags: ["alerts"] } },
    async () => ({
      rules: (await listAlertRules(ctx.db)).map(ruleJson),
    }),
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/alert-rules/:id",
    { schema: { summary: "One compliance rule", tags: ["alerts"] } },
    async (request) => ruleJson(await getAlertRule(ctx.db, request.params.id)),
  );

  app.delete<{ Params: { id: string } }>(
    "/api/v1/alert-rules/:id",
    {
      config: { audit: "alert_rule.delete" },
      schema: { summary: "Remove a compliance rule", tags: ["alerts"] },
    },
    async (request) => {
      await deleteAlertRule(ctx.db, request.params.id);
      return { status: "ok" };
    },
  );

  app.get<{ Querystring: { from?: string; to?: string; limit?: number } }>(
    "/api/v1/audit",
    {
      schema: {
        summary: "The audit log of admin actions, newest first",
        tags: ["alerts"],
        querystring: {
          type: "object",
          properties: {
            from: { type: "string", format: "date-time" },
            to: { type: "string", format: "date-time" },
            limit: { type: "integer", minimum: 1, maximum: 1000 },
          },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      const q = request.query;
      const entries = await listAudit(ctx.db, {
        from: q.from ? Date.parse(q.from) : undefined,
        to: q.to ? Date.parse(q.to) : undefined,
        limit: q.limit,
      });
      return {
        entries: entries.map((e) => ({
          id: e.id,
          time: new Date(e.at).toISOString(),
          actor: e.actor,
          action: e.action,
          target: e.target,
          detail: e.detail,
        })),
      };
    },
  );
}
