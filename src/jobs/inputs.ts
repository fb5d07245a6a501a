/**
 * What a job is given, checked before it is queued: an upload is a zip of images or a video (by name, content
 * type and magic bytes); a zip must hold images, within the entry and uncompressed-size limits (declared sizes:
 * see zip.ts); a server folder is packed into a zip at once, because the replica that processes the job may not
 * see this one's disk.
 */
import { lstat, readdir, readFile, realpath, stat } from "node:fs/promises";
import { extname, isAbsolute, join, relative, sep } from "node:path";
import { zipSync } from "fflate";
import type { JobKind } from "../store/jobs.ts";
import { listZip, looksLikeZip, type ZipEntry, ZipError } from "./zip.ts";

export interface JobLimits {
  /** Largest upload (zip or video) and largest packed folder, in bytes. */
  maxBytes: number;
  /** Most images in one job. */
  maxImages: number;
  /** Most uncompressed bytes of the images of one zip, as its directory declares them. */
  maxUncompressedBytes: number;
  /** Largest single image (the server's upload limit); a bigger entry is an error of that item. */
  maxImageBytes: number;
}

export const DEFAULT_MAX_IMAGES = 10_000;
/** At least 1 GiB, and 8 times the upload limit: zips of JPEGs hardly compress; a bomb declares far more. */
export const uncompressedLimit = (maxBytes: number): number => Math.max(2 ** 30, 8 * maxBytes);

/** A job's input refused; `statusCode` is the HTTP status (400, 403, 413, 415). */
export class JobInputError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "JobInputError";
  }
}

export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".avif"];
export const VIDEO_EXTENSIONS = [
  ".mp4",
  ".m4v",
  ".mov",
  ".mkv",
  ".webm",
  ".avi",
  ".mpg",
  ".mpeg",
  ".ts",
  ".mts",
  ".m2ts",
  ".flv",
  ".wmv",
  ".3gp",
  ".ogv",
  ".mjpeg",
];
const ZIP_TYPES = ["application/zip", "application/x-zip-compressed", "application/x-zip"];

/** Whether a path inside a zip or folder names an image to analyse: by extension, no hidden or __MACOSX parts. */
export function isImagePath(path: string): boolean {
  const parts = path.split(/[/\\]/).filter(Boolean);
  if (!parts.length || path.endsWith("/")) return false;
  if (parts.some((p) => p === "__MACOSX" || p.startsWith("."))) return false;
  return IMAGE_EXTENSIONS.includes(extname(parts[parts.length - 1]).toLowerCase());
}

/** The entries of a zip that are analysed, in archive order. */
export function imageEntries(entries: readonly ZipEntry[]): ZipEntry[] {
  return entries.filter((e) => !e.directory && isImagePath(e.name));
}

/** The kind of job an upload makes: a zip (name, type or content) or a video (name or type); else 415. */
export function uploadKind(
  name: string | undefined,
  contentType: string | undefined,
  bytes: Uint8Array,
): JobKind {
  const ext = extname(name ?? "").toLowerCase();
  const type = (contentType ?? "").split(";")[0].trim().toLowerCase();
  if (ext === ".zip" || ZIP_TYPES.includes(type)) return "images";
  if (VIDEO_EXTENSIONS.includes(ext) || type.startsWith("video/")) return "video";
  if (looksLikeZip(bytes)) return "images";
  throw new JobInputError(
    415,
    "unsupported_media_type",
    `send a .zip of images or a video (${VIDEO_EXTENSIONS.join(" ")}); got ${name ? `"${name}"` : "a file"} of type ${type || "unknown"}`,
  );
}

/**
 * The container of an uploaded video, told by its first bytes; anything else (an HLS or other
 * playlist, which could make ffmpeg open files or URLs named inside it, or unknown data) is refused.
 */
export function videoContainer(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, 4096));
  const ascii = (at: number, s: string) => b.toString("latin1", at, at + s.length) === s;
  if (ascii(4, "ftyp")) return "mp4";
  if (b.length >= 4 && b.readUInt32BE(0) === 0x1a45dfa3) return "matroska";
  if (ascii(0, "RIFF") && ascii(8, "AVI ")) return "avi";
  if (ascii(0, "FLV")) return "flv";
  if (ascii(0, "OggS")) return "ogg";
  if (b.length >= 4 && b.readUInt32BE(0) === 0x3026b275) return "asf";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "mjpeg";
  if (b.length >= 4 && b.readUInt32BE(0) === 0x000001ba) return "mpeg";
  if (b.length >= 377 && b[0] === 0x47 && b[188] === 0x47 && b[376] === 0x47) return "mpegts";
  const text = b
    .toString("latin1")
    .replace(/^\uFEFF/, "")
    .trimStart();
  if (text.startsWith("#EXTM3U") || /^\[playlist\]|^<\?xml|^<(smil|asx|mpd)/i.test(text))
    throw new JobInputError(
      415,
      "unsupported_video",
      "playlists are not accepted: upload the video file itself",
    );
  throw new JobInputError(
    415,
    "unsupported_video",
    "not a video container this server reads (MP4/MOV/3GP, Matroska/WebM, AVI, FLV, Ogg, ASF/WMV, MJPEG, MPEG-PS or MPEG-TS)",
  );
}

/** Checks an uploaded zip before it is queued; returns its image entries. */
export function checkZip(bytes: Uint8Array, limits: JobLimits): ZipEntry[] {
  if (!looksLikeZip(bytes)) throw new JobInputError(400, "invalid_zip", "the file is not a zip archive");
  let entries: ZipEntry[];
  try {
    entries = listZip(bytes, limits.maxImages * 4 + 1000);
  } catch (err) {
    if (err instanceof ZipError)
      throw new JobInputError(
        400,
        err.code === "too_many_entries" ? "too_many_files" : err.code,
        err.message,
      );
    throw err;
  }
  const images = imageEntries(entries);
  if (!images.length)
    throw new JobInputError(
      400,
      "no_images",
      `the zip holds no images (${IMAGE_EXTENSIONS.join(" ")}; folders, hidden files and __MACOSX are skipped)`,
    );
  if (images.length > limits.maxImages)
    throw new JobInputError(
      400,
      "too_many_files",
      `the zip holds ${images.length} images; at most ${limits.maxImages} per job`,
    );
  const total = images.reduce((sum, e) => sum + e.size, 0);
  if (total > limits.maxUncompressedBytes)
    throw new JobInputError(
      413,
      "zip_too_large",
      `the zip's images would unpack to ${total} bytes; at most ${limits.maxUncompressedBytes}`,
    );
  return images;
}

/**
 * Packs the images under `folder` (recursively; hidden files and folders skipped; symbolic links followed only
 * to files inside `root`) into an uncompressed zip, names relative to the folder. `root` (MASKWATCH_JOBS_ROOT),
 * when set, must contain the folder.
 */
export async function packFolder(
  folder: string,
  root: string | undefined,
  limits: JobLimits,
): Promise<{ zip: Uint8Array; count: number }> {
  if (typeof folder !== "string" || !isAbsolute(folder))
    throw new JobInputError(400, "invalid_folder", '"folder" is an absolute path on the server');
  let real: string;
  try {
    real = await realpath(folder);
    if (!(await stat(real)).isDirectory()) throw new Error("not a folder");
  } catch {
    throw new JobInputError(400, "invalid_folder", `${folder} is not a folder the server can read`);
  }
  const realRoot = root ? await realpath(root).catch(() => root) : undefined;
  const inside = (p: string) => {
    if (!realRoot) return true;
    const rel = relative(realRoot, p);
    return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
  };
  if (!inside(real))
    throw new JobInputError(
      403,
      "folder_not_allowed",
      `folder jobs may only read under MASKWATCH_JOBS_ROOT (${root})`,
    );
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch((e: NodeJS.ErrnoException) => {
      throw new JobInputError(
        400,
        "unreadable_folder",
        `cannot read the folder ${dir} (${e.code ?? e.message})`,
      );
    });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith(".") || e.name === "__MACOSX") continue;
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path);
      else if (e.isFile() && isImagePath(e.name)) files.push(path);
      else if (e.isSymbolicLink() && isImagePath(e.name)) {
        const target = await realpath(path).catch(() => undefined);
        if (target && inside(target) && (await lstat(target)).isFile()) files.push(path);
      }
      if (files.length > limits.maxImages)
        throw new JobInputError(
          400,
          "too_many_files",
          `the folder holds more than ${limits.maxImages} images`,
        );
    }
  };
  await walk(real);
  if (!files.length) throw new JobInputError(400, "no_images", `${folder} holds no images`);
  const zipped: Record<string, [Uint8Array, { level: 0 }]> = {};
  let total = 0;
  for (const file of files) {
    const bytes = await readFile(file).catch((e: NodeJS.ErrnoException) => {
      throw new JobInputError(400, "unreadable_file", `cannot read ${file} (${e.code ?? e.message})`);
    });
    total += bytes.length;
    if (total > limits.maxBytes)
      throw new JobInputError(
        413,
        "input_too_large",
        `the folder's images exceed ${limits.maxBytes} bytes (MASKWATCH_JOB_MAX_BYTES)`,
      );
    zipped[relative(real, file).split(sep).join("/")] = [bytes, { level: 0 }];
  }
  return { zip: zipSync(zipped), count: files.length };
}
