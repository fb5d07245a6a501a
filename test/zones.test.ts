/**
 * Zones: the geometry, the repository, and the real server watching the scene video with a zone
 * over the right-hand half of the picture: only the person who walks there counts, their events
 * carry the zone, and events, stats, reports and the CSV filter by it.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { openDatabase } from "../src/store/db.ts";
import { StoreError } from "../src/store/sources.ts";
import { createZone, deleteZone, listZones, updateZone } from "../src/store/zones.ts";
import { insidePolygon, zoneOf } from "../src/streams/zones.ts";
import { unlessCI } from "./support/ci.ts";
import { createTestDatabase, PG_SKIP_MESSAGE, pgTestUrl } from "./support/pg.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { maskOffScene, videoSkipReason, writeVideo } from "./support/video.ts";

const KEY = "zones-test-admin-key-0123456789";
const pgUrl = pgTestUrl();
const skip: string | null = videoSkipReason();
if (skip) console.log(`# zones: skipped: ${skip}`);
let dir = "";
let server: TestServer | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-zones-"));
  if (skip) return;
  const video = join(dir, "scene.mkv");
  const { count, scene } = await maskOffScene();
  await writeVideo(video, count, scene);
  server = await startTestServer({
    MASKWATCH_API_KEY: KEY,
    MASKWATCH_WORKERS: "1",
    MASKWATCH_SOURCE: video,
    MASKWATCH_SOURCE_FILE_ROOT: dir,
  });
});

after(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function call(path: string, init: { method?: string; json?: unknown; key?: string } = {}) {
  const headers: Record<string, string> = { "x-api-key": init.key ?? KEY };
  if (init.json !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${server!.url}${path}`, {
    method: init.method ?? (init.json === undefined ? "GET" : "POST"),
    headers,
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
  return { status: res.status, body: body as any, text };
}

test("geometry: inside and outside a concave polygon; a face counts by the centre of its box", () => {
  // An L shape: the top-right square is cut out.
  const l: [number, number][] = [
    [0, 0],
    [0.5, 0],
    [0.5, 0.5],
    [1, 0.5],
    [1, 1],
    [0, 1],
  ];
  assert.equal(insidePolygon(0.25, 0.25, l), true);
  assert.equal(insidePolygon(0.75, 0.25, l), false, "in the cut-out");
  assert.equal(insidePolygon(0.75, 0.75, l), true);
  assert.equal(insidePolygon(1.5, 0.5, l), false);
  const zones = [
    { name: "left", polygon: l },
    {
      name: "all",
      polygon: [
        [0, 0],
        [1, 0],
        [1, 1],
        [0, 1],
      ] as [number, number][],
    },
  ];
  assert.equal(zoneOf([0, 0, 100, 100], 400, 400, zones), "left");
  assert.equal(zoneOf([300, 0, 400, 100], 400, 400, zones), "all", "the first zone that holds it");
  assert.equal(zoneOf([300, 0, 400, 100], 400, 400, zones.slice(0, 1)), undefined);
});

for (const engine of ["sqlite", "postgres"] as const)
  test(`the zones repository on ${engine}: validated, unique names per source, changed and removed`, async (t) => {
    if (engine === "postgres" && !pgUrl) return t.skip(unlessCI(PG_SKIP_MESSAGE));
    const pg = engine === "postgres" ? await createTestDatabase(pgUrl!) : undefined;
    const db = pg ? await openDatabase({ url: pg.url }) : await openDatabase({ dataDir: join(dir, "store") });
    const square: [number, number][] = [
      [0.1, 0.1],
      [0.9, 0.1],
      [0.9, 0.9],
      [0.1, 0.9],
    ];
    const code = (c: string) => (e: unknown) => e instanceof StoreError && e.code === c;
    try {
      await assert.rejects(
        createZone(db, "cam", { name: "x", polygon: square.slice(0, 2) }),
        code("invalid_value"),
      );
      await assert.rejects(
        createZone(db, "cam", { name: "x", polygon: [...square, [1.5, 0]] }),
        code("invalid_value"),
      );
      await assert.rejects(
        createZone(db, "cam", {
          name: "line",
          polygon: [
            [0, 0],
            [0.5, 0.5],
            [1, 1],
          ],
        }),
        code("invalid_value"),
        "no area",
      );
      await assert.rejects(createZone(db, "cam", { name: " ", polygon: square }), code("invalid_name"));
      const door = await createZone(db, "cam", { name: "door", polygon: square }, 1);
      await assert.rejects(createZone(db, "cam", { name: "door", polygon: square }), code("conflict"));
      await createZone(db, "other", { name: "door", polygon: square }, 2);
      const desk = await createZone(db, "cam", { name: "desk", polygon: square, active: false }, 3);
      assert.deepEqual(
        (await listZones(db, "cam")).map((z) => [z.name, z.active]),
        [
          ["door", true],
          ["desk", false],
        ],
      );
      await assert.rejects(updateZone(db, "cam", desk.id, { name: "door" }), code("conflict"));
      assert.equal((await updateZone(db, "cam", desk.id, { active: true })).active, true);
      await assert.rejects(
        deleteZone(db, "other", door.id),
        code("not_found"),
        "a zone belongs to its source",
      );
      await deleteZone(db, "cam", door.id);
      assert.deepEqual(
        (await listZones(db, "cam")).map((z) => z.name),
        ["desk"],
      );
    } finally {
      await db.close();
      await pg?.drop();
    }
  });

test("a zone over the right half: only the person there counts; events carry the zone and filter by it", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  // B walks on the right (box centres at x 0.67–0.81, y 0.75); A on the left and top (x 0.19–0.47).
  const right = [
    [0.55, 0.45],
    [1, 0.45],
    [1, 1],
    [0.55, 1],
  ];
  const viewer = await call("/api/v1/keys", { json: { name: "viewer", scopes: ["events:read"] } });
  assert.equal(
    (
      await call("/api/v1/sources/default/zones", {
        json: { name: "counter", polygon: right },
        key: viewer.body.key,
      })
    ).status,
    403,
  );
  assert.equal(
    (await call("/api/v1/sources/default/zones", { json: { name: "x", polygon: [[0, 0]] } })).status,
    400,
  );
  assert.equal(
    (await call("/api/v1/sources/nope/zones", { json: { name: "x", polygon: right } })).status,
    404,
  );
  const rule = await call("/api/v1/alert-rules", {
    json: {
      name: "till queue",
      source_id: "default",
      zone: "counter",
      below_percent: 90,
      window_minutes: 60,
      min_faces: 2,
    },
  });
  assert.equal(rule.status, 201, rule.text);
  assert.equal(rule.body.zone, "counter");
  const made = await call("/api/v1/sources/default/zones", { json: { name: "counter", polygon: right } });
  assert.equal(made.status, 201, made.text);
  const unused = await call("/api/v1/sources/default/zones", {
    json: {
      name: "door",
      polygon: [
        [0, 0],
        [0.1, 0],
        [0.1, 0.1],
      ],
      active: false,
    },
  });
  assert.equal(unused.status, 201, unused.text);
  const listed = await call("/api/v1/sources/default/zones", { key: viewer.body.key });
  assert.deepEqual(
    listed.body.zones.map((z: { name: string; active: boolean }) => [z.name, z.active]),
    [
      ["counter", true],
      ["door", false],
    ],
  );

  assert.equal(
    (
      await call("/api/v1/sources/default", {
        method: "PATCH",
        json: { options: { realtime: false, fps: 10 } },
      })
    ).status,
    200,
  );
  assert.equal((await call("/api/v1/sources/default/start", { method: "POST" })).status, 200);
  const deadline = Date.now() + 60_000;
  while ((await call("/api/v1/sources/default")).body.status.state !== "ended") {
    assert.ok(Date.now() < deadline, "the video ends within a minute");
    await new Promise((r) => setTimeout(r, 200));
  }
  const events = (await call("/api/v1/events?order=asc")).body.events as {
    kind: string;
    label: string;
    zone: string | null;
    box: number[];
  }[];
  // Without the zone there would be three (A's and B's observations, B's violation): A is outside.
  assert.deepEqual(
    events.map((e) => [e.kind, e.label, e.zone]),
    [
      ["observation", "mask", "counter"],
      ["violation", "no_mask", "counter"],
    ],
  );
  assert.ok(
    events.every((e) => (e.box[0] + e.box[2]) / 2 / 640 > 0.55),
    "both are B's",
  );
  assert.equal((await call("/api/v1/events?zone=counter")).body.events.length, 2);
  assert.equal((await call("/api/v1/events?zone=door")).body.events.length, 0);
  assert.equal((await call("/api/v1/stats?zone=counter")).body.totals.violations, 1);
  assert.equal((await call("/api/v1/reports?zone=door")).body.totals.events, 0);
  // The zone's compliance: one mask, one violation, 50 % < 90 %.
  const fired = Date.now() + 10_000;
  while (!(await call(`/api/v1/alert-rules/${rule.body.id}`)).body.firing) {
    assert.ok(Date.now() < fired, "the zone's rule fires");
    await new Promise((r) => setTimeout(r, 200));
  }
  const csv = await call("/api/v1/violations.csv?zone=counter");
  const lines = csv.text.trim().split("\r\n");
  assert.match(lines[0], /,Zone$/);
  assert.equal(lines.length, 2);
  assert.match(lines[1], /,counter$/);

  // Zones changed: renamed and switched off, removed.
  const renamed = await call(`/api/v1/sources/default/zones/${made.body.id}`, {
    method: "PATCH",
    json: { name: "till", active: false },
  });
  assert.equal(renamed.status, 200, renamed.text);
  assert.deepEqual([renamed.body.name, renamed.body.active], ["till", false]);
  assert.equal(
    (await call(`/api/v1/sources/default/zones/${unused.body.id}`, { method: "DELETE" })).status,
    200,
  );
  assert.equal(
    (await call(`/api/v1/sources/default/zones/${unused.body.id}`, { method: "DELETE" })).status,
    404,
  );
  const actions = (await call("/api/v1/audit")).body.entries.map((e: { action: string }) => e.action);
  for (const a of ["zone.create", "zone.update", "zone.delete"]) assert.ok(actions.includes(a), a);
});
