/**
 * Client mistakes that once stalled the server or answered 500: each must be a prompt 4xx with the JSON
 * error body, on a real server on loopback. Bodies go over a raw socket so they reach the server exactly
 * as written (no client fixes them up).
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import WebSocket from "ws";
import { startTestServer, type TestServer } from "./support/server.ts";

let server: TestServer | undefined;
let port = 0;

before(async () => {
  server = await startTestServer({ MASKWATCH_AUTH: "off", MASKWATCH_WORKERS: "1" });
  port = Number(new URL(server.url).port);
});

after(() => server?.close());

/** One HTTP/1.1 request written byte for byte; resolves with status and parsed JSON body, or rejects on timeout. */
function rawPost(path: string, contentType: string, body: Buffer, timeoutMs = 10_000) {
  return new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to POST ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("data", (d) => chunks.push(d));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString("latin1");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
      const json = text.slice(text.indexOf("\r\n\r\n") + 4);
      try {
        resolve({ status, body: JSON.parse(json) });
      } catch {
        reject(new Error(`not a JSON answer (${status}): ${text.slice(0, 300)}`));
      }
    });
    socket.write(
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n` +
        `Content-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`,
    );
    socket.end(body);
  });
}

function assertClientError(r: { status: number; body: Record<string, unknown> }, code?: string) {
  assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.status, "error");
  assert.equal(typeof r.body.code, "string");
  assert.equal(typeof r.body.message, "string");
  if (code) assert.equal(r.body.code, code);
}

const part = (headers: string, data: Buffer, eol = "\r\n") =>
  Buffer.concat([Buffer.from(`--XB${eol}${headers}${eol}${eol}`), data, Buffer.from(`${eol}--XB--${eol}`)]);

test("a multipart part without Content-Disposition is answered 400 on every upload route, whatever its size", async () => {
  for (const size of [100, 20_000, 3_000_000]) {
    const body = part("Content-Type: image/jpeg", Buffer.alloc(size, 97));
    for (const path of ["/api/v1/detect", "/detect", "/api/v1/detect/batch", "/api/v1/jobs"]) {
      assertClientError(await rawPost(path, "multipart/form-data; boundary=XB", body));
    }
  }
});

test("malformed multipart: no boundary, a wrong boundary, LF line endings: 400 malformed_multipart", async () => {
  const good = part('Content-Disposition: form-data; name="file"; filename="a.jpg"', Buffer.alloc(5000, 1));
  const lf = part(
    'Content-Disposition: form-data; name="file"; filename="a.jpg"',
    Buffer.alloc(5000, 1),
    "\n",
  );
  for (const path of ["/api/v1/detect", "/detect", "/api/v1/detect/batch", "/api/v1/jobs"]) {
    assertClientError(await rawPost(path, "multipart/form-data", good), "malformed_multipart");
    assertClientError(await rawPost(path, "multipart/form-data; boundary=ZZ", good), "malformed_multipart");
    assertClientError(await rawPost(path, "multipart/form-data; boundary=XB", lf), "malformed_multipart");
  }
});

test('JSON "detector" naming an Object.prototype key is an unknown detector, not a 500', async () => {
  const image = (
    await sharp({ create: { width: 64, height: 48, channels: 3, background: "#888" } })
      .jpeg()
      .toBuffer()
  ).toString("base64");
  for (const detector of ["toString", "__proto__", "constructor", "hasOwnProperty"]) {
    const r = await rawPost(
      "/api/v1/detect",
      "application/json",
      Buffer.from(JSON.stringify({ image, detector })),
    );
    assertClientError(r, "unknown_detector");
  }
  const q = await rawPost("/api/v1/detect?detector=toString", "image/jpeg", Buffer.from(image, "base64"));
  assertClientError(q);
});

test("annotate=true on an image JPEG cannot hold (100000×1): 400 annotate_too_large", async () => {
  const png = await sharp({ create: { width: 100_000, height: 1, channels: 3, background: "#888" } })
    .png()
    .toBuffer();
  const post = async (query: string) => {
    const res = await fetch(`${server!.url}/api/v1/detect${query}`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: png,
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  assertClientError(await post("?annotate=true"), "annotate_too_large");
  const ok = await post("");
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
});

describe("access: scopes, state-changing GETs, wrong keys, secrets in logs, metrics", () => {
  const ADMIN = "hardening-admin-key-0123456789";
  let secured: TestServer | undefined;
  let logDir = "";
  let logFile = "";

  before(async () => {
    logDir = await mkdtemp(join(tmpdir(), "maskwatch-access-"));
    logFile = join(logDir, "server.log");
    secured = await startTestServer({
      MASKWATCH_API_KEY: ADMIN,
      MASKWATCH_WORKERS: "1",
      MASKWATCH_AUTH_FAILURE_LIMIT: "5",
      MASKWATCH_BROWSER_SOURCES: "2",
      MASKWATCH_METRICS_AUTH: "on",
      MASKWATCH_LOG_FILE: logFile,
      LOG_LEVEL: "info",
    });
  });

  after(async () => {
    await secured?.close();
    await rm(logDir, { recursive: true, force: true });
  });

  const call = async (path: string, key?: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    if (key) headers.set("x-api-key", key);
    const res = await fetch(`${secured!.url}${path}`, { ...init, headers });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text };
  };
  const createKey = async (scopes: string[]) => {
    const r = await call("/api/v1/keys", ADMIN, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: scopes.join("+"), scopes }),
    });
    assert.equal(r.status, 201, r.text);
    return JSON.parse(r.text).key as string;
  };

  test("reading the log needs events:read; a detect key only analyses images", async () => {
    const detect = await createKey(["detect"]);
    const reader = await createKey(["events:read"]);
    for (const path of [
      "/api/v1/events",
      "/api/v1/stats",
      "/api/v1/violations.csv",
      "/get_stats",
      "/api/v1/sources",
    ]) {
      assert.equal((await call(path, detect)).status, 403, `${path} with a detect key`);
      assert.equal((await call(path, reader)).status, 200, `${path} with an events:read key`);
    }
    const image = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#888" } })
      .jpeg()
      .toBuffer();
    const post = (key: string) =>
      call("/api/v1/detect", key, { method: "POST", headers: { "content-type": "image/jpeg" }, body: image });
    assert.equal((await post(detect)).status, 200);
    assert.equal((await post(reader)).status, 403);
  });

  test("file sources only under the data folder's media/ by default", async () => {
    const media = join(secured!.dataDir, "media");
    await mkdir(media, { recursive: true });
    const inside = join(media, "clip.mkv");
    await writeFile(inside, "not really a video; only the path is checked here");
    const add = (url: string) =>
      call("/api/v1/sources", ADMIN, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ kind: "file", url }),
      });
    const outside = await add("/etc/hostname");
    assert.equal(outside.status, 400, outside.text);
    assert.match(JSON.parse(outside.text).message, /MASKWATCH_SOURCE_FILE_ROOT/);
    const sneaky = await add(join(media, "..", "maskwatch.db"));
    assert.equal(sneaky.status, 400, sneaky.text);
    const ok = await add(inside);
    assert.equal(ok.status, 201, ok.text);
    await call(`/api/v1/sources/${JSON.parse(ok.text).id}`, ADMIN, { method: "DELETE" });
  });

  test("a source pointing at a link-local / metadata address is a 400 through the API", async () => {
    for (const url of [
      "http://169.254.169.254/latest/meta-data/",
      "HTTP://[fe80::1]/x",
      "http://metadata.google.internal/",
    ]) {
      const r = await call("/api/v1/sources", ADMIN, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ kind: "stream", url }),
      });
      assert.equal(r.status, 400, `${url}: ${r.text}`);
      assert.equal(JSON.parse(r.text).code, "invalid_source");
    }
  });

  test("/start_detection, /stop_detection, /reset_stats (GET and POST) need admin", async () => {
    const detect = await createKey(["detect"]);
    const reader = await createKey(["events:read"]);
    for (const path of ["/start_detection", "/stop_detection", "/reset_stats"]) {
      for (const method of ["GET", "POST"]) {
        for (const key of [detect, reader]) {
          const r = await call(path, key, { method });
          assert.equal(r.status, 403, `${method} ${path}: ${r.text}`);
        }
      }
    }
    const reset = await call("/reset_stats", ADMIN, { method: "POST" });
    assert.equal(reset.status, 200, reset.text);
  });

  test("?api_key= never reaches the log; /metrics needs a key when MASKWATCH_METRICS_AUTH=on", async () => {
    const reader = await createKey(["events:read"]);
    assert.equal((await call(`/api/v1/events?api_key=${reader}`)).status, 200);
    assert.equal((await call(`/no/such/route?api_key=${reader}`)).status, 404);
    await new Promise((r) => setTimeout(r, 300));
    const log = await readFile(logFile, "utf8");
    assert.ok(log.includes("api_key=***"), "the request is logged with the key redacted");
    assert.ok(!log.includes(reader), "the key itself is not in the log");
    assert.equal((await call("/metrics")).status, 401);
    const m = await call("/metrics", reader);
    assert.equal(m.status, 200);
    assert.match(m.text, /maskwatch_/);
  });
  /** Opens the frames socket of a source; resolves with the first message and how the socket closed. */
  const openCamera = (id: string, key: string) =>
    new Promise<{ ws: WebSocket; first: Record<string, unknown> | null; closed: Promise<number> }>(
      (resolve, reject) => {
        const ws = new WebSocket(`${secured!.url.replace("http", "ws")}/api/v1/sources/${id}/frames`, {
          headers: { "x-api-key": key },
        });
        const closed = new Promise<number>((done) => ws.once("close", (code) => done(code)));
        ws.once("error", reject);
        ws.once("message", (m) => resolve({ ws, first: JSON.parse(String(m)), closed }));
        ws.once("open", () => setTimeout(() => resolve({ ws, first: null, closed }), 500));
      },
    );

  test("a browser source is its owner's: others cannot feed, stop or remove it; a cap per owner; it stops when its socket closes", async () => {
    const alice = await createKey(["detect", "events:read"]);
    const bob = await createKey(["detect", "events:read"]);
    const json = { "content-type": "application/json" };
    const add = (key: string, name: string) =>
      call("/api/v1/sources", key, {
        method: "POST",
        headers: json,
        body: JSON.stringify({ name, kind: "browser" }),
      });
    const made = await add(alice, "alice cam");
    assert.equal(made.status, 201, made.text);
    const cam = JSON.parse(made.text);
    assert.equal(cam.mine, true);
    const seenByBob = JSON.parse((await call(`/api/v1/sources/${cam.id}`, bob)).text);
    assert.equal(seenByBob.mine, false);

    const intruder = await openCamera(cam.id, bob);
    assert.equal(intruder.first?.code, "forbidden", JSON.stringify(intruder.first));
    assert.equal(await intruder.closed, 1008);
    for (const action of ["stop", "start"]) {
      const r = await call(`/api/v1/sources/${cam.id}/${action}`, bob, { method: "POST" });
      assert.equal(r.status, 403, `${action} by another user: ${r.text}`);
    }
    assert.equal((await call(`/api/v1/sources/${cam.id}`, bob, { method: "DELETE" })).status, 403);

    const owner = await openCamera(cam.id, alice);
    assert.equal(owner.first, null, `the owner's socket stays open: ${JSON.stringify(owner.first)}`);
    const state = async () => JSON.parse((await call(`/api/v1/sources/${cam.id}`, alice)).text).status.state;
    assert.notEqual(await state(), "stopped");
    owner.ws.close();
    await owner.closed;
    let last = await state();
    for (let i = 0; i < 50 && last !== "stopped"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      last = await state();
    }
    assert.equal(last, "stopped", "the source stops when its camera's socket closes");

    assert.equal((await add(alice, "alice cam 2")).status, 201);
    const third = await add(alice, "alice cam 3");
    assert.equal(third.status, 409, third.text);
    assert.equal(JSON.parse(third.text).code, "too_many_sources");
    assert.equal((await add(bob, "bob cam")).status, 201, "the cap is per owner");
    assert.equal((await call(`/api/v1/sources/${cam.id}`, alice, { method: "DELETE" })).status, 200);
    assert.equal((await add(alice, "alice cam 3")).status, 201, "removing one makes room");
  });

  test("wrong API keys from one address are limited: 429 with Retry-After, whatever key it sends next", async () => {
    for (let i = 0; i < 5; i++)
      assert.equal((await call("/api/v1/models", `wrong-key-${i}-0123456789`)).status, 401);
    const blocked = await call("/api/v1/models", "wrong-key-x-0123456789");
    assert.equal(blocked.status, 429, blocked.text);
    assert.equal(JSON.parse(blocked.text).code, "too_many_failures");
    assert.ok(Number(blocked.headers.get("retry-after")) > 0);
    assert.equal(
      (await call("/api/v1/models", ADMIN)).status,
      429,
      "a blocked address waits, whatever key it sends",
    );
  });
});

describe("bounded work: MTCNN parameter floors, a per-request deadline that frees the worker", () => {
  let bounded: TestServer | undefined;

  before(async () => {
    bounded = await startTestServer({
      MASKWATCH_AUTH: "off",
      MASKWATCH_WORKERS: "1",
      MASKWATCH_COMPAT_DETECTOR: "mtcnn",
      MASKWATCH_REQUEST_TIMEOUT_MS: "400",
    });
  });

  after(() => bounded?.close());

  const post = async (path: string, bytes: Buffer) => {
    const f = new FormData();
    f.append("file", new Blob([new Uint8Array(bytes)], { type: "image/png" }), "x.png");
    const res = await fetch(`${bounded!.url}${path}`, { method: "POST", body: f });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  test("min_face_size below MTCNN's floor is a 400; an image past the deadline is a 504 and the next one works", async () => {
    const noise = await sharp(
      Buffer.from(Array.from({ length: 1600 * 1200 * 3 }, (_, i) => (i * 7919) % 251)),
      {
        raw: { width: 1600, height: 1200, channels: 3 },
      },
    )
      .png()
      .toBuffer();
    assertClientError(await post("/detect?min_face_size=4", noise), "invalid_parameters");
    const t0 = performance.now();
    const slow = await post(
      "/detect?min_face_size=8&threshold_pnet=0&threshold_rnet=0&threshold_onet=0",
      noise,
    );
    assert.equal(slow.status, 504, JSON.stringify(slow.body));
    assert.equal(slow.body.code, "deadline_exceeded");
    assert.ok(performance.now() - t0 < 5000, "answered at the deadline, not when the work ended");
    const small = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#888" } })
      .png()
      .toBuffer();
    let status = 0;
    for (let i = 0; i < 60 && status !== 200; i++) {
      status = (await post("/api/v1/detect", small)).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(status, 200, "a replacement worker answers after the stopped one");
  });
});
