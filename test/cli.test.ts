import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { REPO, sharedPath } from "./support/paths.ts";

const BIN = join(REPO, "bin/maskwatch.js");

function maskwatch(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: REPO, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

let dir = "";
let skip: string | null = null;
const photo = sharedPath("datasets/dlib-faces/2008_002506.jpg");

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-cli-"));
  skip = photo ? await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]) : "dlib-faces is absent";
  if (photo) {
    await copyFile(photo, join(dir, "a.jpg"));
    await sharp(photo).png().toFile(join(dir, "b.png"));
    await writeFile(join(dir, "notes.txt"), "not an image, skipped inside folders");
    await writeFile(join(dir, "broken.jpg"), "this is not a JPEG");
  }
});
after(() => rm(dir, { recursive: true, force: true }));

test("detect --jsonl: one JSON object per image, faces in pixels, timings", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const r = await maskwatch("detect", join(dir, "a.jpg"), "--jsonl");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1);
  const row = JSON.parse(lines[0]);
  assert.equal(row.image, join(dir, "a.jpg"));
  assert.deepEqual([row.width, row.height], [500, 375]);
  assert.equal(row.faces.length, 3);
  for (const f of row.faces) {
    assert.equal(f.box.length, 4);
    assert.ok(f.score > 0.7 && f.score <= 1);
    assert.deepEqual(Object.keys(f.landmarks), [
      "left_eye",
      "right_eye",
      "nose",
      "mouth_left",
      "mouth_right",
    ]);
  }
  assert.ok(row.timings_ms.decode >= 0 && row.timings_ms.detect > 0);
});

test("detect on a folder: images only, a broken file reported and the exit code says so", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const out = join(dir, "drawn");
  const r = await maskwatch("detect", dir, "--jsonl", "--draw", out, "--max-faces", "2");
  assert.equal(r.code, 1, "a failed image makes the exit code 1");
  const rows = r.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    rows.map((x) => x.image.split("/").pop()),
    ["a.jpg", "b.png", "broken.jpg"],
  );
  assert.equal(rows[0].faces.length, 2);
  assert.equal(rows[1].faces.length, 2);
  assert.equal(rows[2].error.code, "unsupported_image");
  assert.deepEqual((await readdir(out)).sort(), ["a.jpg", "b.jpg"]);
  const meta = await sharp(join(out, "a.jpg")).metadata();
  assert.deepEqual([meta.width, meta.height], [500, 375]);
});

test("detect: the summary line, and MTCNN stage thresholds", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const r = await maskwatch(
    "detect",
    join(dir, "a.jpg"),
    "--detector",
    "mtcnn",
    "--thresholds",
    "0.6,0.7,0.7",
    "--min-face-size",
    "40",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /a\.jpg: 500×375, 3 face\(s\)/);
});

test("detect: wrong options are refused with a message", async () => {
  const wrongCount = await maskwatch("detect", "x.jpg", "--detector", "mtcnn", "--thresholds", "0.6,0.7");
  assert.notEqual(wrongCount.code, 0);
  assert.match(wrongCount.stderr, /three values/);
  const badDetector = await maskwatch("detect", "x.jpg", "--detector", "nope");
  assert.notEqual(badDetector.code, 0);
  assert.match(badDetector.stderr, /mtcnn/);
  const badNumber = await maskwatch("detect", "x.jpg", "--min-face-size", "-3");
  assert.notEqual(badNumber.code, 0);
  assert.match(badNumber.stderr, /positive number/);
  const nothing = await maskwatch("detect", join(tmpdir(), "maskwatch-no-such-file.jpg"));
  assert.equal(nothing.code, 2);
  assert.match(nothing.stderr, /no such file/);
});
