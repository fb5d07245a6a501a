/**
 * A seeded corpus of bad requests against a real server on loopback: mutated real JPEG/PNG/WebP photos,
 * decompression bombs, odd multipart, odd JSON and absurd parameters. Every answer must be a 4xx with
 * the JSON error shape (or a 200 where the input happens to stay valid), none may take over 10 s, the
 * process's memory may grow only so much, and a valid image gets the same answer before and after.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { unlessCI } from "./support/ci.ts";
import { sharedPath } from "./support/paths.ts";
import { startTestServer, type TestServer } from "./support/server.ts";

const CASES = 1200;
const CONCURRENCY = 4;
const TIMEOUT_MS = 10_000;
/** RSS may grow by this much over the whole corpus (decoders and ONNX Runtime keep arenas). */
const RSS_GROWTH_MB = 400;

let server: TestServer | undefined;
let photos: { jpeg: Buffer; png: Buffer; webp: Buffer } | undefined;
let skip: string | null = null;

before(async () => {
  const file = sharedPath("datasets/dlib-faces/2008_002506.jpg");
  if (!file) {
    skip = "../shared/datasets/dlib-faces is absent (set MASKWATCH_SHARED)";
    return;
  }
  const jpeg = await readFile(file);
  const small = sharp(jpeg).resize(320);
  photos = { jpeg, png: await small.clone().png().toBuffer(), webp: await small.clone().webp().toBuffer() };
  server = await startTestServer({
    MASKWATCH_AUTH: "off",
    MASKWATCH_WORKERS: "1",
    MASKWATCH_MAX_UPLOAD_BYTES: String(2 * 1024 * 1024),
    MASKWATCH_MAX_PIXELS: "40000000",
    MASKWATCH_RATE_LIMIT_IP: "1000000",
  });
});

after(() => server?.close());

/** mulberry32: a small seeded generator, so a failing case can be replayed by its number. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
  };
}
type Rng = ReturnType<typeof rng>;

function mutate(src: Buffer, r: Rng): Buffer {
  const b = Buffer.from(src);
  switch (r.int(6)) {
    case 0: // flip bytes anywhere
      for (let i = 0, n = 1 + r.int(40); i < n; i++) b[r.int(b.length)] ^= 1 << r.int(8);
      return b;
    case 1: // truncate
      return b.subarray(0, r.int(b.length));
    case 2: // corrupt the header
      for (let i = 0, n = 1 + r.int(8); i < n; i++) b[r.int(Math.min(64, b.length))] = r.int(256);
      return b;
    case 3: // splice in garbage
      return Buffer.concat([
        b.subarray(0, r.int(b.length)),
        randomBytes(r, 1 + r.int(2000)),
        b.subarray(r.int(b.length)),
      ]);
    case 4: // duplicate a chunk
      {
        const at = r.int(b.length);
        return Buffer.concat([b, b.subarray(at, at + r.int(5000))]);
      }
    default: // zero a run
      b.fill(0, r.int(b.length), r.int(b.length));
      return b;
  }
}

function randomBytes(r: Rng, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = r.int(256);
  return b;
}

/** A PNG whose header claims w×h but whose data is a few bytes: a decompression bomb by its header. */
function pngHeader(w: number, h: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    return Buffer.concat([len, Buffer.from(type), data, Buffer.alloc(4)]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", Buffer.alloc(16)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

const ABSURD: readonly string[] = [
  "min_face_size=0",
  "min_face_size=-5",
  "min_face_size=1e9",
  "min_face_size=abc",
  "threshold=2",
  "threshold=-1",
  "threshold=NaN",
  "max_faces=0",
  "max_faces=99999999",
  "input_size=1",
  "input_size=100000",
  "detector=nope",
  "detector=__proto__",
  "detector=constructor",
  "detector=blazeface&threshold_pnet=0.5",
  "mask_threshold=0.5",
  "mask=maybe",
  "annotate=2",
  "detector=mtcnn&min_face_size=2",
  "detector=mtcnn&min_face_size=8&threshold_pnet=0&threshold_rnet=0&threshold_onet=0",
  "detector=maskwatch&input_size=64&threshold=0",
  "detector=blazeface&input_size=96",
  "mask=true&mask_threshold=1",
  "max_faces=1&mask=true",
];

interface Case {
  name: string;
  path: string;
  type?: string;
  body: Buffer | string | FormData;
}

function makeCase(i: number, p: NonNullable<typeof photos>): Case {
  const r = rng(0x5eed + i * 7919);
  const photo = r.pick([p.jpeg, p.png, p.webp]);
  const type = photo === p.jpeg ? "image/jpeg" : photo === p.png ? "image/png" : "image/webp";
  const query = r.next() < 0.35 ? `?${r.pick(ABSURD)}` : "";
  const kind = r.int(10);
  if (kind <= 3)
    return {
      name: `${i}: mutated ${type} raw${query}`,
      path: `/api/v1/detect${query}`,
      type,
      body: mutate(photo, r),
    };
  if (kind === 4) {
    const [w, h] = r.pick([
      [50000, 50000],
      [100000, 1],
      [1, 100000],
      [65536, 65536],
      [7000, 7000],
      [0, 10],
    ] as const);
    return {
      name: `${i}: PNG header ${w}×${h}`,
      path: `/api/v1/detect${query}`,
      type: "image/png",
      body: pngHeader(w, h),
    };
  }
  if (kind === 5) {
    const f = new FormData();
    const field = r.pick(["file", "file", "image", "", "f\u0000"]);
    f.append(
      field,
      new Blob([new Uint8Array(mutate(photo, r))], { type }),
      r.pick(["a.jpg", "", "../../etc/passwd"]),
    );
    if (r.next() < 0.3) f.append("file", new Blob([new Uint8Array(randomBytes(r, r.int(3000)))]), "b.bin");
    const path = r.pick(["/detect", "/api/v1/detect", "/api/v1/detect/batch"]);
    return {
      name: `${i}: multipart ${JSON.stringify(field)} to ${path}${query}`,
      path: `${path}${query}`,
      body: f,
    };
  }
  if (kind === 6) {
    const boundary = "B".repeat(1 + r.int(70));
    const eol = r.pick(["\r\n", "\n", "\r"]);
    const headers = r.pick([
      "",
      "Content-Type: image/jpeg",
      'Content-Disposition: form-data; name="file"; filename="a.jpg"',
      'Content-Disposition: form-data; name="file"',
      "Content-Disposition: attachment",
    ]);
    const data = r.next() < 0.5 ? photo.subarray(0, r.int(photo.length)) : randomBytes(r, r.int(40000));
    const parts = [
      `--${boundary}${eol}${headers}${eol}${eol}`,
      data,
      r.next() < 0.7 ? `${eol}--${boundary}--${eol}` : "",
    ];
    const declared = r.pick([
      `multipart/form-data; boundary=${boundary}`,
      "multipart/form-data",
      "multipart/form-data; boundary=",
      `multipart/form-data; boundary=X${boundary}`,
    ]);
    const path = r.pick(["/detect", "/api/v1/detect", "/api/v1/detect/batch"]);
    return {
      name: `${i}: raw multipart (${JSON.stringify(headers)}, eol ${JSON.stringify(eol)}) to ${path}`,
      path,
      type: declared,
      body: Buffer.concat(parts.map((x) => (typeof x === "string" ? Buffer.from(x) : x))),
    };
  }
  if (kind === 7) {
    const base64 = r.pick([
      photo.toString("base64"),
      mutate(photo, r).toString("base64"),
      "not base64 at all!",
      "",
      "data:image/png;base64,",
      "=".repeat(r.int(100)),
    ]);
    const extra = r.pick<Record<string, unknown>>([
      {},
      { detector: r.pick(["toString", "valueOf", "__proto__", "mtcnn", 7, null]) },
      { min_face_size: r.pick([-1, 0, 1e12, "20", null, [20]]) },
      { threshold: r.pick([Number.MAX_VALUE, -0.1, "0.5", true]) },
      { mask: r.pick(["yes", 1, true]) },
      { unknown_option: 1 },
      { image: 42 },
    ]);
    const json =
      r.next() < 0.1 ? `{"image": "${base64.slice(0, 50)}` : JSON.stringify({ image: base64, ...extra });
    return {
      name: `${i}: JSON ${JSON.stringify(extra)}`,
      path: r.pick(["/api/v1/detect", "/api/v1/detect/batch"]),
      type: "application/json",
      body: json,
    };
  }
  if (kind === 8) {
    const t = r.pick([
      "text/plain",
      "application/octet-stream",
      "image/svg+xml",
      "application/xml",
      "",
      "image/jpeg; charset=utf-8",
    ]);
    return {
      name: `${i}: ${t || "no"} content type`,
      path: `/api/v1/detect${query}`,
      type: t,
      body: mutate(photo, r),
    };
  }
  return {
    name: `${i}: random bytes as ${type}`,
    path: `/api/v1/detect${query}`,
    type,
    body: randomBytes(r, r.int(20000)),
  };
}

async function send(c: Case): Promise<{ status: number; body: unknown; ms: number }> {
  const t0 = performance.now();
  const headers: Record<string, string> = {};
  if (c.type !== undefined) headers["content-type"] = c.type;
  const res = await fetch(`${server!.url}${c.path}`, {
    method: "POST",
    headers,
    body: Buffer.isBuffer(c.body) ? new Uint8Array(c.body) : c.body,
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, body, ms: performance.now() - t0 };
}

test(`${CASES} seeded bad inputs: no 5xx, JSON errors, no hang, bounded memory, same answers after`, async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const p = photos!;
  const valid = async () => {
    const r = await send({
      name: "valid",
      path: "/api/v1/detect?mask=true",
      type: "image/jpeg",
      body: p.jpeg,
    });
    assert.equal(r.status, 200);
    const { timings_ms: _, ...answer } = r.body as Record<string, unknown>;
    return answer;
  };
  const before = await valid();
  const rssBefore = process.memoryUsage().rss;
  const failures: string[] = [];
  let next = 0;
  let errors = 0;
  const worker = async () => {
    while (next < CASES) {
      const c = makeCase(next++, p);
      try {
        const r = await send(c);
        if (r.status >= 500) failures.push(`${c.name}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        else if (r.status >= 400) {
          errors++;
          const b = r.body as Record<string, unknown>;
          if (!(b && b.status === "error" && typeof b.code === "string" && typeof b.message === "string"))
            failures.push(
              `${c.name}: ${r.status} without the JSON error shape: ${String(r.body).slice(0, 200)}`,
            );
        } else if (r.status !== 200) failures.push(`${c.name}: unexpected ${r.status}`);
      } catch (err) {
        failures.push(`${c.name}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const growthMb = (process.memoryUsage().rss - rssBefore) / 1e6;
  assert.deepEqual(failures, [], failures.slice(0, 20).join("\n"));
  assert.ok(errors > CASES / 2, `most cases are client errors (${errors} of ${CASES})`);
  assert.ok(growthMb < RSS_GROWTH_MB, `RSS grew ${growthMb.toFixed(0)} MB over the corpus`);
  assert.deepEqual(await valid(), before, "a valid image gets the same answer after the corpus");
  t.diagnostic(`${CASES} cases, ${errors} client errors, RSS +${growthMb.toFixed(0)} MB`);
});
