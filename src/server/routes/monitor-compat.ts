import type { FastifyInstance } from "fastify";
import { requireCsrfOnGet, requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { sendMjpeg } from "../mjpeg.ts";

/**
 * The replaced mask-monitoring app's endpoints, same paths and JSON, driving the default source
 * (MASKWATCH_SOURCE). Counts come from the event log, so they survive restarts and agree across
 * replicas; they count people (tracks), not frames.
 */
export async function monitorCompatRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const { streams } = ctx;

  app.get(
    "/video_feed",
    {
      schema: {
        summary: "MJPEG of the default source, faces boxed by label with track id and confidence",
        tags: ["compatible"],
        produces: ["multipart/x-mixed-replace"],
      },
    },
    async (request, reply) => {
      requireScope(request, "events:read", ctx.config.auth);
      return sendMjpeg(ctx, await streams.defaultSourceId(), request, reply);
    },
  );

  const control = (path: string, summary: string, fn: () => Promise<{ status: string; message: string }>) => {
    for (const method of ["GET", "POST"] as const) {
      app.route({
        method,
        url: path,
        schema: { summary, tags: ["compatible"] },
        handler: async (request) => {
          // They change what the server does: admin only, and a signed-in GET needs the CSRF token.
          requireScope(request, "admin", ctx.config.auth);
          requireCsrfOnGet(request, ctx.config.auth);
          return fn();
        },
      });
    }
  };
  control("/start_detection", "Start the default source (POST or GET)", async () => {
    const view = await streams.start(await streams.defaultSourceId());
    return { status: "success", message: "Detection started", source: view.id };
  });
  control("/stop_detection", "Stop the default source (POST or GET)", async () => {
    const view = await streams.stop(await streams.defaultSourceId());
    return { status: "success", message: "Detection stopped", source: view.id };
  });
  control("/reset_stats", "Reset the counters of /get_stats (the event log is kept)", async () => {
    await streams.resetStats();
    return { status: "success", message: "Statistics reset" };
  });

  app.get(
    "/get_stats",
    {
      schema: {
        summary: "Counts since the last reset, current status and recent activity of the default source",
        tags: ["compatible"],
        response: {
          200: {
            type: "object",
            required: ["total_detections", "mask_count", "no_mask_count", "current_status", "activity"],
            properties: {
              total_detections: { type: "integer" },
              mask_count: { type: "integer" },
              no_mask_count: { type: "integer" },
              incorrect_count: { type: "integer" },
              current_status: { type: "string" },
              activity: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    time: { type: "string" },
                    message: { type: "string" },
                    type: { type: "string" },
                  },
                },
              },
            },
          },
        },
      },
    },
    async (request) => {
      requireScope(request, "events:read", ctx.config.auth);
      return streams.compatStats();
    },
  );
}
