import type { FastifyInstance } from "fastify";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";
import { readImage } from "../image-input.ts";
import { requestControl } from "../job-control.ts";
import { documentedBody, MULTIPART_IMAGE } from "../openapi.ts";

const ONET_DEFAULT = 0.7;

const querystring = {
  type: "object",
  properties: {
    min_face_size: { type: "integer", minimum: 1, default: 20 },
    threshold_pnet: { type: "number", minimum: 0, maximum: 1, default: 0.6 },
    threshold_rnet: { type: "number", minimum: 0, maximum: 1, default: 0.7 },
    // No default here: unsent, MTCNN uses ONET_DEFAULT and other detectors their own threshold.
    threshold_onet: { type: "number", minimum: 0, maximum: 1, description: `MTCNN default ${ONET_DEFAULT}` },
  },
  additionalProperties: false,
} as const;

const point = { type: "array", items: { type: "integer" }, minItems: 2, maxItems: 2 } as const;

/**
 * The replaced FastAPI + MTCNN service's `POST /detect`, same request and answer, so its
 * clients keep working: integer coordinates, five keypoints. It answers from the default detector
 * (MASKWATCH_COMPAT_DETECTOR, default maskwatch): `min_face_size` drops smaller faces and a
 * `threshold_onet` the client sends is the final score threshold (unsent: the detector's own);
 * the P-/R-Net thresholds only mean something to MTCNN. MASKWATCH_COMPAT_DETECTOR=mtcnn runs MTCNN
 * with all four exactly as the replaced service did.
 */
export async function compatRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  app.post<{
    Querystring: {
      min_face_size: number;
      threshold_pnet: number;
      threshold_rnet: number;
      threshold_onet?: number;
    };
  }>(
    "/detect",
    {
      config: documentedBody(MULTIPART_IMAGE),
      schema: {
        summary: "Detect faces (compatible with the FastAPI + MTCNN service)",
        tags: ["compatible"],
        consumes: ["multipart/form-data"],
        querystring,
        response: {
          200: {
            type: "object",
            required: ["boxes", "keypoints", "scores"],
            properties: {
              boxes: {
                type: "array",
                items: { type: "array", items: { type: "integer" }, minItems: 4, maxItems: 4 },
              },
              keypoints: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    left_eye: point,
                    right_eye: point,
                    nose: point,
                    mouth_left: point,
                    mouth_right: point,
                  },
                },
              },
              scores: { type: "array", items: { type: "number" } },
            },
          },
        },
      },
    },
    async (request, reply) => {
      if (!String(request.headers["content-type"] ?? "").startsWith("multipart/form-data")) {
        throw new HttpError(
          415,
          "unsupported_media_type",
          'send the image as multipart/form-data in the field "file"',
        );
      }
      const { bytes } = await readImage(request, "file");
      const q = request.query;
      const detector = ctx.config.compatDetector;
      const result = await ctx.pool.analyze(
        { bytes },
        detector === "mtcnn"
          ? {
              detector,
              minFaceSize: q.min_face_size,
              stageThresholds: [q.threshold_pnet, q.threshold_rnet, q.threshold_onet ?? ONET_DEFAULT],
            }
          : { detector, minFaceSize: q.min_face_size, threshold: q.threshold_onet },
        requestControl(reply, ctx.config.requestTimeoutMs),
      );
      ctx.metrics.observeAnalysis(result);
      const round = (p: [number, number]) => [Math.round(p[0]), Math.round(p[1])];
      return {
        boxes: result.faces.map((f) => f.box.map(Math.round)),
        keypoints: result.faces.map((f) => {
          const l = f.landmarks ?? {};
          return {
            left_eye: round(l.left_eye),
            right_eye: round(l.right_eye),
            nose: round(l.nose),
            mouth_left: round(l.mouth_left),
            mouth_right: round(l.mouth_right),
          };
        }),
        scores: result.faces.map((f) => f.score),
      };
    },
  );
}
