import type { FastifyInstance, FastifyRequest } from "fastify";
import { countOwnedSources } from "../../store/sources.ts";
import {
  createZone,
  deleteZone,
  listZones,
  updateZone,
  type ZoneInput,
  type ZoneRecord,
} from "../../store/zones.ts";
import type { SourceInput, SourceView } from "../../streams/manager.ts";
import { decodeImage } from "../../vision/image.ts";
import { requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError, toHttpError } from "../errors.ts";
import { sendMjpeg } from "../mjpeg.ts";

const sourceBody = {
  type: "object",
  properties: {
    id: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$" },
    name: { type: "string", maxLength: 100 },
    kind: { type: "string", enum: ["browser", "device", "stream", "file"] },
    url: { type: ["string", "null"], maxLength: 2048 },
    options: {
      type: "object",
      description: "fps (0.1–60), width (max frame width), loop and realtime (files)",
      properties: {
        fps: { type: "number" },
        width: { type: "number" },
        loop: { type: "boolean" },
        realtime: { type: "boolean" },
      },
      additionalProperties: false,
    },
  },
  additionalProperties: false,
} as const;

type IdParams = { Params: { id: string } };

/**
 * Sources: CRUD, start/stop with status, MJPEG per source, and the WebSocket a browser camera
 * sends its frames over (binary JPEG messages; each analysed frame is answered with its tracks).
 */
export async function sourceRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const { streams } = ctx;
  const admin = (request: FastifyRequest) => requireScope(request, "admin", ctx.config.auth);
  /** Who is calling, as recorded in a source's owner (`user:<id>` or a key's id); null without sign-in. */
  const principal = (request: FastifyRequest) => (ctx.config.auth ? (request.apiKey?.id ?? null) : null);
  const isAdmin = (request: FastifyRequest) =>
    !ctx.config.auth || Boolean(request.apiKey?.scopes.includes("admin"));
  /** Admins manage every source; whoever added a browser source may also start, stop and remove it. */
  const manage = async (request: FastifyRequest, id: string) => {
    if (isAdmin(request)) return;
    requireScope(request, "detect", ctx.config.auth);
    const view = await streams.get(id);
    if (view.kind !== "browser" || view.owner === null || view.owner !== principal(request)) admin(request);
  };
  /** Browser sockets open per source on this replica: the source stops when its last one closes. */
  const cameras = new Map<string, number>();

  app.get(
    "/api/v1/sources",
    { schema: { summary: "Sources with their status", tags: ["sources"] } },
    async (request) => {
      requireScope(request, "events:read", ctx.config.auth);
      const me = principal(request);
      return { sources: (await streams.list()).map((v) => present(v, me)) };
    },
  );

  app.post<{ Body: SourceInput }>(
    "/api/v1/sources",
    {
      config: { audit: "source.create" },
      schema: {
        summary: "Add a source (stopped)",
        tags: ["sources"],
        body: { ...sourceBody, required: ["kind"] },
      },
    },
    async (request, reply) => {
      // Anyone who may detect may add their own browser cameras (up to a cap); the rest is admins'.
      const me = principal(request);
      if (request.body.kind === "browser") {
        requireScope(request, "detect", ctx.config.auth);
        const cap = ctx.config.browserSourcesPerOwner;
        if (me !== null && (await countOwnedSources(ctx.db, me, "browser")) >= cap) {
          throw new HttpError(
            409,
            "too_many_sources",
            `you already have ${cap} browser sources (MASKWATCH_BROWSER_SOURCES); remove one first`,
          );
        }
      } else admin(request);
      reply.status(201);
      return present(await streams.create(request.body, me), me);
    },
  );

  app.get<IdParams>(
    "/api/v1/sources/:id",
    { schema: { summary: "One source", tags: ["sources"] } },
    async (request) => {
      requireScope(request, "events:read", ctx.config.auth);
      return present(await streams.get(request.params.id), principal(request));
    },
  );

  app.patch<IdParams & { Body: SourceInput }>(
    "/api/v1/sources/:id",
    {
      config: { audit: "source.update" },
      schema: { summary: "Change a source (a running one restarts)", tags: ["sources"], body: sourceBody },
    },
    async (request) => {
      admin(request);
      const { id, ...patch } = request.body;
      return present(await streams.update(request.params.id, patch), principal(request));
    },
  );

  app.delete<IdParams>(
    "/api/v1/sources/:id",
    {
      config: { audit: "source.delete" },
      schema: { summary: "Stop and remove a source (its events are kept)", tags: ["sources"] },
    },
    async (request) => {
      await manage(request, request.params.id);
      await streams.remove(request.params.id);
      return { status: "ok" };
    },
  );

  app.post<IdParams>(
    "/api/v1/sources/:id/start",
    { schema: { summary: "Start a source", tags: ["sources"] } },
    async (request) => {
      await manage(request, request.params.id);
      return present(await streams.start(request.params.id), principal(request));
    },
  );

  const zoneBody = {
    type: "object",
    properties: {
      name: { type: "string", minLength: 1, maxLength: 100 },
      polygon: {
        type: "array",
        minItems: 3,
        maxItems: 64,
        description: "[x, y] points, fractions (0–1) of the frame's width and height",
        items: { type: "array", minItems: 2, maxItems: 2, items: { type: "number", minimum: 0, maximum: 1 } },
      },
      active: { type: "boolean" },
    },
    additionalProperties: false,
  } as const;
  const zoneJson = (z: ZoneRecord) => ({
    id: z.id,
    source_id: z.sourceId,
    name: z.name,
    polygon: z.polygon,
    active: z.active,
    created_at: new Date(z.createdAt).toISOString(),
    updated_at: new Date(z.updatedAt).toISOString(),
  });
  const zonesChanged = (id: string) => streams.monitor(id)?.reloadZones();

  app.get<IdParams>(
    "/api/v1/sources/:id/zones",
    {
      schema: {
        summary: "A source's zones (with any active, only faces inside one count)",
        tags: ["sources"],
      },
    },
    async (request) => {
      requireScope(request, "events:read", ctx.config.auth);
      await streams.get(request.params.id);
      return { zones: (await listZones(ctx.db, request.params.id)).map(zoneJson) };
    },
  );

  app.post<IdParams & { Body: ZoneInput }>(
    "/api/v1/sources/:id/zones",
    {
      config: { audit: "zone.create" },
      schema: {
        summary: "Add a zone: a named polygon over the source's picture",
        tags: ["sources"],
        body: { ...zoneBody, required: ["name", "polygon"] },
      },
    },
    async (request, reply) => {
      admin(request);
      await streams.get(request.params.id);
      const zone = await createZone(ctx.db, request.params.id, request.body);
      zonesChanged(request.params.id);
      reply.status(201);
      return zoneJson(zone);
    },
  );

  app.patch<{ Params: { id: string; zone: string }; Body: ZoneInput }>(
    "/api/v1/sources/:id/zones/:zone",
    {
      config: { audit: "zone.update" },
      schema: { summary: "Change a zone (name, polygon, active)", tags: ["sources"], body: zoneBody },
    },
    async (request) => {
      admin(request);
      const zone = await updateZone(ctx.db, request.params.id, request.params.zone, request.body);
      zonesChanged(request.params.id);
      return zoneJson(zone);
    },
  );

  app.delete<{ Params: { id: string; zone: string } }>(
    "/api/v1/sources/:id/zones/:zone",
    { config: { audit: "zone.delete" }, schema: { summary: "Remove a zone", tags: ["sources"] } },
    async (request) => {
      admin(request);
      await deleteZone(ctx.db, request.params.id, request.params.zone);
      zonesChanged(request.params.id);
      return { status: "ok" };
    },
  );

  app.post<IdParams>(
    "/api/v1/sources/:id/stop",
    { schema: { summary: "Stop a source", tags: ["sources"] } },
    async (request) => {
      await manage(request, request.params.id);
      return present(await streams.stop(request.params.id), principal(request));
    },
  );

  app.get<IdParams>(
    "/api/v1/sources/:id/mjpeg",
    {
      schema: {
        summary: "Annotated MJPEG of a running source",
        tags: ["sources"],
        produces: ["multipart/x-mixed-replace"],
      },
    },
    async (request, reply) => {
      requireScope(request, "events:read", ctx.config.auth);
      return sendMjpeg(ctx, request.params.id, request, reply);
    },
  );

  app.get<IdParams>(
    "/api/v1/sources/:id/frames",
    {
      websocket: true,
      schema: { summary: "WebSocket: send JPEG frames of a browser source", tags: ["sources"] },
    },
    async (socket, request) => {
      const send = (msg: object) => {
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(msg));
      };
      let monitor: Awaited<ReturnType<typeof streams.monitorOf>>;
      try {
        const view = await streams.get(request.params.id);
        if (view.kind !== "browser") {
          send({
            type: "error",
            code: "invalid_source",
            message: `source ${view.id} is a ${view.kind} source, not a browser one`,
          });
          socket.close(1008, "not a browser source");
          return;
        }
        // A browser source is its owner's camera: nobody else may put frames in it.
        if (
          ctx.config.auth &&
          (view.owner === null ? !isAdmin(request) : view.owner !== principal(request))
        ) {
          throw new HttpError(403, "forbidden", `source ${view.id} is another user's browser camera`);
        }
        if (!view.status.state || view.status.state === "stopped") await streams.start(view.id);
        monitor = await streams.monitorOf(view.id);
      } catch (err) {
        const http = toHttpError(err);
        send({ type: "error", code: http.code, message: http.message });
        socket.close(1008, http.code);
        return;
      }
      const id = request.params.id;
      cameras.set(id, (cameras.get(id) ?? 0) + 1);
      socket.on("close", () => {
        const left = (cameras.get(id) ?? 1) - 1;
        if (left > 0) return void cameras.set(id, left);
        cameras.delete(id);
        streams.stop(id).catch((err) => request.log.warn({ err, source: id }, "browser source did not stop"));
      });
      let seq = 0;
      socket.on("message", async (data: Buffer, isBinary: boolean) => {
        if (!isBinary)
          return send({
            type: "error",
            code: "invalid_frame",
            message: "send frames as binary JPEG/PNG/WebP messages",
          });
        try {
          const { image } = await decodeImage(new Uint8Array(data), {
            maxBytes: ctx.config.maxUploadBytes,
            maxPixels: ctx.config.maxPixels,
          });
          const n = seq++;
          await monitor.push({ image, at: Date.now(), seq: n });
          send({ type: "tracks", seq: n, tracks: monitor.tracks() });
        } catch (err) {
          const http = toHttpError(err);
          send({ type: "error", code: http.code, message: http.message });
        }
      });
    },
  );
}

/** The API's view of a source: snake_case, times as ISO strings; `mine` when the caller added it. */
function present(v: SourceView, caller: string | null) {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    id: v.id,
    name: v.name,
    kind: v.kind,
    url: v.url,
    options: v.options,
    enabled: v.enabled,
    owner: v.owner,
    mine: v.owner === caller,
    created_at: iso(v.createdAt),
    updated_at: iso(v.updatedAt),
    status: {
      state: v.status.state,
      fps: v.status.fps,
      frames: v.status.frames,
      dropped: v.status.dropped,
      faces: v.status.faces,
      events: v.status.events,
      latency_ms: v.status.latencyMs,
      last_error: v.status.lastError,
      last_frame_at: iso(v.status.lastFrameAt),
      started_at: iso(v.status.startedAt),
      replica: v.status.replica ?? null,
    },
  };
}
