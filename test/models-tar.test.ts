import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { isModelError } from "../src/models/errors.ts";
import { extractFile, listTar, readTar } from "../src/models/tar.ts";
import { unlessCI } from "./support/ci.ts";

/** A minimal tar writer for tests: ustar headers, optional prefix field, pax / GNU long-name entries. */
function header(
  name: string,
  size: number,
  type: string,
  opts: { prefix?: string; gnu?: boolean } = {},
): Uint8Array {
  const h = new Uint8Array(512);
  const enc = new TextEncoder();
  const put = (s: string, off: number, len: number) => h.set(enc.encode(s).subarray(0, len), off);
  const oct = (n: number, off: number, len: number) =>
    put(`${n.toString(8).padStart(len - 1, "0")}\0`, off, len);
  put(name, 0, 100);
  oct(0o644, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  oct(size, 124, 12);
  oct(0, 136, 12);
  put(type, 156, 1);
  if (opts.gnu) put("ustar  \0", 257, 8);
  else {
    put("ustar\0", 257, 6);
    put("00", 263, 2);
  }
  if (opts.prefix) put(opts.prefix, 345, 155);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8);
  return h;
}

function padded(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(data.length / 512) * 512);
  out.set(data);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function entry(name: string, data: Uint8Array, type = "0", opts: { prefix?: string; gnu?: boolean } = {}) {
  return [header(name, data.length, type, opts), padded(data)];
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (`${len}${body}`.length !== len) len = `${len}${body}`.length;
  return `${len}${body}`;
}

const enc = new TextEncoder();
const longDir = `package/${"d".repeat(90)}/${"e".repeat(40)}`;
const longName = `${longDir}/model-with-a-long-name.onnx`;

test("tar: ustar prefix, pax path, GNU long name, directories, end marker", async () => {
  const a = enc.encode("hello");
  const b = new Uint8Array(1000).map((_, i) => i % 251);
  const c = enc.encode("pax!");
  const d = enc.encode("gnu long");
  const tar = concat([
    ...entry("package/", new Uint8Array(0), "5"),
    ...entry("a.txt", a, "0", { prefix: "package" }),
    ...entry("package/b.bin", b),
    ...entry("PaxHeaders/x", enc.encode(paxRecord("path", longName)), "x"),
    ...entry("ignored-short-name", c),
    ...entry("././@LongLink", enc.encode(`${longDir}/gnu.txt\0`), "L", { gnu: true }),
    ...entry("truncated", d, "0", { gnu: true }),
    new Uint8Array(1024),
  ]);
  const entries = Array.from(readTar(tar));
  assert.deepEqual(
    entries.map((e) => [e.name, e.type, e.size]),
    [
      ["package/", "5", 0],
      ["package/a.txt", "0", 5],
      ["package/b.bin", "0", 1000],
      [longName, "0", 4],
      [`${longDir}/gnu.txt`, "0", 8],
    ],
  );
  const gz = gzipSync(tar);
  assert.deepEqual(await extractFile(gz, "package/a.txt"), a);
  assert.deepEqual(await extractFile(gz, "package/b.bin"), b);
  assert.deepEqual(await extractFile(tar, longName), c); // uncompressed input works too
  assert.deepEqual(await extractFile(gz, `${longDir}/gnu.txt`), d);
  assert.equal(await extractFile(gz, "package/missing"), undefined);
  assert.equal(await extractFile(gz, "package/"), undefined, "directories are not files");
});

test("tar: corrupt header checksum and truncated archives are archive_error", async () => {
  const tar = concat([...entry("package/a.txt", enc.encode("abc")), new Uint8Array(1024)]);
  const bad = tar.slice();
  bad[0] = "q".charCodeAt(0);
  await assert.rejects(extractFile(bad, "package/a.txt"), (e) => isModelError(e, "archive_error"));
  await assert.rejects(extractFile(tar.subarray(0, 512), "package/a.txt"), (e) =>
    isModelError(e, "archive_error"),
  );
  await assert.rejects(extractFile(gzipSync(tar).subarray(0, 20), "package/a.txt"), (e) =>
    isModelError(e, "archive_error"),
  );
});

test("tar: reads archives made by the system tar (gnu and pax formats)", async (t) => {
  try {
    execFileSync("tar", ["--version"], { stdio: "ignore" });
  } catch {
    t.skip(unlessCI("no system tar"));
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), "maskwatch-tar-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const src = join(dir, "src");
  await mkdir(join(src, longDir), { recursive: true });
  const big = new Uint8Array(70_000).map((_, i) => (i * 7) % 256);
  await writeFile(join(src, longName), big);
  await writeFile(join(src, "package/small.txt"), "small\n");
  for (const format of ["gnu", "pax"]) {
    const out = join(dir, `${format}.tgz`);
    execFileSync("tar", ["-czf", out, `--format=${format}`, "-C", src, "package"]);
    const tgz = new Uint8Array(await readFile(out));
    const names = (await listTar(tgz)).map((e) => e.name);
    assert.ok(names.includes(longName), `${format}: ${names.join(", ")}`);
    assert.deepEqual(await extractFile(tgz, longName), big, format);
    assert.deepEqual(await extractFile(tgz, "./package/small.txt"), enc.encode("small\n"), format);
  }
});
