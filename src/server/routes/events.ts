import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { isAbsolute, join, normalize } from "node:path";
import { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply } from "fastify";
import {
  acknowledgeEvent,
  type EventRecord,
  eventJson,
  eventStats,
  eventTotals,
  getEvent,
  getFrame,
  getSnapshot,
  listEvents,
  SNAPSHOT_IN_DATABASE,
} from "../../store/events.ts";
import { buildReport, reportCsv } from "../../store/reports.ts";
import { eraseEvents } from "../../store/retention.ts";
import type { LiveFrame, SourceStatus } from "../../streams/monitor.ts";
import { requireScope, scopeHook } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";

const LABELS = ["mask", "no_mask", "incorrect"] as const;
type Label = (typeof LABELS)[number];

const range = {
  from: { type: "string", description: "ISO 8601 time or epoch ms, inclusive" },
  to: { type: "string", description: "ISO 8601 time or epoch ms, exclusive" },
  source: { type: "string" },
  zone: { type: "string", description: "only events in this zone (by name)" },
  api_key: { type: "string", description: "the API key, where a header cannot be sent" },
} as const;

interface EventsQuery {
  from?: string;
  to?: string;
  source?: string;
  zone?: string;
  label?: Label;
  kind?: "violation" | "observation";
  limit?: number;
  cursor?: string;
  order?: "asc" | "desc";
}

/** Status words of the old app's CSV. */
const CSV_STATUS: Record<Label, string> = { mask: "Mask", no_mask: "No Mask", incorrect: "Incorrect Mask" };

/**
 * The event log: paged queries, counts over time, the violations CSV, snapshots, and a live
 * Server-Sent Events feed (events after commit, per-frame tracks, source status).
 */
export async function eventRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const { db } = ctx;

  scopeHook(app, "events:read", ctx.config.auth);
  app.get<{ Querystring: EventsQuery }>(
    "/api/v1/events",
    {
      schema: {
        summary: "Events, newest first, with cursor pagination",
        tags: ["events"],
        querystring: {
          type: "object",
          properties: {
            ...range,
            label: { type: "string", enum: [...LABELS] },
            kind: { type: "string", enum: ["violation", "observation"] },
            limit: { type: "integer", minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: "string", maxLength: 200 },
            order: { type: "string", enum: ["asc", "desc"], default: "desc" },
          },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      const q = request.query;
      const page = await listEvents(db, {
        ...timeRange(q),
        sourceId: q.source,
        zone: q.zone,
        label: q.label,
        kind: q.kind,
        limit: q.limit,
        cursor: q.cursor,
        order: q.order,
      });
      return { events: page.events.map(eventJson), next_cursor: page.nextCursor };
    },
  );

  app.get<{ Params: { id: number } }>(
    "/api/v1/events/:id",
    {
      schema: {
        summary: "One event",
        tags: ["events"],
        params: { type: "object", properties: { id: { type: "integer", minimum: 1 } } },
      },
    },
    async (request) => eventJson(await mustGet(request.params.id)),
  );

  app.get<{ Params: { id: number } }>(
    "/api/v1/events/:id/frame",
    {
      schema: {
        summary: "The whole frame a violation was seen in (JPEG, at most 960 px wide)",
        tags: ["events"],
        params: { type: "object", properties: { id: { type: "integer", minimum: 1 } } },
      },
    },
    async (request, reply) => {
      const event = await mustGet(request.params.id);
      const jpeg = await getFrame(db, event.id);
      if (!jpeg) throw new HttpError(404, "no_frame", `event ${event.id} has no stored frame`);
      reply.type("image/jpeg").header("cache-control", "private, max-age=86400");
      return reply.send(Buffer.from(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength));
    },
  );

  app.post<{ Params: { id: number } }>(
    "/api/v1/events/:id/acknowledge",
    {
      schema: {
        summary: "Acknowledge an event (who and when are stored; the first acknowledgement stands)",
        tags: ["events"],
        params: { type: "object", properties: { id: { type: "integer", minimum: 1 } } },
      },
    },
    async (request) => {
      await mustGet(request.params.id);
      const by = request.user?.username ?? request.apiKey?.name ?? "anonymous";
      const event = await acknowledgeEvent(db, request.params.id, by);
      if (!event) throw new HttpError(404, "not_found", `there is no event ${request.params.id}`);
      return eventJson(event);
    },
  );

  app.get<{ Params: { id: number } }>(
    "/api/v1/events/:id/snapshot",
    {
      schema: {
        summary: "The JPEG saved with a violation",
        tags: ["events"],
        params: { type: "object", properties: { id: { type: "integer", minimum: 1 } } },
      },
    },
    async (request, reply) => {
      const event = await mustGet(request.params.id);
      if (event.snapshot === SNAPSHOT_IN_DATABASE) {
        const jpeg = await getSnapshot(ctx.db, event.id);
        if (!jpeg)
          throw new HttpError(404, "no_snapshot", `the snapshot of event ${event.id} has been deleted`);
        reply.type("image/jpeg").header("cache-control", "private, max-age=86400");
        return reply.send(Buffer.from(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength));
      }
      // Older events keep their JPEG as a file under the data dir.
      const rel = event.snapshot ? normalize(event.snapshot) : undefined;
      if (!rel || isAbsolute(rel) || rel.startsWith(".."))
        throw new HttpError(404, "no_snapshot", `event ${event.id} has no snapshot`);
      const file = join(ctx.config.dataDir, rel);
      const info = await stat(file).catch(() => undefined);
      if (!info)
        throw new HttpError(404, "no_snapshot", `the snapshot of event ${event.id} has been deleted`);
      reply
        .type("image/jpeg")
        .header("content-length", info.size)
        .header("cache-control", "private, max-age=86400");
      return reply.send(createReadStream(file));
    },
  );

  app.get<{
    Querystring: { bucket: "hour" | "day"; from?: string; to?: string; source?: string; zone?: string };
  }>(
    "/api/v1/stats",
    {
      schema: {
        summary: "Counts and compliance rate per hour or day (UTC)",
        tags: ["events"],
        querystring: {
          type: "object",
          properties: { bucket: { type: "string", enum: ["hour", "day"], default: "hour" }, ...range },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      const q = request.query;
      const filter = { ...timeRange(q), sourceId: q.source, zone: q.zone };
      const [buckets, totals] = await Promise.all([
        eventStats(db, { bucket: q.bucket, ...filter }),
        eventTotals(db, filter),
      ]);
      const labelled = totals.mask + totals.noMask + totals.incorrect;
      return {
        bucket: q.bucket,
        source: q.source ?? null,
        totals: {
          events: totals.events,
          violations: totals.violations,
          observations: totals.observations,
          mask: totals.mask,
          no_mask: totals.noMask,
          incorrect: totals.incorrect,
          compliance_rate: labelled ? totals.mask / labelled : null,
        },
        buckets: buckets.map((b) => ({
          start: new Date(b.start).toISOString(),
          events: b.events,
          violations: b.violations,
          observations: b.observations,
          mask: b.mask,
          no_mask: b.noMask,
          incorrect: b.incorrect,
          compliance_rate: b.complianceRate,
        })),
      };
    },
  );

  app.get<{
    Querystring: {
      from?: string;
      to?: string;
      source?: string;
      zone?: string;
      label?: "no_mask" | "incorrect";
    };
  }>(
    "/api/v1/violations.csv",
    {
      schema: {
        summary: "Violations as CSV: the old app's columns Timestamp,Face_ID,Status,Confidence first",
        tags: ["events"],
        produces: ["text/csv"],
        querystring: {
          type: "object",
          properties: { ...range, label: { type: "string", enum: ["no_mask", "incorrect"] } },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const filter = {
        ...timeRange(q),
        sourceId: q.source,
        zone: q.zone,
        label: q.label,
        kind: "violation" as const,
        order: "asc" as const,
      };
      async function* rows() {
        yield "Timestamp,Face_ID,Status,Confidence,Source,Label,Box,Snapshot,Event_ID,Zone\r\n";
        let cursor: string | undefined;
        do {
          const page = await listEvents(db, { ...filter, limit: 1000, cursor });
          yield page.events.map(csvRow).join("");
          cursor = page.nextCursor ?? undefined;
        } while (cursor);
      }
      reply
        .type("text/csv; charset=utf-8")
        .header("content-disposition", 'attachment; filename="violations.csv"');
      return reply.send(Readable.from(rows()));
    },
  );

  app.get<{
    Querystring: {
      bucket: "hour" | "day";
      from?: string;
      to?: string;
      source?: string;
      zone?: string;
      format: "json" | "csv";
    };
  }>(
    "/api/v1/reports",
    {
      schema: {
        summary:
          "Compliance report: totals, per hour or day, worst bucket, top hours, per source (JSON or CSV)",
        tags: ["events"],
        querystring: {
          type: "object",
          properties: {
            bucket: { type: "string", enum: ["hour", "day"], default: "day" },
            format: { type: "string", enum: ["json", "csv"], default: "json" },
            ...range,
          },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const report = await buildReport(db, {
        bucket: q.bucket,
        ...timeRange(q),
        sourceId: q.source,
        zone: q.zone,
      });
      if (q.format === "csv")
        return reply
          .type("text/csv; charset=utf-8")
          .header("content-disposition", 'attachment; filename="compliance-report.csv"')
          .send(reportCsv(report));
      return report;
    },
  );

  app.delete<{ Params: { id: number } }>(
    "/api/v1/events/:id",
    {
      config: { audit: "event.erase" },
      schema: {
        summary: "Erase one event with its snapshot and frame (admin)",
        tags: ["events"],
        params: { type: "object", properties: { id: { type: "integer", minimum: 1 } }, required: ["id"] },
      },
    },
    async (request) => {
      requireScope(request, "admin", ctx.config.auth);
      const r = await eraseEvents(db, ctx.config.dataDir, { id: request.params.id });
      if (!r.deleted) throw new HttpError(404, "not_found", `there is no event ${request.params.id}`);
      return { status: "ok", deleted: r.deleted };
    },
  );

  app.post<{ Body: { from?: string; to?: string; source?: string } }>(
    "/api/v1/events/erase",
    {
      config: { audit: "events.erase" },
      schema: {
        summary: "Erase the events of a time range and/or a source, with their images (admin)",
        tags: ["events"],
        body: {
          type: "object",
          properties: { from: range.from, to: range.to, source: range.source },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      requireScope(request, "admin", ctx.config.auth);
      const b = request.body ?? {};
      const filter = { ...timeRange(b), sourceId: b.source };
      if (filter.from === undefined && filter.to === undefined && filter.sourceId === undefined)
        throw new HttpError(400, "invalid_parameters", "say what to erase: from, to and/or source");
      return { status: "ok", ...(await eraseEvents(db, ctx.config.dataDir, filter)) };
    },
  );

  const live = new Set<FastifyReply>();
  app.addHook("preClose", async () => {
    for (const reply of live) reply.raw.end();
  });
  app.get<{ Querystring: { source?: string; frames?: boolean } }>(
    "/api/v1/live",
    {
      schema: {
        summary:
          "Server-Sent Events: `event` (an event, once committed), `frame` (tracks per analysed frame), `status` (source status)",
        tags: ["events"],
        produces: ["text/event-stream"],
        querystring: {
          type: "object",
          properties: {
            source: { type: "string" },
            frames: { type: "boolean", default: true },
            api_key: range.api_key,
          },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const { source, frames } = request.query;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache, no-transform",
        Connection: "keep-alive",
        "X-Accel-Buffering": "no",
      });
      res.write(": maskwatch live\n\n");
      const send = (type: string, data: unknown) => {
        if (res.writableLength > 1 << 20) return; // a stalled client skips, never grows memory
        res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      const onEvent = (e: EventRecord) => {
        if (!source || e.sourceId === source) send("event", eventJson(e));
      };
      const onFrame = (f: LiveFrame) => {
        if (frames && (!source || f.sourceId === source))
          send("frame", {
            source_id: f.sourceId,
            time: new Date(f.at).toISOString(),
            seq: f.seq,
            width: f.width,
            height: f.height,
            tracks: f.tracks,
          });
      };
      const onStatus = (s: SourceStatus) => {
        if (!source || s.id === source) send("status", s);
      };
      ctx.streams.bus.on("event", onEvent);
      ctx.streams.bus.on("frame", onFrame);
      ctx.streams.bus.on("status", onStatus);
      const heartbeat = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
      live.add(reply);
      res.on("close", () => {
        clearInterval(heartbeat);
        live.delete(reply);
        ctx.streams.bus.off("event", onEvent);
        ctx.streams.bus.off("frame", onFrame);
        ctx.streams.bus.off("status", onStatus);
      });
    },
  );

  async function mustGet(id: number): Promise<EventRecord> {
    const event = await getEvent(db, id);
    if (!event) throw new HttpError(404, "not_found", `there is no event ${id}`);
    return event;
  }
}

function csvRow(e: EventRecord): string {
  return `${[
    new Date(e.at).toISOString(),
    e.trackId,
    CSV_STATUS[e.label],
    e.confidence.toFixed(4),
    csvField(e.sourceId),
    e.label,
    e.box.join(" "),
    e.snapshot ? `/api/v1/events/${e.id}/snapshot` : "",
    e.id,
    e.zone ? csvField(e.zone) : "",
  ].join(",")}\r\n`;
}

function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** from/to as ISO 8601 or epoch ms; a bad one is a 400 naming it. */
function timeRange(q: { from?: string; to?: string }): { from?: number; to?: number } {
  const parse = (name: string, raw: string | undefined): number | undefined => {
    if (raw === undefined || raw === "") return undefined;
    const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
    if (!Number.isFinite(ms))
      throw new HttpError(
        400,
        "invalid_parameters",
        `${name} must be an ISO 8601 time or epoch milliseconds`,
      );
    return ms;
  };
  const from = parse("from", q.from);
  const to = parse("to", q.to);
  if (from !== undefined && to !== undefined && to < from)
    throw new HttpError(400, "invalid_parameters", "to is before from");
  return { from, to };
}
