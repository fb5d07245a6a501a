/**
 * Request bodies the upload routes read themselves (multipart, raw images, JSON), described for
 * /openapi.json only: validation stays in the routes, so Swagger UI's "Try it out" can send a file.
 */
import type { FastifyContextConfig } from "fastify";

const file = { type: "string", format: "binary" } as const;

type Content = Record<string, { schema: Record<string, unknown> }>;

/** Route config that documents `content` as the request body of that route. */
export function documentedBody(content: Content, description?: string): FastifyContextConfig {
  return {
    swaggerTransform: ({ schema, url }) => ({
      schema: { ...schema, body: { content, ...(description ? { description } : {}) } },
      url,
    }),
  };
}

/** One image: multipart field `file`. */
export const MULTIPART_IMAGE: Content = {
  "multipart/form-data": {
    schema: {
      type: "object",
      required: ["file"],
      properties: { file: { ...file, description: "the image" } },
    },
  },
};

/** One image as multipart, as the raw body, or base64 in JSON with the options. */
export const ANY_IMAGE: Content = {
  ...MULTIPART_IMAGE,
  "image/jpeg": { schema: file },
  "image/png": { schema: file },
  "image/webp": { schema: file },
  "application/json": {
    schema: {
      type: "object",
      required: ["image"],
      properties: { image: { type: "string", description: "the image, base64" } },
      additionalProperties: true,
    },
  },
};

/** Several images: any number of file parts, or base64 strings in JSON. */
export const IMAGES: Content = {
  "multipart/form-data": {
    schema: {
      type: "object",
      properties: { files: { type: "array", items: file, description: "the images (any field name)" } },
    },
  },
  "application/json": {
    schema: {
      type: "object",
      required: ["images"],
      properties: { images: { type: "array", items: { type: "string" }, description: "base64 images" } },
      additionalProperties: true,
    },
  },
};

/** A job's input: a zip of images or a video as multipart, or a server folder in JSON. */
export const JOB_INPUT: Content = {
  "multipart/form-data": {
    schema: {
      type: "object",
      required: ["file"],
      properties: { file: { ...file, description: "a .zip of images, or a video" } },
    },
  },
  "application/json": {
    schema: {
      type: "object",
      required: ["folder"],
      properties: { folder: { type: "string", description: "an absolute folder on the server (admin)" } },
      additionalProperties: true,
    },
  },
};
