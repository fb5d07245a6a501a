import type { FastifyError, FastifyInstance } from "fastify";

/** An error with the HTTP status and the stable code clients see. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** Status for the typed errors the engine and the pool raise, by their `code`. */
const STATUS_BY_CODE: Record<string, number> = {
  empty_image: 400,
  corrupt_image: 400,
  unsupported_image: 415,
  image_too_large: 413,
  too_many_pixels: 413,
  unknown_detector: 400,
  queue_full: 503,
  deadline_exceeded: 504,
  abandoned: 499,
  pool_closed: 503,
  not_pulled: 503,
  checksum_mismatch: 503,
  unknown_model: 503,
  invalid_source: 400,
  source_not_found: 404,
  no_default_source: 409,
};

/** Fastify's own error codes, said in words a client can act on. */
const FASTIFY: Record<string, { status: number; code: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: "body_too_large" },
  FST_REQ_FILE_TOO_LARGE: { status: 413, code: "image_too_large" },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: "unsupported_media_type" },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: "empty_body" },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: "invalid_json" },
  FST_INVALID_MULTIPART_CONTENT_TYPE: { status: 415, code: "unsupported_media_type" },
  FST_FILES_LIMIT: { status: 400, code: "too_many_files" },
  FST_PARTS_LIMIT: { status: 400, code: "too_many_parts" },
};

/** What the multipart parser (busboy) says of a body that is not well-formed multipart/form-data. */
const MALFORMED_MULTIPART =
  /^(Multipart: Boundary not found|Unexpected end of multipart data|(Part|Preamble) terminated early|The needle cannot|Unsupported Content-Type)/;

export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof Error && !(err as { code?: unknown }).code && MALFORMED_MULTIPART.test(err.message))
    return new HttpError(
      400,
      "malformed_multipart",
      `the multipart/form-data body is malformed: ${err.message}`,
    );
  const e = err as Partial<FastifyError> & { code?: string; retryAfterSeconds?: number };
  if (e.validation) return new HttpError(400, "invalid_parameters", e.message ?? "invalid parameters");
  // A model missing on the server: say how to install it, not where the cache is.
  const missing = e.code === "not_pulled" ? /model (\S+) is not in the cache/.exec(e.message ?? "") : null;
  if (missing) {
    return new HttpError(
      503,
      "model_not_installed",
      `model ${missing[1]} is not installed on this server; an admin can install it from the console ` +
        `(or POST /api/v1/models/pull, or run \`maskwatch models pull ${missing[1]}\`)`,
    );
  }
  if (e.code && STATUS_BY_CODE[e.code]) {
    const headers: Record<string, string> = {};
    if (e.code === "queue_full")
      headers["retry-after"] = String(Math.max(1, Math.ceil(e.retryAfterSeconds ?? 1)));
    return new HttpError(STATUS_BY_CODE[e.code], e.code, e.message ?? e.code, headers);
  }
  // The store's input checks: every invalid_* is the caller's mistake.
  if (e.name === "StoreError" && e.code) {
    const status = e.code === "not_found" ? 404 : e.code === "conflict" ? 409 : 400;
    return new HttpError(status, e.code, e.message ?? e.code);
  }
  if (e.code && FASTIFY[e.code])
    return new HttpError(FASTIFY[e.code].status, FASTIFY[e.code].code, e.message ?? "");
  if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
    return new HttpError(e.statusCode, e.code?.toLowerCase() ?? "bad_request", e.message ?? "bad request");
  }
  if (err instanceof RangeError) return new HttpError(400, "invalid_parameters", err.message);
  return new HttpError(500, "internal_error", "internal error; see the server log for the request id");
}

/** The URL with the values of secret query parameters (api_key, token) replaced by "***". */
export function redactSecrets(url: string): string {
  return url.replace(/([?&](?:api_key|apikey|token|key)=)[^&#]*/gi, "$1***");
}

/** Every error leaves as {"status":"error","code","message"}; 5xx are logged in full. */
export function registerErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const http = toHttpError(err);
    if (http.status >= 500 && http.code === "internal_error") request.log.error({ err }, "request failed");
    else request.log.info({ code: http.code, status: http.status }, http.message);
    reply
      .status(http.status)
      .headers(http.headers)
      .send({ status: "error", code: http.code, message: http.message });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send({
      status: "error",
      code: "not_found",
      message: `no route ${request.method} ${redactSecrets(request.url)}`,
    });
  });
}
