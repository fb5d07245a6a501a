/**
 * YuNet (libfacedetection / OpenCV FaceDetectorYN).
 *
 * Model contract (checked with onnxruntime on yunet_n_dynamic.onnx, yunet_s_dynamic.onnx and
 * face_detection_yunet_2023mar.onnx): input `input` float32 NCHW [1, 3, H, W], BGR, raw 0..255
 * (OpenCV feeds `blobFromImage(img)` of a BGR Mat: no scaling, no mean, no channel swap).
 * The dynamic files take any H, W that are multiples of 32; the 2023mar file is fixed 640×640.
 * Outputs per stride s ∈ {8, 16, 32}, one row per grid cell (row-major, cols = W/s):
 * `cls_s` [1, N, 1] and `obj_s` [1, N, 1] probabilities, `bbox_s` [1, N, 4], `kps_s` [1, N, 10].
 *
 * Decoding is OpenCV's FaceDetectorYNImpl::postProcess (modules/objdetect/src/face_detect.cpp):
 * score = sqrt(clamp(cls) × clamp(obj)); centre = (col + dx, row + dy) × s; size = exp(dw, dh) × s;
 * point k = (col + kx, row + ky) × s; then NMS at IoU 0.3.
 *
 * Maskwatch's own detector (training/train_detector.py) is YuNet-n fine-tuned with a mask head: the same
 * outputs plus `mask_s` [1, N, 3], softmax over [mask, no_mask, incorrect] per cell, read at the cell
 * that gave the box. It was trained on photos scaled so their longer side is ~640 px, so it runs at a
 * fixed long side (scaled up or down) rather than at the image's own size.
 *
 * Key points, OpenCV's order: right eye, left eye, nose tip, right mouth corner, left mouth
 * corner, named from the subject's side, so the first eye / mouth corner is the one on the image
 * LEFT (checked on real photos). Reported with our image-side names: left_eye, right_eye, nose,
 * mouth_left, mouth_right.
 */
import * as ort from "onnxruntime-node";
import { DEFAULT_MASK_THRESHOLD, decide } from "./mask-classifier.ts";
import { type Box, finalizeFaces, nms, scaleFaces } from "./nms.ts";
import { letterbox, pad, resizeFast, writeTensor } from "./preprocess.ts";
import type { Detection, DetectOptions, Detector, Face, Point, RgbImage } from "./types.ts";

export const YUNET_LANDMARKS = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"] as const;
export const YUNET_STRIDES = [8, 16, 32] as const;

/** Raw YuNet outputs for one image, per stride (same order as `strides`). */
export interface YuNetRaw {
  cls: ArrayLike<number>[];
  obj: ArrayLike<number>[];
  bbox: ArrayLike<number>[];
  kps: ArrayLike<number>[];
  /** Mask head probabilities [mask, no_mask, incorrect] per cell, where the model has one. */
  mask?: ArrayLike<number>[];
}

/** Grid of each stride for a padded input of padW × padH. */
export function yunetGrid(padW: number, padH: number, strides: readonly number[] = YUNET_STRIDES) {
  return strides.map((stride) => ({
    stride,
    cols: Math.floor(padW / stride),
    rows: Math.floor(padH / stride),
  }));
}

/**
 * Decodes candidates with score ≥ threshold, in network-input pixels, in stride then cell order.
 * Landmarks use YUNET_LANDMARKS names.
 */
export function decodeYuNet(
  raw: YuNetRaw,
  padW: number,
  padH: number,
  threshold: number,
  strides: readonly number[] = YUNET_STRIDES,
): Face[] {
  const out: Face[] = [];
  yunetGrid(padW, padH, strides).forEach(({ stride, cols, rows }, i) => {
    const cls = raw.cls[i];
    const obj = raw.obj[i];
    const bbox = raw.bbox[i];
    const kps = raw.kps[i];
    const mask = raw.mask?.[i];
    const n = Math.min(cols * rows, cls.length);
    for (let idx = 0; idx < n; idx++) {
      const c = Math.min(1, Math.max(0, cls[idx]));
      const o = Math.min(1, Math.max(0, obj[idx]));
      const score = Math.sqrt(c * o);
      if (score < threshold) continue;
      const col = idx % cols;
      const row = (idx - col) / cols;
      const cx = (col + bbox[idx * 4]) * stride;
      const cy = (row + bbox[idx * 4 + 1]) * stride;
      const w = Math.exp(bbox[idx * 4 + 2]) * stride;
      const h = Math.exp(bbox[idx * 4 + 3]) * stride;
      const landmarks: Record<string, Point> = {};
      for (let k = 0; k < 5; k++) {
        landmarks[YUNET_LANDMARKS[k]] = [
          (kps[idx * 10 + 2 * k] + col) * stride,
          (kps[idx * 10 + 2 * k + 1] + row) * stride,
        ];
      }
      const face: Face = { box: [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], score, landmarks };
      if (mask)
        face.mask = decide([mask[idx * 3], mask[idx * 3 + 1], mask[idx * 3 + 2]], DEFAULT_MASK_THRESHOLD);
      out.push(face);
    }
  });
  return out;
}

export interface YuNetOptions {
  id?: string;
  models?: string[];
  /**
   * Default score threshold: 0.6. OpenCV's demo default is 0.9, which drops many true but
   * small / blurred faces; the libfacedetection.train evaluation and most wrappers use 0.6
   * (a lower value is best passed per call for PR curves).
   */
  threshold?: number;
  /** NMS IoU threshold (OpenCV: 0.3). */
  nmsThreshold?: number;
  /** Keep at most this many candidates before NMS (OpenCV top_k: 5000). */
  topK?: number;
  /**
   * Dynamic models: the image is shrunk so its longer side is at most this (default 1280);
   * YuNet itself runs at the image's own size otherwise (like OpenCV with setInputSize).
   */
  maxSide?: number;
  /**
   * Scale every image so its longer side is this many pixels, up or down (DetectOptions.inputSize
   * overrides it per call). Unset: the image's own size, shrunk to maxSide.
   */
  longSide?: number;
}

export class YuNetDetector implements Detector {
  readonly id: string;
  readonly models: string[];
  readonly landmarkNames: readonly string[] = YUNET_LANDMARKS;
  /** Fixed input [w, h], or undefined for the dynamic exports. */
  readonly fixedSize: [number, number] | undefined;
  private readonly opts: Required<Pick<YuNetOptions, "threshold" | "nmsThreshold" | "topK" | "maxSide">> &
    Pick<YuNetOptions, "longSide">;

  constructor(
    private readonly session: ort.InferenceSession,
    options: YuNetOptions = {},
  ) {
    const meta = session.inputMetadata[0];
    const shape = meta?.isTensor ? meta.shape : [];
    const h = shape[2];
    const w = shape[3];
    this.fixedSize = typeof w === "number" && typeof h === "number" && w > 0 && h > 0 ? [w, h] : undefined;
    this.id = options.id ?? "yunet";
    this.models = options.models ?? [this.fixedSize ? "yunet-2023mar" : "yunet-n"];
    this.opts = {
      threshold: options.threshold ?? 0.6,
      nmsThreshold: options.nmsThreshold ?? 0.3,
      topK: options.topK ?? 5000,
      maxSide: options.maxSide ?? 1280,
      longSide: options.longSide,
    };
  }

  get threshold(): number {
    return this.opts.threshold;
  }

  async detect(image: RgbImage, options: DetectOptions = {}): Promise<Detection> {
    const threshold = options.threshold ?? this.opts.threshold;
    const timings = { preprocess: 0, inference: 0, postprocess: 0 };
    let t = performance.now();
    let input: RgbImage;
    let sx: number;
    let sy: number;
    if (this.fixedSize) {
      const lb = await letterbox(image, this.fixedSize[0], this.fixedSize[1], { align: "topleft" });
      input = lb.image;
      sx = lb.scale;
      sy = lb.scaleY;
    } else {
      const longSide = options.inputSize ?? this.opts.longSide;
      const long = Math.max(image.width, image.height);
      let scale = longSide ? longSide / long : Math.min(1, this.opts.maxSide / long);
      // YuNet finds faces down to ~10 px; when only bigger faces are wanted, run smaller.
      if (options.minFaceSize && options.minFaceSize > 20) scale = Math.min(scale, 20 / options.minFaceSize);
      const w = Math.max(1, Math.round(image.width * scale));
      const h = Math.max(1, Math.round(image.height * scale));
      const resized = await resizeFast(image, w, h);
      sx = w / image.width;
      sy = h / image.height;
      input = pad(resized, Math.ceil(w / 32) * 32, Math.ceil(h / 32) * 32);
    }
    const tensor = new Float32Array(input.width * input.height * 3);
    writeTensor(input, tensor, 0, { layout: "nchw", mean: 0, std: 1, bgr: true });
    timings.preprocess = performance.now() - t;

    t = performance.now();
    const out = await this.session.run({
      [this.session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, input.height, input.width]),
    });
    timings.inference = performance.now() - t;

    t = performance.now();
    const get = (name: string) => {
      const v = out[name];
      if (!v) throw new Error(`YuNet: missing output ${name}`);
      return v.data as Float32Array;
    };
    const hasMask = out.mask_8 !== undefined;
    const raw: YuNetRaw = { cls: [], obj: [], bbox: [], kps: [], mask: hasMask ? [] : undefined };
    for (const s of YUNET_STRIDES) {
      raw.cls.push(get(`cls_${s}`));
      raw.obj.push(get(`obj_${s}`));
      raw.bbox.push(get(`bbox_${s}`));
      raw.kps.push(get(`kps_${s}`));
      raw.mask?.push(get(`mask_${s}`));
    }
    let cands = decodeYuNet(raw, input.width, input.height, threshold);
    if (cands.length > this.opts.topK) {
      cands = cands.slice().sort((a, b) => b.score - a.score);
      cands = cands.slice(0, this.opts.topK);
    }
    const keep = nms(
      cands.map((f) => f.box as Box),
      cands.map((f) => f.score),
      this.opts.nmsThreshold,
    );
    const faces = scaleFaces(
      keep.map((i) => cands[i]),
      1 / sx,
      1 / sy,
    );
    const result = finalizeFaces(faces, image.width, image.height, options);
    timings.postprocess = performance.now() - t;
    return { faces: result, timings };
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
