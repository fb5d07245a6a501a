/**
 * The model catalogue over HTTP on a real server whose model cache starts empty: what is installed
 * (sha256 checked), a missing detector answered with how to install it (no server paths), and an
 * admin installing it from ../shared/models used as MASKWATCH_MODEL_MIRROR.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { skipUnlessCI } from "./support/ci.ts";
import { sharedPath } from "./support/paths.ts";
import { startTestServer, type TestServer } from "./support/server.ts";

const ADMIN = "models-api-admin-key-0123456789";
const MIRROR = sharedPath("models");
const saved = { dir: process.env.MASKWATCH_MODEL_DIR, mirror: process.env.MASKWATCH_MODEL_MIRROR };
let cache = "";
let server: TestServer | undefined;

before(async () => {
  cache = await mkdtemp(join(tmpdir(), "maskwatch-models-api-"));
  process.env.MASKWATCH_MODEL_DIR = cache;
  delete process.env.MASKWATCH_MODEL_MIRROR;
  server = await startTestServer({ MASKWATCH_API_KEY: ADMIN, MASKWATCH_WORKERS: "1" });
});

after(async () => {
  await server?.close();
  for (const [name, value] of [
    ["MASKWATCH_MODEL_DIR", saved.dir],
    ["MASKWATCH_MODEL_MIRROR", saved.mirror],
  ] as const) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  await rm(cache, { recursive: true, force: true });
});

async function call(path: string, init: RequestInit & { key?: string } = {}) {
  const headers = new Headers(init.headers);
  headers.set("x-api-key", init.key ?? ADMIN);
  if (typeof init.body === "string") headers.set("content-type", "application/json");
  const res = await fetch(`${server!.url}${path}`, { ...init, headers });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: checked field by field
  return { status: res.status, body: JSON.parse(text) as any, text };
}

type Listed = { id: string; installed: boolean };

test("GET /api/v1/models says what is installed; a missing detector answers how to install it", async () => {
  const { body } = await call("/api/v1/models");
  const detectors = new Map((body.detectors as Listed[]).map((d) => [d.id, d.installed]));
  const models = new Map((body.models as Listed[]).map((m) => [m.id, m.installed]));
  assert.equal(detectors.get("maskwatch"), true, "the project's own detector ships in the repository");
  assert.equal(models.get("mask-classifier"), true, "so does the mask classifier");
  assert.equal(detectors.get("yunet"), false, "the cache is empty");
  assert.equal(models.get("yunet-n"), false);

  const photo = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#888" } })
    .jpeg()
    .toBuffer();
  const r = await call("/api/v1/detect?detector=yunet", {
    method: "POST",
    headers: { "content-type": "image/jpeg" },
    body: photo,
  });
  assert.equal(r.status, 503, r.text);
  assert.equal(r.body.code, "model_not_installed");
  assert.match(r.body.message, /maskwatch models pull yunet-n/);
  assert.ok(!r.body.message.includes(cache), `no server path in ${r.body.message}`);
});

test("POST /api/v1/models/pull: admins only, known detectors only", async () => {
  const made = await call("/api/v1/keys", {
    method: "POST",
    body: JSON.stringify({ name: "detect", scopes: ["detect"] }),
  });
  const detect = made.body.key as string;
  const denied = await call("/api/v1/models/pull", {
    method: "POST",
    key: detect,
    body: JSON.stringify({ detector: "yunet" }),
  });
  assert.equal(denied.status, 403);
  const unknown = await call("/api/v1/models/pull", {
    method: "POST",
    body: JSON.stringify({ detector: "toString" }),
  });
  assert.equal(unknown.status, 400);
  assert.equal(unknown.body.code, "unknown_detector");
  process.env.MASKWATCH_MODEL_MIRROR = join(cache, "no-such-mirror");
  const failed = await call("/api/v1/models/pull", {
    method: "POST",
    body: JSON.stringify({ detector: "yunet" }),
  });
  delete process.env.MASKWATCH_MODEL_MIRROR;
  assert.equal(failed.status, 502, failed.text);
  assert.equal(failed.body.code, "model_pull_failed");
  assert.match(failed.body.message, /yunet-n/);
});

test("an admin installs a detector from the mirror, and it works at once", {
  skip: skipUnlessCI(!MIRROR && "../shared/models is absent (set MASKWATCH_SHARED)"),
}, async () => {
  process.env.MASKWATCH_MODEL_MIRROR = MIRROR!;
  try {
    const r = await call("/api/v1/models/pull", {
      method: "POST",
      body: JSON.stringify({ detector: "yunet" }),
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, {
      detector: "yunet",
      installed: true,
      models: [{ id: "yunet-n", status: "pulled" }],
    });
  } finally {
    delete process.env.MASKWATCH_MODEL_MIRROR;
  }
  const { body } = await call("/api/v1/models");
  assert.equal((body.detectors as Listed[]).find((d) => d.id === "yunet")?.installed, true);
  const photo = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#888" } })
    .jpeg()
    .toBuffer();
  const detected = await call("/api/v1/detect?detector=yunet", {
    method: "POST",
    headers: { "content-type": "image/jpeg" },
    body: photo,
  });
  assert.equal(detected.status, 200, detected.text);
  assert.equal(detected.body.detector, "yunet");
});
