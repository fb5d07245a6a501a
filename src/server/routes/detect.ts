import type { FastifyInstance, FastifyRequest } from "fastify";
import { MODELS } from "../../models/registry.ts";
import { drawFacesOnEncoded } from "../../vision/draw.ts";
import {
  analyzeOptions,
  checkParams,
  DETECT_PARAM_PROPERTIES,
  type DetectParams,
} from "../../vision/options.ts";
import type { JobControl } from "../../vision/pool.ts";
import { requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError, toHttpError } from "../errors.ts";
import { fromBase64, readImage, readMultipart, type UploadedImage } from "../image-input.ts";
import { requestControl } from "../job-control.ts";
import { ANY_IMAGE, documentedBody, IMAGES } from "../openapi.ts";

const querystring = {
  type: "object",
  properties: DETECT_PARAM_PROPERTIES,
  additionalProperties: false,
} as const;

const pointSchema = { type: "array", items: { type: "number" }, minItems: 2, maxItems: 2 } as const;
const faceSchema = {
  type: "object",
  properties: {
    box: { type: "array", items: { type: "number" }, minItems: 4, maxItems: 4 },
    score: { type: "number" },
    landmarks: { type: "object", additionalProperties: pointSchema },
    label: { type: "string" },
    mask: {
      type: "object",
      properties: {
        label: { type: "string", enum: ["mask", "no_mask", "incorrect"] },
        score: { type: "number" },
        scores: {
          type: "object",
          properties: {
            mask: { type: "number" },
            no_mask: { type: "number" },
            incorrect: { type: "number" },
          },
        },
      },
    },
  },
} as const;
const resultSchema = {
  type: "object",
  properties: {
    width: { type: "integer" },
    height: { type: "integer" },
    detector: { type: "string" },
    models: {
      type: "array",
      items: { type: "object", properties: { id: { type: "string" }, version: { type: "string" } } },
    },
    faces: { type: "array", items: faceSchema },
    timings_ms: { type: "object", additionalProperties: { type: "number" } },
    annotated_jpeg: { type: "string", description: "base64 JPEG, when annotate=true" },
  },
} as const;
const errorSchema = {
  type: "object",
  properties: { status: { type: "string" }, code: { type: "string" }, message: { type: "string" } },
} as const;

const MAX_BATCH = 16;
const MAX_JPEG_SIDE = 65535;

/** Annotated pictures drawn at once: each holds its full-size image in libvips while it is encoded. */
const DRAW_SLOTS = 2;

export async function detectRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  let drawing = 0;
  const waiting: (() => void)[] = [];
  const draw = async (bytes: Uint8Array, faces: Parameters<typeof drawFacesOnEncoded>[1]) => {
    if (drawing >= DRAW_SLOTS) await new Promise<void>((resolve) => waiting.push(resolve));
    else drawing++;
    try {
      return await drawFacesOnEncoded(bytes, faces);
    } finally {
      const next = waiting.shift();
      if (next) next();
      else drawing--;
    }
  };
  const analyze = async (image: UploadedImage, p: DetectParams, control: JobControl) => {
    const options = analyzeOptions(p, ctx.config.detector);
    // The pool takes the buffer over (transfer); keep a copy when it is needed again for drawing.
    const result = await ctx.pool.analyze(
      { bytes: p.annotate ? new Uint8Array(image.bytes) : image.bytes },
      options,
      control,
    );
    ctx.metrics.observeAnalysis(result);
    const body: Record<string, unknown> = {
      width: result.width,
      height: result.height,
      detector: result.detector,
      models: result.models.map((id) => ({ id, version: MODELS.find((m) => m.id === id)?.version ?? "" })),
      faces: result.faces,
      timings_ms: Object.fromEntries(
        Object.entries(result.timings).map(([k, v]) => [k, Math.round(v * 100) / 100]),
      ),
    };
    if (p.annotate && Math.max(result.width, result.height) > MAX_JPEG_SIDE)
      throw new HttpError(
        400,
        "annotate_too_large",
        `annotate=true returns a JPEG, which holds at most ${MAX_JPEG_SIDE} px a side; this image is ${result.width}×${result.height}`,
      );
    if (p.annotate) body.annotated_jpeg = (await draw(image.bytes, result.faces)).toString("base64");
    return body;
  };

  app.post<{ Querystring: DetectParams }>(
    "/api/v1/detect",
    {
      config: documentedBody(ANY_IMAGE),
      schema: {
        summary: "Detect faces (and masks) in one image",
        description:
          'The image as multipart/form-data (field `file`), as the raw body with an image/* content type, or as JSON `{"image": "<base64>", …options}`.',
        tags: ["detect"],
        querystring,
        response: { 200: resultSchema, "4xx": errorSchema, "5xx": errorSchema },
      },
    },
    async (request, reply) => {
      requireScope(request, "detect", ctx.config.auth);
      const image = await readImage(request);
      const control = requestControl(reply, ctx.config.requestTimeoutMs);
      return analyze(image, { ...jsonParams(request), ...request.query }, control);
    },
  );

  app.post<{ Querystring: DetectParams }>(
    "/api/v1/detect/batch",
    {
      config: documentedBody(IMAGES),
      schema: {
        summary: `Detect faces in up to ${MAX_BATCH} images: a result or an error per image`,
        description:
          'Multipart with any number of file parts (any field name), or JSON `{"images": ["<base64>", …], …options}`.',
        tags: ["detect"],
        querystring,
        response: {
          200: {
            type: "object",
            properties: {
              results: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    index: { type: "integer" },
                    name: { type: "string" },
                    result: resultSchema,
                    error: errorSchema,
                  },
                },
              },
            },
          },
          "4xx": errorSchema,
        },
      },
    },
    async (request, reply) => {
      requireScope(request, "detect", ctx.config.auth);
      const params = { ...jsonParams(request), ...request.query };
      const images = await readBatch(request);
      const control = requestControl(reply, ctx.config.requestTimeoutMs);
      const results = await Promise.all(
        images.map(async (image, index) => {
          try {
            return { index, name: image.name, result: await analyze(image, params, control) };
          } catch (err) {
            const http = toHttpError(err);
            return {
              index,
              name: image.name,
              error: { status: "error", code: http.code, message: http.message },
            };
          }
        }),
      );
      return { results };
    },
  );
}

function jsonParams(request: FastifyRequest): DetectParams {
  const type = request.headers["content-type"] ?? "";
  if (!type.startsWith("application/json") || typeof request.body !== "object" || !request.body) return {};
  const { image: _image, images: _images, ...rest } = request.body as Record<string, unknown>;
  return checkParams<DetectParams>(rest, DETECT_PARAM_PROPERTIES);
}

async function readBatch(request: FastifyRequest): Promise<UploadedImage[]> {
  const type = request.headers["content-type"] ?? "";
  let images: UploadedImage[];
  if (type.startsWith("multipart/form-data")) images = await readMultipart(request, "*", MAX_BATCH);
  else if (type.startsWith("application/json")) {
    const list = (request.body as { images?: unknown } | null)?.images;
    if (!Array.isArray(list))
      throw new HttpError(400, "missing_images", 'JSON batches carry base64 images in "images"');
    if (list.length > MAX_BATCH)
      throw new HttpError(400, "too_many_files", `at most ${MAX_BATCH} images per batch`);
    images = list.map((v, i) => ({ bytes: fromBase64(v, `images[${i}]`), name: `images[${i}]` }));
  } else throw new HttpError(415, "unsupported_media_type", "send multipart/form-data or application/json");
  if (images.length === 0) throw new HttpError(400, "missing_images", "the batch has no images");
  return images;
}
