/**
 * The detection options of the API (`/api/v1/detect`, batch jobs) as the caller writes them (snake_case), their
 * JSON schema, and their translation into the engine's AnalyzeOptions. Shared by the server and the job
 * processors, so it throws plain errors: a RangeError subclass (invalid_parameters) or UnknownDetectorError.
 */
import { DETECTORS, detectorSpec, INPUT_SIZE_RANGE } from "./catalog.ts";
import type { AnalyzeOptions } from "./engine.ts";

/** Options, as query parameters (any input form) or top-level JSON fields (JSON bodies). */
export interface DetectParams {
  detector?: string;
  min_face_size?: number;
  threshold?: number;
  threshold_pnet?: number;
  threshold_rnet?: number;
  threshold_onet?: number;
  mask?: boolean;
  mask_threshold?: number;
  mask_source?: "classifier" | "head";
  max_faces?: number;
  input_size?: number;
  annotate?: boolean;
}

/** JSON-schema properties of DetectParams (querystring schemas; JSON bodies are checked with checkParams). */
export const DETECT_PARAM_PROPERTIES = {
  detector: { type: "string", enum: Object.keys(DETECTORS), description: "which detector runs" },
  min_face_size: { type: "integer", minimum: 1, maximum: 10000 },
  threshold: { type: "number", minimum: 0, maximum: 1, description: "keep faces scoring at least this" },
  threshold_pnet: { type: "number", minimum: 0, maximum: 1 },
  threshold_rnet: { type: "number", minimum: 0, maximum: 1 },
  threshold_onet: { type: "number", minimum: 0, maximum: 1 },
  mask: { type: "boolean", description: "classify masks: mask / no_mask / incorrect" },
  mask_threshold: { type: "number", minimum: 0, maximum: 1 },
  mask_source: {
    type: "string",
    enum: ["classifier", "head"],
    description: "classifier (default) or the detector's own mask head (maskwatch)",
  },
  max_faces: { type: "integer", minimum: 1, maximum: 10000 },
  input_size: {
    type: "integer",
    minimum: INPUT_SIZE_RANGE[0],
    maximum: INPUT_SIZE_RANGE[1],
    description: "long side (px) the image is scaled to before the network (maskwatch, yunet, yunet-s)",
  },
  annotate: { type: "boolean", description: "also return the image with the faces drawn (JPEG, base64)" },
} as const;

/** A bad option value or combination; the server answers 400 invalid_parameters. */
export class DetectOptionsError extends RangeError {
  readonly code = "invalid_parameters";
  constructor(message: string) {
    super(message);
    this.name = "DetectOptionsError";
  }
}

interface PropertySpec {
  type: string;
  minimum?: number;
  maximum?: number;
  enum?: readonly string[];
}

/**
 * Checks the fields of a JSON object against `properties` (types, and ranges where given): unknown fields and
 * wrong types throw DetectOptionsError. Returns the object, typed.
 */
export function checkParams<T>(fields: Record<string, unknown>, properties: object): T {
  const specs = properties as Record<string, PropertySpec>;
  for (const [key, value] of Object.entries(fields)) {
    const spec = specs[key];
    if (!spec) throw new DetectOptionsError(`unknown option "${key}"`);
    const kind = spec.type === "integer" ? "number" : spec.type;
    const ok =
      kind === "boolean"
        ? typeof value === "boolean"
        : kind === "string"
          ? typeof value === "string"
          : typeof value === "number" && Number.isFinite(value);
    if (!ok) throw new DetectOptionsError(`option "${key}" must be a ${spec.type}`);
    // An unknown detector gets its own error (unknown_detector), which lists the choices.
    if (spec.enum && key !== "detector" && !spec.enum.includes(value as string))
      throw new DetectOptionsError(`option "${key}" must be one of ${spec.enum.join(", ")}`);
    if (typeof value === "number") {
      if (spec.type === "integer" && !Number.isInteger(value))
        throw new DetectOptionsError(`option "${key}" must be an integer`);
      if (
        (spec.minimum !== undefined && value < spec.minimum) ||
        (spec.maximum !== undefined && value > spec.maximum)
      )
        throw new DetectOptionsError(`option "${key}" must be from ${spec.minimum} to ${spec.maximum}`);
    }
  }
  return fields as T;
}

/** The engine's options for `p`, with `defaultDetector` when none is named. */
export function analyzeOptions(p: DetectParams, defaultDetector: string): AnalyzeOptions {
  const detector = p.detector ?? defaultDetector;
  const spec = detectorSpec(detector);
  const stages = [p.threshold_pnet, p.threshold_rnet, p.threshold_onet];
  if (detector !== "mtcnn" && stages.some((v) => v !== undefined)) {
    throw new DetectOptionsError("threshold_pnet/rnet/onet apply to the mtcnn detector only");
  }
  if (p.input_size !== undefined && !spec.inputSize)
    throw new DetectOptionsError(`input_size does not apply to the ${detector} detector`);
  if (p.mask_source !== undefined && !p.mask) throw new DetectOptionsError("mask_source needs mask=true");
  if (p.mask_source === "head" && !spec.maskHead)
    throw new DetectOptionsError(`the ${detector} detector has no mask head`);
  if (p.mask_threshold !== undefined && !p.mask)
    throw new DetectOptionsError("mask_threshold needs mask=true");
  return {
    detector,
    minFaceSize: p.min_face_size,
    threshold: p.threshold,
    maxFaces: p.max_faces,
    inputSize: p.input_size,
    stageThresholds: stages.some((v) => v !== undefined)
      ? [p.threshold_pnet ?? 0.6, p.threshold_rnet ?? 0.7, p.threshold_onet ?? 0.7]
      : undefined,
    mask: p.mask ? { threshold: p.mask_threshold, source: p.mask_source } : false,
  };
}
