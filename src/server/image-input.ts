import type { FastifyRequest } from "fastify";
import { HttpError } from "./errors.ts";

export interface UploadedImage {
  bytes: Uint8Array;
  name?: string;
}

/**
 * The image of a request, in any of the accepted forms: multipart (field `file`, or `field`),
 * a raw body with an image/* content type, or JSON `{"image": "<base64>"}`.
 */
export async function readImage(request: FastifyRequest, field = "file"): Promise<UploadedImage> {
  const type = request.headers["content-type"] ?? "";
  if (type.startsWith("multipart/form-data")) {
    const images = await readMultipart(request, field, 1);
    if (images.length === 0)
      throw new HttpError(400, "missing_file", `send the image in a multipart field named "${field}"`);
    return images[0];
  }
  if (type.startsWith("image/")) return { bytes: request.body as Buffer };
  if (type.startsWith("application/json")) {
    const body = request.body as { image?: unknown } | null;
    return { bytes: fromBase64(body?.image, "image") };
  }
  throw new HttpError(
    415,
    "unsupported_media_type",
    `send multipart/form-data, an image/* body or application/json with base64; got ${type || "no content type"}`,
  );
}

/** Every file part named `field` (or any name when `field` is "*"), at most `max`. */
export async function readMultipart(
  request: FastifyRequest,
  field: string,
  max: number,
): Promise<UploadedImage[]> {
  const out: UploadedImage[] = [];
  for await (const part of request.parts()) {
    if (part.type !== "file") continue;
    if (field !== "*" && part.fieldname !== field) {
      await part.toBuffer().catch(() => undefined);
      throw new HttpError(
        400,
        "wrong_field",
        `the image must be in the multipart field "${field}", not "${part.fieldname}"`,
      );
    }
    if (out.length >= max) throw new HttpError(400, "too_many_files", `at most ${max} image(s) per request`);
    const bytes = await part.toBuffer();
    out.push({ bytes, name: part.filename });
  }
  return out;
}

export function fromBase64(value: unknown, name: string): Uint8Array {
  if (typeof value !== "string" || value.length === 0) {
    throw new HttpError(400, "missing_image", `JSON bodies carry the image as base64 in "${name}"`);
  }
  const data = value.replace(/^data:[^;,]+;base64,/, "");
  if (!/^[A-Za-z0-9+/=_-]+$/.test(data.slice(0, 4096))) {
    throw new HttpError(400, "invalid_base64", `"${name}" is not base64`);
  }
  return Buffer.from(data, "base64");
}
