/** An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export type Point = [number, number];

/** The five points MTCNN, YuNet and BlazeFace share. */
export interface FiveLandmarks {
  left_eye: Point;
  right_eye: Point;
  nose: Point;
  mouth_left: Point;
  mouth_right: Point;
}

/**
 * One face in original-image pixels. `landmarks` uses the detector's own point names:
 * five-point detectors fill `left_eye … mouth_right`; BlazeFace adds its ear points;
 * a detector with no landmarks (UltraFace) gives none.
 */
export interface Face {
  box: [number, number, number, number];
  score: number;
  landmarks?: Record<string, Point>;
  /** Class name where the detector itself has several (UltraFace masked: face / masked_face). */
  label?: string;
  /** Mask classification, when asked for (from the detector's own mask head, or the classifier). */
  mask?: MaskResult;
}

export type MaskLabel = "mask" | "no_mask" | "incorrect";

export interface MaskResult {
  /** The decision (see the classifier's threshold). */
  label: MaskLabel;
  /** Probability of that label. */
  score: number;
  scores: Record<MaskLabel, number>;
}

export interface DetectOptions {
  /** Faces smaller than this (shorter side, pixels) are not searched for, where the detector can. */
  minFaceSize?: number;
  /** Final score threshold. */
  threshold?: number;
  /** MTCNN per-stage thresholds [pnet, rnet, onet]. */
  stageThresholds?: [number, number, number];
  /** Keep at most this many faces (highest scores first). */
  maxFaces?: number;
  /** Longer side (px) the image is scaled to before the network, where the detector takes any size. */
  inputSize?: number;
  /** Stops the work at the next checkpoint (between network runs) once aborted. */
  signal?: AbortSignal;
}

export interface Detector {
  readonly id: string;
  /** Model ids (registry ids) this detector runs. */
  readonly models: string[];
  /** Names of the landmarks it reports, in order; empty when it has none. */
  readonly landmarkNames: readonly string[];
  /** Operating score threshold, used when DetectOptions.threshold is not given. */
  readonly threshold: number;
  /** Faces sorted by score, highest first; same input, same output. */
  detect(image: RgbImage, options?: DetectOptions): Promise<Detection>;
  dispose(): Promise<void>;
}

export interface Detection {
  faces: Face[];
  timings: StageTimings;
}

/** Milliseconds spent per stage of one call. */
export interface StageTimings {
  preprocess: number;
  inference: number;
  postprocess: number;
}
