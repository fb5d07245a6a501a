import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { registerModelsCommand } from "../src/cli/models.ts";
import { skipUnlessCI } from "./support/ci.ts";

const REPO = resolve(fileURLToPath(new URL("..", import.meta.url)));
const MODELS_DIR = join(resolve(process.env["MASKWATCH_SHARED"] ?? join(REPO, "..", "shared")), "models");
const HAVE_SHARED = existsSync(join(MODELS_DIR, "yunet", "yunet_n_dynamic.onnx"));

async function run(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  let out = "";
  let err = "";
  let code = 0;
  const program = new Command("maskwatch").exitOverride();
  const toOut = (s: string) => {
    out += s;
  };
  const toErr = (s: string) => {
    err += s;
  };
  program.configureOutput({ writeOut: toOut, writeErr: toErr });
  registerModelsCommand(program, {
    stdout: toOut,
    stderr: toErr,
    setExitCode: (c) => {
      code = c;
    },
    interactive: false,
  });
  try {
    await program.parseAsync(["models", ...args], { from: "user" });
  } catch (e) {
    code = (e as { exitCode?: number }).exitCode ?? 1;
  }
  return { out, err, code };
}

let dir = "";
const saved = process.env["MASKWATCH_MODEL_DIR"];
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-cli-"));
  process.env["MASKWATCH_MODEL_DIR"] = dir;
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
  if (saved === undefined) delete process.env["MASKWATCH_MODEL_DIR"];
  else process.env["MASKWATCH_MODEL_DIR"] = saved;
});

test("models list: table and --json", async () => {
  const table = await run("list");
  assert.equal(table.code, 0);
  assert.match(table.out, /^ID\s+INSTALLED\s+SIZE\s+DEFAULT\s+LICENCE\s+SOURCE/);
  // The project's own models ship in the repository: installed even with an empty cache.
  assert.match(table.out, /\nmask-classifier\s+yes\s+\d/);
  assert.match(table.out, /\nmaskwatch-detector\s+yes\s+\d/);
  assert.match(
    table.out,
    /blazeface-back-256\s+no\s+-\s+yes\s+Apache-2\.0\s+npm:jp\.keijiro\.mediapipe\.blazeface@1\.2\.0/,
  );
  const json = await run("list", "--json");
  const rows = JSON.parse(json.out) as Array<{ id: string; pulled: boolean }>;
  assert.equal(rows.length, 14);
  const project = new Set(["maskwatch-detector", "mask-classifier"]);
  assert.deepEqual(
    rows.filter((r) => r.pulled).map((r) => r.id),
    [...project],
    "only the project's models are present in an empty cache",
  );
});

test("models pull / verify through the CLI", {
  skip: skipUnlessCI(HAVE_SHARED ? false : `no ${MODELS_DIR}`),
}, async () => {
  const pulled = await run("pull", "yunet-n", "ultraface-rfb-320", "--mirror", MODELS_DIR);
  assert.equal(pulled.code, 0, pulled.err);
  assert.match(pulled.out, /yunet-n: pulled from /);
  const quiet = await run("pull", "yunet-n", "--mirror", MODELS_DIR, "--quiet");
  assert.deepEqual(quiet, { out: "", err: "", code: 0 });

  const ok = await run("verify", "yunet-n", "ultraface-rfb-320");
  assert.equal(ok.code, 0);
  assert.match(ok.out, /^ok\s+yunet-n/m);
  const all = await run("verify"); // missing optional models are listed, not failures
  assert.equal(all.code, 0, all.err);
  assert.match(all.out, /^missing\s+yunet-s/m);
  const missing = await run("verify", "yunet-n", "yunet-s");
  assert.equal(missing.code, 1);
  assert.match(missing.err, /failed verification: yunet-s/);

  const file = join(dir, "yunet-n.onnx");
  const data = await readFile(file);
  data[100] ^= 0xff;
  await writeFile(file, data);
  const bad = await run("verify", "--json");
  assert.equal(bad.code, 1);
  assert.equal(
    (JSON.parse(bad.out) as Array<{ id: string; status: string }>).find((r) => r.id === "yunet-n")?.status,
    "mismatch",
  );
  // A file another version cached (or a damaged one) is not "installed": list says so and how to fix it.
  const listed = await run("list");
  assert.match(listed.out, /\nyunet-n\s+outdated\s+\d/);
  assert.match(listed.out, /\nultraface-rfb-320\s+yes\s+\d/);
  assert.match(listed.out, /outdated: .*\n\s+npx maskwatch models pull yunet-n\n/);
  const rows = JSON.parse((await run("list", "--json")).out) as Array<{
    id: string;
    pulled: boolean;
    verified: boolean;
  }>;
  assert.deepEqual(
    rows
      .filter((r) => r.id === "yunet-n" || r.id === "ultraface-rfb-320")
      .map((r) => [r.id, r.pulled, r.verified]),
    [
      ["yunet-n", true, false],
      ["ultraface-rfb-320", true, true],
    ],
  );
  const repulled = await run("pull", "yunet-n", "--mirror", MODELS_DIR);
  assert.equal(repulled.code, 0, repulled.err);
  assert.match((await run("list")).out, /\nyunet-n\s+yes\s+\d/);

  const wrongMirror = await run("pull", "yunet-s", "--mirror", join(dir, "no-such-mirror"));
  assert.equal(wrongMirror.code, 1);
  assert.match(wrongMirror.err, /^maskwatch: yunet-s: mirror has no file /m);
  assert.doesNotMatch(wrongMirror.err, /\n\s+at /, "no stack trace");
});

test("models pull: usage errors", async () => {
  const none = await run("pull");
  assert.equal(none.code, 1);
  assert.match(none.err, /nothing to pull/);
  const unknown = await run("pull", "yunet-n", "no-such-model");
  assert.equal(unknown.code, 1);
  assert.match(
    unknown.err,
    /^maskwatch: unknown model "no-such-model"; known models: maskwatch-detector, mask-classifier, mtcnn-pnet, /,
  );
  assert.doesNotMatch(unknown.err, /\n\s+at /);
  const v = await run("verify", "nope");
  assert.equal(v.code, 1);
  assert.match(v.err, /unknown model "nope"/);
});
