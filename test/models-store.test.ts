/**
 * Model store: pulls through a real local HTTP server serving the shared model folder, checks
 * every load, and never leaves an unverified file in the cache.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { isModelError } from "../src/models/errors.ts";
import { download } from "../src/models/fetch.ts";
import {
  getModel,
  list,
  modelBytes,
  modelPath,
  pull,
  pullMany,
  sha256,
  verify,
} from "../src/models/store.ts";
import { skipUnlessCI } from "./support/ci.ts";

const REPO = resolve(fileURLToPath(new URL("..", import.meta.url)));
const SHARED = resolve(process.env["MASKWATCH_SHARED"] ?? join(REPO, "..", "shared"));
const MODELS_DIR = join(SHARED, "models");
const HAVE_SHARED = existsSync(join(MODELS_DIR, "yunet", "yunet_n_dynamic.onnx"));
/** Quiet: UltraFace exports keep initializers in the graph inputs, which ORT warns about at length. */
const ORT_OPTS: ort.InferenceSession.SessionOptions = { logSeverityLevel: 3 };
const SKIP = HAVE_SHARED ? false : `no shared model folder at ${MODELS_DIR} (set MASKWATCH_SHARED)`;

/** Serves MODELS_DIR under /m/, redirects /r/* to /m/*, and serves overrides (path → bytes). */
function startServer(
  overrides: Map<string, Uint8Array>,
  hits: string[],
): Promise<{ server: Server; base: string }> {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    hits.push(url.pathname);
    if (url.pathname.startsWith("/r/")) {
      res.writeHead(302, { location: `/m/${url.pathname.slice(3)}` }).end();
      return;
    }
    const rel = decodeURIComponent(url.pathname.replace(/^\/m\//, ""));
    const override = overrides.get(rel);
    if (override) {
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(override);
      return;
    }
    const file = resolve(MODELS_DIR, rel);
    if (!url.pathname.startsWith("/m/") || !file.startsWith(`${MODELS_DIR}/`)) {
      res.writeHead(404).end("not found");
      return;
    }
    try {
      const data = await readFile(file);
      res.writeHead(200, { "content-length": data.length }).end(data);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  return new Promise((ok) =>
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      ok({ server, base: `http://127.0.0.1:${port}` });
    }),
  );
}

describe("model store over HTTP", { skip: skipUnlessCI(SKIP) }, () => {
  const overrides = new Map<string, Uint8Array>();
  const hits: string[] = [];
  let server: Server;
  let base = "";
  let dir = "";
  const savedEnv = { dir: process.env["MASKWATCH_MODEL_DIR"], mirror: process.env["MASKWATCH_MODEL_MIRROR"] };

  before(async () => {
    ({ server, base } = await startServer(overrides, hits));
    dir = await mkdtemp(join(tmpdir(), "maskwatch-models-"));
    process.env["MASKWATCH_MODEL_DIR"] = dir;
    delete process.env["MASKWATCH_MODEL_MIRROR"];
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((ok) => server.close(ok));
    await rm(dir, { recursive: true, force: true });
    for (const [k, v] of [
      ["MASKWATCH_MODEL_DIR", savedEnv.dir],
      ["MASKWATCH_MODEL_MIRROR", savedEnv.mirror],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  test("pull yunet + ultraface from an http mirror, then load them with onnxruntime", async () => {
    const ids = ["yunet-n", "yunet-s", "ultraface-rfb-320", "ultraface-masked-640"];
    const phases: string[] = [];
    for (const id of ids) {
      await assert.rejects(
        modelPath(id),
        (e) => isModelError(e, "not_pulled") && e.message.includes(`models pull ${id}`),
      );
      const r = await pull(id, { mirror: `${base}/m/`, onProgress: (p) => phases.push(p.phase) });
      assert.equal(r.status, "pulled");
      assert.equal(r.path, join(dir, getModel(id).file));
      assert.equal(r.sha256, getModel(id).sha256);
    }
    assert.ok(phases.includes("fetch") && phases.includes("write") && phases.includes("done"));
    assert.deepEqual(
      (await readdir(dir)).sort(),
      ids.map((id) => getModel(id).file).sort(),
      "no temp files left",
    );

    for (const id of ids) {
      const session = await ort.InferenceSession.create(await modelPath(id), ORT_OPTS);
      assert.ok(session.inputNames.length >= 1, id);
      assert.ok(session.outputNames.length >= 1, id);
      await session.release();
    }
    // Run one: UltraFace 320x240 gives scores [1,N,2] and boxes [1,N,4].
    const session = await ort.InferenceSession.create(await modelBytes("ultraface-rfb-320"), ORT_OPTS);
    const input = new ort.Tensor("float32", new Float32Array(3 * 240 * 320), [1, 3, 240, 320]);
    const out = await session.run({ [session.inputNames[0]!]: input });
    assert.deepEqual(out["scores"]?.dims, [1, 4420, 2]);
    assert.deepEqual(out["boxes"]?.dims, [1, 4420, 4]);
    await session.release();

    // Pulling again is a no-op; --force fetches again (through a redirect this time).
    assert.equal((await pull("yunet-n", { mirror: `${base}/m` })).status, "present");
    hits.length = 0;
    const again = await pull("yunet-n", { mirror: `${base}/r/`, force: true });
    assert.equal(again.status, "pulled");
    assert.deepEqual(hits, ["/r/yunet/yunet_n_dynamic.onnx", "/m/yunet/yunet_n_dynamic.onnx"]);
  });

  test("the mirror can come from MASKWATCH_MODEL_MIRROR", async () => {
    process.env["MASKWATCH_MODEL_MIRROR"] = `${base}/m`;
    try {
      const r = await pull("ultraface-rfb-640");
      assert.equal(r.status, "pulled");
      assert.equal(await modelPath("ultraface-rfb-640"), join(dir, "ultraface-rfb-640.onnx"));
    } finally {
      delete process.env["MASKWATCH_MODEL_MIRROR"];
    }
  });

  test("a corrupted cached byte is caught at load with a clear checksum_mismatch", async () => {
    await pull("yunet-n", { mirror: `${base}/m` });
    const path = join(dir, "yunet-n.onnx");
    assert.equal(await modelPath("yunet-n"), path);
    const data = await readFile(path);
    const good = sha256(data);
    data[data.length >> 1] ^= 0x01; // same size, one bit
    await writeFile(path, data);
    await assert.rejects(modelPath("yunet-n"), (e) => {
      assert.ok(isModelError(e, "checksum_mismatch"));
      assert.match(e.message, /yunet-n\.onnx/);
      assert.ok(e.message.includes(good), "names the expected sha256");
      assert.ok(e.message.includes(sha256(data)), "names the actual sha256");
      return true;
    });
    const v = await verify(["yunet-n", "yunet-s", "yunet-2023mar"]);
    assert.deepEqual(
      v.map((r) => [r.id, r.status]),
      [
        ["yunet-n", "mismatch"],
        ["yunet-s", "ok"],
        ["yunet-2023mar", "missing"],
      ],
    );
    // A plain pull repairs it (a cached file that does not verify is not "present").
    assert.equal((await pull("yunet-n", { mirror: `${base}/m` })).status, "pulled");
    assert.equal(await modelPath("yunet-n"), path);
  });

  test("a mirror serving a wrong file: pull fails and nothing is left in the cache", async () => {
    const wrongDir = await mkdtemp(join(tmpdir(), "maskwatch-models-wrong-"));
    try {
      overrides.set(
        "yunet/face_detection_yunet_2023mar.onnx",
        await readFile(join(MODELS_DIR, "yunet/yunet_n_dynamic.onnx")),
      );
      await assert.rejects(pull("yunet-2023mar", { mirror: `${base}/m`, dir: wrongDir }), (e) => {
        assert.ok(isModelError(e, "checksum_mismatch"));
        assert.ok(e.message.includes(getModel("yunet-2023mar").sha256));
        assert.ok(e.message.includes(getModel("yunet-n").sha256), "names the sha256 it got");
        return true;
      });
      assert.deepEqual(await readdir(wrongDir), []);
      await assert.rejects(modelPath("yunet-2023mar", { dir: wrongDir }), (e) =>
        isModelError(e, "not_pulled"),
      );

      // A forced re-pull of a good cached file from a bad mirror keeps the good file.
      overrides.set("yunet/yunet_s_dynamic.onnx", new TextEncoder().encode("<html>captive portal</html>"));
      await assert.rejects(pull("yunet-s", { mirror: `${base}/m`, force: true }), (e) =>
        isModelError(e, "checksum_mismatch"),
      );
      assert.equal(await modelPath("yunet-s"), join(dir, "yunet-s.onnx"));
      assert.ok(!(await readdir(dir)).some((f) => f.endsWith(".partial")));
    } finally {
      overrides.clear();
      await rm(wrongDir, { recursive: true, force: true });
    }
  });

  test("404, size cap and unknown ids fail with typed errors", async () => {
    const emptyDir = await mkdtemp(join(tmpdir(), "maskwatch-models-404-"));
    try {
      await assert.rejects(pull("yunet-s", { mirror: `${base}/nothing-here/`, dir: emptyDir }), (e) => {
        assert.ok(isModelError(e, "fetch_failed"));
        assert.match(e.message, /HTTP 404/);
        return true;
      });
      await assert.rejects(pull("yunet-s", { mirror: `${base}/m`, dir: emptyDir, maxBytes: 1000 }), (e) =>
        isModelError(e, "too_large"),
      );
      await assert.rejects(download(`${base}/m/yunet/yunet_s_dynamic.onnx`, { maxBytes: 100 }), (e) =>
        isModelError(e, "too_large"),
      );
      assert.deepEqual(await readdir(emptyDir), []);
    } finally {
      await rm(emptyDir, { recursive: true, force: true });
    }
    for (const call of [
      () => modelPath("no-such-model"),
      () => pull("no-such-model"),
      () => verify(["nope"]),
    ]) {
      await assert.rejects(call(), (e) => {
        assert.ok(isModelError(e, "unknown_model"));
        assert.match(e.message, /unknown model/);
        return true;
      });
    }
    assert.throws(
      () => getModel("nope"),
      (e) => isModelError(e, "unknown_model"),
    );
    await assert.rejects(pullMany(["yunet-n", "nope"]), (e) => isModelError(e, "unknown_model"));
  });

  test("pullMany reports failures per model; list shows the cache", async () => {
    overrides.set("ultraface/version-RFB-320.onnx", new Uint8Array(10));
    try {
      const res = await pullMany(["ultraface-rfb-320", "yunet-s", "ultraface-masked-1280"], {
        mirror: `${base}/m`,
        force: true,
      });
      assert.deepEqual(
        res.map((r) => r.status),
        ["failed", "pulled", "pulled"],
      );
    } finally {
      overrides.clear();
    }
    const rows = await list();
    const row = rows.find((r) => r.id === "ultraface-masked-1280")!;
    assert.equal(row.pulled, true);
    assert.equal(row.size, 2835212);
    assert.equal(row.licence, "MIT");
    assert.equal(rows.find((r) => r.id === "yunet-2023mar")!.pulled, false);
    assert.equal(rows.length, 14);
  });
});

test("folder mirror: URL models copy from <mirror>/<mirrorPath>", { skip: skipUnlessCI(SKIP) }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "maskwatch-models-dir-"));
  try {
    const r = await pull("yunet-2023mar", { mirror: MODELS_DIR, dir });
    assert.equal(r.status, "pulled");
    assert.equal(await modelPath("yunet-2023mar", { dir }), join(dir, "yunet-2023mar.onnx"));
    await assert.rejects(pull("yunet-s", { mirror: join(dir, "empty"), dir }), (e) =>
      isModelError(e, "fetch_failed"),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
