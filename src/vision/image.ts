import sharp, { type Metadata } from "sharp";
import type { RgbImage } from "./types.ts";

export type ImageErrorCode =
  | "empty_image"
  | "image_too_large"
  | "too_many_pixels"
  | "unsupported_image"
  | "corrupt_image";

/** A bad image: the message says what is wrong in words a user can act on. */
export class ImageError extends Error {
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "ImageError";
  }
}

export interface DecodeLimits {
  /** Largest encoded input accepted, in bytes. */
  maxBytes: number;
  /** Largest decoded image accepted, width × height; checked from the header, before decoding. */
  maxPixels: number;
}

export const DEFAULT_LIMITS: DecodeLimits = { maxBytes: 25 * 1024 * 1024, maxPixels: 50_000_000 };

export interface DecodedImage {
  /** The pixels: the whole image, or shrunk to fit maxSide (see decodeImage). */
  image: RgbImage;
  /** The encoded image's size, EXIF orientation applied. */
  width: number;
  height: number;
  /** Container format as sharp names it: jpeg, png, webp, gif, tiff, heif (AVIF), … */
  format: string;
}

const FORMATS = new Set(["jpeg", "png", "webp", "gif", "tiff", "heif", "avif", "jp2", "bmp"]);

/**
 * Decodes an encoded image to 8-bit RGB: EXIF orientation applied, alpha dropped, first frame
 * of animations. Size limits are checked before any pixel is decoded. With `maxSide`, a larger
 * image is shrunk while it is decoded (libvips shrinks JPEG and WebP on load), so its full-size
 * pixels are never held in memory.
 */
export async function decodeImage(
  input: Uint8Array,
  limits: DecodeLimits = DEFAULT_LIMITS,
  options: { maxSide?: number } = {},
): Promise<DecodedImage> {
  if (input.length === 0) throw new ImageError("empty_image", "the image is empty (0 bytes)");
  if (input.length > limits.maxBytes) {
    throw new ImageError(
      "image_too_large",
      `the image is ${input.length} bytes, over the limit of ${limits.maxBytes}`,
    );
  }
  let meta: Metadata;
  try {
    meta = await sharp(input, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new ImageError("unsupported_image", `not a supported image (${reason(err)})`);
  }
  const format = meta.format ?? "unknown";
  if (!FORMATS.has(format))
    throw new ImageError("unsupported_image", `image format ${format} is not supported`);
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  if (width < 1 || height < 1) throw new ImageError("corrupt_image", "the image header gives no size");
  if (width * height > limits.maxPixels) {
    throw new ImageError(
      "too_many_pixels",
      `the image is ${width}×${height} = ${width * height} pixels, over the limit of ${limits.maxPixels}`,
    );
  }
  const swapped = (meta.orientation ?? 1) >= 5;
  const [fullW, fullH] = swapped ? [height, width] : [width, height];
  try {
    let pipeline = sharp(input, {
      limitInputPixels: limits.maxPixels,
      failOn: "error",
      pages: 1,
    }).autoOrient();
    if (options.maxSide && Math.max(fullW, fullH) > options.maxSide)
      pipeline = pipeline.resize(options.maxSide, options.maxSide, { fit: "inside", kernel: "linear" });
    const { data, info } = await pipeline
      .removeAlpha()
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return {
      image: {
        data: new Uint8Array(data.buffer, data.byteOffset, data.length),
        width: info.width,
        height: info.height,
      },
      width: fullW,
      height: fullH,
      format,
    };
  } catch (err) {
    throw new ImageError("corrupt_image", `the ${format} image could not be decoded (${reason(err)})`);
  }
}

/** Wraps raw pixel data (video frames): RGB, RGBA or grey, rows top to bottom, no padding. */
export function rawImage(data: Uint8Array, width: number, height: number, channels: 1 | 3 | 4 = 3): RgbImage {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new ImageError("corrupt_image", `raw frame size ${width}×${height} is not valid`);
  }
  if (data.length !== width * height * channels) {
    throw new ImageError(
      "corrupt_image",
      `raw frame has ${data.length} bytes; ${width}×${height}×${channels} needs ${width * height * channels}`,
    );
  }
  if (channels === 3) return { data, width, height };
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += channels) {
    rgb[i] = data[j];
    rgb[i + 1] = data[channels === 1 ? j : j + 1];
    rgb[i + 2] = data[channels === 1 ? j : j + 2];
  }
  return { data: rgb, width, height };
}

function reason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split("\n")[0].replace(/^Input buffer contains unsupported image format$/, "unrecognised data");
}
