/**
 * The HTTP service on loopback with real models, a real SQLite database and real workers.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { loadConfig } from "../src/server/config.ts";
import { type RunningServer, startServer } from "../src/server/main.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { sharedPath } from "./support/paths.ts";

const KEY = "test-bootstrap-key-0123456789";
let server: RunningServer | undefined;
let dataDir = "";
let photo: Uint8Array<ArrayBuffer>;
let skip: string | null = null;

before(async () => {
  const file = sharedPath("datasets/dlib-faces/2008_002506.jpg");
  skip = file
    ? await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet", "blazeface-back-256"])
    : "dlib-faces is absent";
  if (skip || !file) return;
  photo = new Uint8Array(await readFile(file));
  dataDir = await mkdtemp(join(tmpdir(), "maskwatch-server-"));
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    MASKWATCH_DATA_DIR: dataDir,
    MASKWATCH_API_KEY: KEY,
    MASKWATCH_RATE_LIMIT: "40",
    MASKWATCH_WORKERS: "1",
    MASKWATCH_MAX_UPLOAD_BYTES: String(5 * 1024 * 1024),
    LOG_LEVEL: "warn",
  });
  server = await startServer(config);
  for (let i = 0; i < 100; i++) {
    const ready = await fetch(`${server.url}/ready`);
    if (ready.status === 200) break;
    await new Promise((r) => setTimeout(r, 200));
  }
});

after(async () => {
  await server?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

function form(field: string, bytes: Uint8Array, type = "image/jpeg"): FormData {
  const f = new FormData();
  f.append(field, new Blob([new Uint8Array(bytes)], { type }), "photo.jpg");
  return f;
}

async function call(path: string, init: RequestInit & { key?: string | null } = {}) {
  const headers = new Headers(init.headers);
  if (init.key !== null) headers.set("x-api-key", init.key ?? KEY);
  const res = await fetch(`${server!.url}${path}`, { ...init, headers });
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body: body as Record<string, unknown> };
}

function assertError(r: { status: number; body: Record<string, unknown> }, status: number, code: string) {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.equal(r.body.status, "error");
  assert.equal(r.body.code, code);
  assert.equal(typeof r.body.message, "string");
}

test("POST /detect answers exactly as the FastAPI + MTCNN service did", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const r = await call("/detect?min_face_size=20&threshold_pnet=0.6&threshold_rnet=0.7&threshold_onet=0.7", {
    method: "POST",
    body: form("file", photo),
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(Object.keys(r.body).sort(), ["boxes", "keypoints", "scores"]);
  const { boxes, keypoints, scores } = r.body as {
    boxes: number[][];
    keypoints: Record<string, number[]>[];
    scores: number[];
  };
  assert.equal(boxes.length, 3);
  assert.equal(keypoints.length, 3);
  assert.equal(scores.length, 3);
  for (const b of boxes) assert.ok(b.length === 4 && b.every(Number.isInteger));
  for (const k of keypoints) {
    assert.deepEqual(Object.keys(k), ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]);
    for (const p of Object.values(k)) assert.ok(p.length === 2 && p.every(Number.isInteger));
  }
  assert.ok(scores.every((s) => s > 0.7 && s <= 1));
});

test("API keys: missing, wrong, created by an admin, revoked", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  assertError(
    await call("/detect", { method: "POST", body: form("file", photo), key: null }),
    401,
    "missing_api_key",
  );
  assertError(
    await call("/detect", { method: "POST", body: form("file", photo), key: "nope-nope-nope" }),
    401,
    "invalid_api_key",
  );

  const created = await call("/api/v1/keys", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "camera-1", scopes: ["detect"] }),
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const key = created.body.key as string;
  assert.match(key, /^mw_/);
  const listed = await call("/api/v1/keys");
  assert.ok(!JSON.stringify(listed.body).includes(key), "the key itself is never listed");

  const ok = await call("/api/v1/detect", {
    method: "POST",
    headers: { "content-type": "image/jpeg" },
    body: photo,
    key,
  });
  assert.equal(ok.status, 200);
  assertError(await call("/api/v1/keys", { key }), 403, "forbidden");

  const revoked = await call(`/api/v1/keys/${created.body.id}`, { method: "DELETE" });
  assert.equal(revoked.status, 200);
  assertError(
    await call("/api/v1/detect", {
      method: "POST",
      headers: { "content-type": "image/jpeg" },
      body: photo,
      key,
    }),
    401,
    "invalid_api_key",
  );
});

test("POST /api/v1/detect: multipart, raw image and JSON base64 give the same faces", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const a = await call("/api/v1/detect?mask=false&detector=mtcnn", {
    method: "POST",
    body: form("file", photo),
  });
  const b = await call("/api/v1/detect?detector=mtcnn", {
    method: "POST",
    headers: { "content-type": "image/jpeg" },
    body: photo,
  });
  const c = await call("/api/v1/detect", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      image: Buffer.from(photo).toString("base64"),
      detector: "mtcnn",
      max_faces: 2,
      annotate: true,
    }),
  });
  for (const r of [a, b, c]) assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(a.body.faces, b.body.faces);
  assert.equal((a.body.faces as unknown[]).length, 3);
  assert.deepEqual(c.body.faces, (a.body.faces as unknown[]).slice(0, 2));
  assert.equal(a.body.width, 500);
  assert.deepEqual(a.body.models, [
    { id: "mtcnn-pnet", version: "1.0.24" },
    { id: "mtcnn-rnet", version: "1.0.24" },
    { id: "mtcnn-onet", version: "1.0.24" },
  ]);
  const jpeg = Buffer.from(c.body.annotated_jpeg as string, "base64");
  assert.equal((await sharp(jpeg).metadata()).width, 500);
});

test("POST /api/v1/detect/batch: a result or an error per image", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const f = new FormData();
  f.append("a", new Blob([photo], { type: "image/jpeg" }), "a.jpg");
  f.append("b", new Blob([new Uint8Array(100)], { type: "image/jpeg" }), "b.jpg");
  const r = await call("/api/v1/detect/batch?detector=blazeface", {
    method: "POST",
    body: f,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const results = r.body.results as {
    index: number;
    result?: { faces: unknown[] };
    error?: { code: string };
  }[];
  assert.equal(results.length, 2);
  assert.equal(results[0].result?.faces.length, 3);
  assert.equal(results[1].error?.code, "unsupported_image");
});

test("bad input gets its 4xx with a JSON body, and the server stays up", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const truncated = photo.subarray(0, Math.floor(photo.length / 2));
  const png = new Uint8Array(
    await sharp({ create: { width: 1, height: 1, channels: 3, background: "red" } })
      .png()
      .toBuffer(),
  );
  const view = new DataView(png.buffer);
  view.setUint32(16, 50000); // IHDR width
  view.setUint32(20, 50000); // IHDR height
  const random = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7919) % 251);
  const cases: [string, () => Promise<{ status: number; body: Record<string, unknown> }>, number, string][] =
    [
      [
        "zero bytes",
        () => call("/detect", { method: "POST", body: form("file", new Uint8Array(0)) }),
        400,
        "empty_image",
      ],
      [
        "random bytes",
        () => call("/detect", { method: "POST", body: form("file", random) }),
        415,
        "unsupported_image",
      ],
      [
        "truncated JPEG",
        () => call("/detect", { method: "POST", body: form("file", truncated) }),
        400,
        "corrupt_image",
      ],
      [
        "50000×50000 PNG",
        () => call("/detect", { method: "POST", body: form("file", png, "image/png") }),
        413,
        "too_many_pixels",
      ],
      [
        "wrong field",
        () => call("/detect", { method: "POST", body: form("image", photo) }),
        400,
        "wrong_field",
      ],
      [
        "text body",
        () =>
          call("/api/v1/detect", { method: "POST", headers: { "content-type": "text/plain" }, body: "hi" }),
        415,
        "unsupported_media_type",
      ],
      [
        "bad parameter",
        () => call("/detect?min_face_size=-4", { method: "POST", body: form("file", photo) }),
        400,
        "invalid_parameters",
      ],
      [
        "unknown detector",
        () => call("/api/v1/detect?detector=nope", { method: "POST", body: form("file", photo) }),
        400,
        "invalid_parameters",
      ],
      [
        "bad JSON",
        () =>
          call("/api/v1/detect", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: "{",
          }),
        400,
        "invalid_json",
      ],
      ["no route", () => call("/nope"), 404, "not_found"],
    ];
  for (const [name, run, status, code] of cases) {
    const r = await run();
    assert.equal(r.status, status, `${name}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, code, name);
    assert.equal(r.body.status, "error", name);
  }
  // 100 MB: refused from its Content-Length, before the body is read.
  const big = await rawPost("/api/v1/detect", 100 * 1024 * 1024);
  assert.equal(big.status, 413);
  assert.equal(JSON.parse(big.body).status, "error");
  assert.equal((await call("/health")).status, 200);
});

test("rate limit per key: 429 with Retry-After", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  let limited: Awaited<ReturnType<typeof call>> | undefined;
  for (let i = 0; i < 60 && !limited; i++) {
    const r = await call("/api/v1/models");
    if (r.status === 429) limited = r;
  }
  assert.ok(limited, "no 429 within 60 requests at a limit of 40 per minute");
  assertError(limited, 429, "rate_limited");
  assert.ok(Number(limited.headers.get("retry-after")) > 0);
});

test("health, readiness, metrics and the OpenAPI document", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  assert.deepEqual((await call("/health", { key: null })).body, { status: "ok" });
  const ready = await call("/ready", { key: null });
  assert.equal(ready.status, 200);
  const metrics = await call("/metrics", { key: null });
  assert.match(String(metrics.body), /http_request_duration_seconds_bucket/);
  assert.match(String(metrics.body), /maskwatch_faces_total\{label="unclassified"\} \d+/);
  assert.match(String(metrics.body), /process_resident_memory_bytes/);
  const spec = await call("/openapi.json", { key: null });
  const paths = Object.keys((spec.body as { paths: Record<string, unknown> }).paths);
  for (const p of [
    "/detect",
    "/api/v1/detect",
    "/api/v1/detect/batch",
    "/api/v1/models",
    "/health",
    "/ready",
  ]) {
    assert.ok(paths.includes(p), `${p} in the OpenAPI document`);
  }
  // Upload endpoints describe a multipart body with a binary file, so "Try it out" can send one.
  type Spec = {
    paths: Record<string, { post?: { requestBody?: { content: Record<string, { schema: unknown }> } } }>;
  };
  const described = (spec.body as Spec).paths;
  for (const [p, field] of [
    ["/detect", "file"],
    ["/api/v1/detect", "file"],
    ["/api/v1/detect/batch", "files"],
    ["/api/v1/jobs", "file"],
  ] as const) {
    const multipart = described[p]?.post?.requestBody?.content["multipart/form-data"]?.schema as
      | { properties: Record<string, { format?: string; items?: { format?: string } }> }
      | undefined;
    const prop = multipart?.properties[field];
    assert.equal(
      prop?.format ?? prop?.items?.format,
      "binary",
      `${p}: multipart ${field} in ${JSON.stringify(described[p])}`,
    );
  }
  const docs = await fetch(`${server!.url}/docs/`);
  assert.equal(docs.status, 200);
  const headers = (await fetch(`${server!.url}/health`)).headers;
  assert.equal(headers.get("x-content-type-options"), "nosniff");
  assert.ok(headers.get("x-request-id"));
});

/** A POST announcing `length` bytes of image/jpeg; the answer may come before all are sent. */
function rawPost(path: string, length: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, server!.url);
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        headers: { "content-type": "image/jpeg", "content-length": length, "x-api-key": KEY },
      },
      (res) => {
        let body = "";
        res.on("data", (c) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    const chunk = Buffer.alloc(1024 * 1024);
    let sent = 0;
    const pump = () => {
      while (sent < length) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once("drain", pump);
      }
      req.end();
    };
    pump();
  });
}
