/**
 * Reading zip archives entry by entry: the central directory is parsed once (names, sizes, offsets; ZIP64
 * fields understood), and each entry is inflated on its own, with fflate, into a buffer of the size the
 * directory declares — never more, whatever the compressed stream holds. So memory stays at the archive plus
 * one entry, and the declared sizes are what the callers' zip-bomb limits are checked against.
 */
import { inflateSync } from "fflate";

export interface ZipEntry {
  /** The path inside the archive, `/`-separated. */
  name: string;
  /** 0 stored, 8 deflated; anything else cannot be read. */
  method: number;
  compressedSize: number;
  /** The uncompressed size the central directory declares. */
  size: number;
  /** Offset of the entry's local header. */
  offset: number;
  encrypted: boolean;
  directory: boolean;
}

export class ZipError extends Error {
  constructor(
    readonly code: "invalid_zip" | "unsupported_zip_entry" | "too_many_entries",
    message: string,
  ) {
    super(message);
    this.name = "ZipError";
  }
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const MAX32 = 0xffffffff;

/** Whether `data` starts like a zip archive (a local header, or the end record of an empty one). */
export function looksLikeZip(data: Uint8Array): boolean {
  return data.length >= 4 && data[0] === 0x50 && data[1] === 0x4b && (data[2] === 3 || data[2] === 5);
}

/**
 * The entries of the archive, in central-directory order. Throws ZipError invalid_zip when the archive is not
 * one (or is truncated), too_many_entries beyond `maxEntries` records.
 */
export function listZip(data: Uint8Array, maxEntries = 100_000): ZipEntry[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const u16 = (at: number) => view.getUint16(at, true);
  const u32 = (at: number) => view.getUint32(at, true);
  const u64 = (at: number) => Number(view.getBigUint64(at, true));
  const bad = (why: string) => new ZipError("invalid_zip", `not a readable zip archive: ${why}`);
  if (data.length < 22) throw bad("too short");
  let eocd = -1;
  for (let at = data.length - 22; at >= Math.max(0, data.length - 22 - 65_535); at--) {
    if (u32(at) === EOCD) {
      eocd = at;
      break;
    }
  }
  if (eocd < 0) throw bad("no end of central directory record");
  let count = u16(eocd + 10);
  let cdSize = u32(eocd + 12);
  let cdOffset = u32(eocd + 16);
  if (eocd >= 20 && u32(eocd - 20) === ZIP64_LOCATOR) {
    const at = u64(eocd - 12);
    if (at + 56 > data.length || u32(at) !== ZIP64_EOCD) throw bad("broken ZIP64 end record");
    count = u64(at + 32);
    cdSize = u64(at + 40);
    cdOffset = u64(at + 48);
  }
  if (count > maxEntries)
    throw new ZipError(
      "too_many_entries",
      `the archive has ${count} entries; at most ${maxEntries} are read`,
    );
  if (cdOffset + cdSize > data.length) throw bad("the central directory lies past the end (truncated?)");
  const utf8 = new TextDecoder("utf-8");
  const latin1 = new TextDecoder("latin1");
  const entries: ZipEntry[] = [];
  let at = cdOffset;
  for (let i = 0; i < count; i++) {
    if (at + 46 > data.length || u32(at) !== CENTRAL) throw bad(`central directory record ${i} is broken`);
    const flags = u16(at + 8);
    const method = u16(at + 10);
    let compressedSize = u32(at + 20);
    let size = u32(at + 24);
    const nameLength = u16(at + 28);
    const extraLength = u16(at + 30);
    const commentLength = u16(at + 32);
    let offset = u32(at + 42);
    const end = at + 46 + nameLength + extraLength + commentLength;
    if (end > data.length) throw bad(`central directory record ${i} is truncated`);
    const rawName = data.subarray(at + 46, at + 46 + nameLength);
    const name = (flags & 0x800 ? utf8 : latin1).decode(rawName).replace(/\\/g, "/");
    // ZIP64: the 8-byte values follow, in this order, for each 32-bit field that is all ones.
    let extra = at + 46 + nameLength;
    const extraEnd = extra + extraLength;
    while (extra + 4 <= extraEnd) {
      const id = u16(extra);
      const length = u16(extra + 2);
      if (id === 0x0001) {
        let p = extra + 4;
        const take = () => {
          if (p + 8 > extra + 4 + length) throw bad(`entry ${name}: short ZIP64 field`);
          const v = u64(p);
          p += 8;
          return v;
        };
        if (size === MAX32) size = take();
        if (compressedSize === MAX32) compressedSize = take();
        if (offset === MAX32) offset = take();
      }
      extra += 4 + length;
    }
    entries.push({
      name,
      method,
      compressedSize,
      size,
      offset,
      encrypted: (flags & 1) === 1,
      directory: name.endsWith("/"),
    });
    at = end;
  }
  return entries;
}

/**
 * The bytes of one entry. Deflated data is inflated into exactly `entry.size` bytes (a stream that would
 * inflate to more is cut there, and then fails to decode as an image). Throws ZipError.
 */
export function readZipEntry(data: Uint8Array, entry: ZipEntry): Uint8Array {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (entry.encrypted) throw new ZipError("unsupported_zip_entry", `${entry.name} is encrypted`);
  if (entry.method !== 0 && entry.method !== 8)
    throw new ZipError("unsupported_zip_entry", `${entry.name} uses compression method ${entry.method}`);
  const at = entry.offset;
  if (at + 30 > data.length || view.getUint32(at, true) !== LOCAL)
    throw new ZipError("invalid_zip", `${entry.name}: broken local header`);
  const start = at + 30 + view.getUint16(at + 26, true) + view.getUint16(at + 28, true);
  const end = start + entry.compressedSize;
  if (end > data.length) throw new ZipError("invalid_zip", `${entry.name} is truncated`);
  const raw = data.subarray(start, end);
  if (entry.method === 0) return raw.slice(0, entry.size);
  try {
    return inflateSync(raw, { out: new Uint8Array(entry.size) });
  } catch (err) {
    throw new ZipError("invalid_zip", `${entry.name} cannot be inflated: ${(err as Error).message}`);
  }
}
