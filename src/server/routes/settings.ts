import type { FastifyInstance } from "fastify";
import { DETECTORS } from "../../vision/catalog.ts";
import { requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { applySettings, type RuntimeSettings, saveSettings } from "../settings.ts";

const fraction = { type: ["number", "null"], minimum: 0, maximum: 1 } as const;

const settingsSchema = {
  type: "object",
  properties: {
    stream_detector: { type: "string", enum: Object.keys(DETECTORS) },
    detection_threshold: fraction,
    mask_threshold: fraction,
    min_face_size: { type: ["integer", "null"], minimum: 4, maximum: 4096 },
    smoothing_frames: { type: "integer", minimum: 1, maximum: 100 },
    cooldown_seconds: { type: "integer", minimum: 0, maximum: 86_400 },
    snapshots: { type: "boolean" },
    blur_snapshots: { type: "boolean" },
    blur_others: {
      type: "boolean",
      description: "blur every face in a violation's frame except the violator's",
    },
    retention_days: { type: "integer", minimum: 0, maximum: 36_500 },
  },
  additionalProperties: false,
} as const;

/** Live-monitoring and retention settings: anyone signed in reads them, admins change them. */
export async function settingsRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  app.get(
    "/api/v1/settings",
    { schema: { summary: "Monitoring and retention settings", tags: ["settings"] } },
    async () => ({ settings: ctx.settings }),
  );

  app.put<{ Body: Partial<RuntimeSettings> }>(
    "/api/v1/settings",
    {
      config: { audit: "settings.update" },
      schema: {
        summary:
          "Change settings (any subset); they apply from the next frame, the smoothing window from a source's next start",
        tags: ["settings"],
        body: { ...settingsSchema, minProperties: 1 },
      },
    },
    async (request) => {
      requireScope(request, "admin", ctx.config.auth);
      const next = await saveSettings(ctx.db, ctx.settings, request.body);
      Object.assign(ctx.settings, next);
      applySettings(ctx.settings, ctx.streams);
      await ctx.cluster?.settingsChanged().catch(() => {});
      request.log.info({ settings: request.body }, "settings changed");
      return { settings: ctx.settings };
    },
  );
}
