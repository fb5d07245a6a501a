/**
 * Where sources may point: link-local and metadata hosts refused whatever the spelling, the allow list,
 * and file sources kept inside MASKWATCH_SOURCE_FILE_ROOT (symlinks followed).
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { checkSourceTarget, type Lookup, parseAllowList } from "../src/streams/source-policy.ts";

/** A resolver with fixed answers, so the test does not depend on this machine's DNS. */
const lookup: Lookup = async (host) => {
  const table: Record<string, string[]> = {
    "cam.lan": ["192.168.1.20"],
    "sneaky.example": ["169.254.169.254"],
    "v6-sneaky.example": ["fe80::1"],
  };
  const found = table[host];
  if (!found) throw new Error(`ENOTFOUND ${host}`);
  return found.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
};

const refused = (p: Promise<void>, re: RegExp) =>
  assert.rejects(p, (e: Error & { code?: string }) => e.code === "invalid_source" && re.test(e.message));

test("link-local and metadata hosts are refused, however the URL is spelled", async () => {
  const open = { allow: [] };
  for (const url of [
    "http://169.254.169.254/latest/meta-data/",
    "HTTP://169.254.169.254/",
    "rtsp://[fe80::1]:554/x",
    "http://metadata.google.internal/computeMetadata/v1/",
    "HtTp://METADATA.google.internal/",
    "http://sneaky.example/",
    "rtsp://v6-sneaky.example/live",
    "http://0.0.0.0:8080/",
  ])
    await refused(checkSourceTarget("stream", url, open, lookup), /link-local or metadata/);
  for (const url of [
    "rtsp://cam.lan/live",
    "rtsp://10.0.0.7/live",
    "http://127.0.0.1:8554/x",
    "rtsp://not-yet.lan/x",
  ])
    await checkSourceTarget("stream", url, open, lookup);
});

test("MASKWATCH_SOURCE_ALLOW: only listed hosts, names, wildcards and CIDRs; an allowed name may be link-local", async () => {
  const policy = { allow: parseAllowList(" cam.lan, *.cams.example ,10.1.0.0/16, Sneaky.Example ") };
  assert.deepEqual(policy.allow, ["cam.lan", "*.cams.example", "10.1.0.0/16", "sneaky.example"]);
  await checkSourceTarget("stream", "rtsp://cam.lan/live", policy, lookup);
  await checkSourceTarget("stream", "rtsp://door.cams.example/live", policy, lookup);
  await checkSourceTarget("stream", "rtsp://10.1.2.3/live", policy, lookup);
  await checkSourceTarget("stream", "http://sneaky.example/", policy, lookup);
  await refused(
    checkSourceTarget("stream", "rtsp://10.2.0.1/live", policy, lookup),
    /not in MASKWATCH_SOURCE_ALLOW/,
  );
  await refused(
    checkSourceTarget("stream", "rtsp://cams.example.evil/x", policy, lookup),
    /not in MASKWATCH_SOURCE_ALLOW/,
  );
  await refused(
    checkSourceTarget("stream", "http://169.254.169.254/", policy, lookup),
    /not in MASKWATCH_SOURCE_ALLOW/,
  );
});

let dir = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-policy-"));
  await mkdir(join(dir, "videos"));
  await writeFile(join(dir, "videos", "lobby.mp4"), "x");
  await writeFile(join(dir, "secret.txt"), "x");
  await symlink(join(dir, "secret.txt"), join(dir, "videos", "escape.mp4"));
});
after(() => rm(dir, { recursive: true, force: true }));

test("MASKWATCH_SOURCE_FILE_ROOT: file sources inside it only, symlinks followed", async () => {
  const policy = { allow: [], fileRoot: join(dir, "videos") };
  await checkSourceTarget("file", join(dir, "videos", "lobby.mp4"), policy, lookup);
  await refused(checkSourceTarget("file", join(dir, "secret.txt"), policy, lookup), /must be inside/);
  await refused(
    checkSourceTarget("file", join(dir, "videos", "..", "secret.txt"), policy, lookup),
    /must be inside/,
  );
  await refused(
    checkSourceTarget("file", join(dir, "videos", "escape.mp4"), policy, lookup),
    /must be inside/,
  );
  await checkSourceTarget("file", join(dir, "secret.txt"), { allow: [] }, lookup);
});
