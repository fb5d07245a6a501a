/**
 * Alerts end to end on loopback: a real server watching a real video (ffmpeg, the models in worker
 * threads, SQLite) and a real HTTP receiver for its webhooks. Signed deliveries, retries with
 * backoff, a delivery that fails for good and is re-sent, a violation and a compliance rule from
 * the scene's own events, reports (JSON and CSV), erasing events, and the audit log.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AlertService } from "../src/alerts/service.ts";
import { DEFAULT_WEBHOOK_SETTINGS } from "../src/alerts/webhooks.ts";
import { createWebhook } from "../src/store/alerts.ts";
import { openDatabase } from "../src/store/db.ts";
import { insertEvent } from "../src/store/events.ts";
import { createBus } from "../src/streams/monitor.ts";
import { unlessCI } from "./support/ci.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { maskOffScene, videoSkipReason, writeVideo } from "./support/video.ts";

const KEY = "alerts-test-admin-key-0123456789";
let server: TestServer | undefined;
let dataDir = "";
const skip: string | null = videoSkipReason();
if (skip) console.log(`# alerts: skipped: ${skip}`);

/** What the receiver got, and how each path answers. */
interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}
const received: Received[] = [];
/** Status codes to answer on a path, one per request, then 200. */
const script = new Map<string, number[]>();
let receiver: Server | undefined;
let hookBase = "";

before(async () => {
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      const path = req.url ?? "/";
      received.push({ path, headers: req.headers, body, at: Date.now() });
      const next = script.get(path)?.shift() ?? 200;
      res.writeHead(next, { "content-type": "text/plain" }).end(next === 200 ? "ok" : "nope");
    });
  });
  await new Promise<void>((r) => receiver!.listen(0, "127.0.0.1", r));
  hookBase = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  if (skip) return;
  dataDir = await mkdtemp(join(tmpdir(), "maskwatch-alerts-"));
  const video = join(dataDir, "scene.mkv");
  const { count, scene } = await maskOffScene();
  await writeVideo(video, count, scene);
  server = await startTestServer({
    MASKWATCH_API_KEY: KEY,
    MASKWATCH_WORKERS: "1",
    MASKWATCH_SOURCE: video,
    MASKWATCH_SOURCE_FILE_ROOT: dataDir,
    MASKWATCH_WEBHOOK_RETRY_MS: "100",
    MASKWATCH_WEBHOOK_ATTEMPTS: "3",
    MASKWATCH_ALERT_INTERVAL_MS: "200",
  });
});

after(async () => {
  await server?.close();
  await new Promise((r) => receiver?.close(r));
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

async function call(path: string, init: RequestInit & { key?: string | null; json?: unknown } = {}) {
  const headers = new Headers(init.headers);
  if (init.key !== null) headers.set("x-api-key", init.key ?? KEY);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set("content-type", "application/json");
    body = JSON.stringify(init.json);
  }
  const res = await fetch(`${server!.url}${path}`, { ...init, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
  return { status: res.status, headers: res.headers, body: parsed as any, text };
}

async function waitFor<T>(
  fn: () => Promise<T | undefined> | T | undefined,
  ms: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function verify(r: Received, secret: string): boolean {
  const ts = String(r.headers["x-maskwatch-timestamp"]);
  const expected = `sha256=${createHmac("sha256", secret).update(`${ts}.${r.body}`).digest("hex")}`;
  return r.headers["x-maskwatch-signature"] === expected;
}

const secrets = new Map<string, string>();

async function addHook(name: string, path: string, events: string[], extra: Record<string, unknown> = {}) {
  const r = await call("/api/v1/webhooks", {
    method: "POST",
    json: { name, url: hookBase + path, events, ...extra },
  });
  assert.equal(r.status, 201, r.text);
  secrets.set(r.body.id, r.body.secret);
  return r.body as { id: string; secret: string };
}

test("webhooks: admin only, bad URLs and events are 400 with the JSON error, secrets are shown once", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const good = { name: "x", url: `${hookBase}/x`, events: ["violation"] };
  assert.equal((await call("/api/v1/webhooks", { method: "POST", json: good, key: null })).status, 401);
  const viewer = await call("/api/v1/keys", {
    method: "POST",
    json: { name: "reader", scopes: ["events:read"] },
  });
  const denied = await call("/api/v1/webhooks", { key: viewer.body.key });
  assert.equal(denied.status, 403, denied.text);
  const cases: [Record<string, unknown>, string][] = [
    [{ ...good, url: "ftp://example.com/x" }, "invalid_url"],
    [{ ...good, url: "http://user:pw@example.com/x" }, "invalid_url"],
    [{ ...good, url: "http://169.254.169.254/latest/meta-data" }, "invalid_url"],
    [{ ...good, url: "not a url" }, "invalid_url"],
    [{ ...good, events: ["nope"] }, "invalid_parameters"],
    [{ ...good, events: [] }, "invalid_parameters"],
    [{ ...good, secret: "short" }, "invalid_parameters"],
    [{ ...good, extra: 1 }, "invalid_parameters"],
  ];
  for (const [json, code] of cases) {
    const r = await call("/api/v1/webhooks", { method: "POST", json });
    assert.equal(r.status, 400, `${JSON.stringify(json)}: ${r.text}`);
    assert.equal(r.body.status, "error");
    assert.equal(r.body.code, code, `${JSON.stringify(json)}: ${r.text}`);
  }
  const made = await addHook("made", "/made", ["violation"], { secret: "a-secret-of-20-chars" });
  assert.equal(made.secret, "a-secret-of-20-chars");
  const listed = await call("/api/v1/webhooks");
  assert.ok(listed.body.webhooks.some((w: { id: string }) => w.id === made.id));
  assert.ok(!listed.text.includes("a-secret-of-20-chars"), "the list never shows secrets");
  assert.ok(!(await call(`/api/v1/webhooks/${made.id}`)).text.includes("a-secret-of-20-chars"));
  const patched = await call(`/api/v1/webhooks/${made.id}`, { method: "PATCH", json: { enabled: false } });
  assert.equal(patched.body.enabled, false);
  assert.equal((await call(`/api/v1/webhooks/${made.id}`, { method: "DELETE" })).status, 200);
  assert.equal((await call(`/api/v1/webhooks/${made.id}`)).status, 404);
  assert.equal((await call("/api/v1/webhooks/whk_none/deliveries/1/resend", { method: "POST" })).status, 404);
});

test("a ping is POSTed signed (HMAC-SHA256 of timestamp.body) and recorded as delivered", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const hook = await addHook("ping", "/ping", ["violation"]);
  const sent = await call(`/api/v1/webhooks/${hook.id}/test`, { method: "POST" });
  assert.equal(sent.status, 202, sent.text);
  const got = await waitFor(() => received.find((r) => r.path === "/ping"), 10_000, "the ping");
  assert.equal(got.headers["content-type"], "application/json");
  assert.equal(got.headers["x-maskwatch-event"], "ping");
  assert.equal(got.headers["x-maskwatch-delivery"], String(sent.body.id));
  assert.ok(verify(got, hook.secret), "the signature verifies with the webhook's secret");
  assert.ok(!verify(got, "another-secret-entirely"), "and not with another");
  assert.equal(JSON.parse(got.body).event, "ping");
  const d = await waitFor(
    async () => {
      const r = await call(`/api/v1/webhooks/${hook.id}/deliveries`);
      const one = r.body.deliveries[0];
      return one?.state === "delivered" ? one : undefined;
    },
    5_000,
    "the delivery to be recorded",
  );
  assert.equal(d.response_status, 200);
  assert.equal(d.attempts, 1);
  assert.equal(d.payload.event, "ping");
});

test("a failing receiver is retried with growing waits; after the last attempt it is failed, and re-sent by hand", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  script.set("/flaky", [500, 503]);
  const flaky = await addHook("flaky", "/flaky", ["violation"]);
  await call(`/api/v1/webhooks/${flaky.id}/test`, { method: "POST" });
  const delivered = await waitFor(
    async () => {
      const one = (await call(`/api/v1/webhooks/${flaky.id}/deliveries`)).body.deliveries[0];
      return one?.state === "delivered" ? one : undefined;
    },
    10_000,
    "the flaky delivery",
  );
  assert.equal(delivered.attempts, 3);
  const times = received.filter((r) => r.path === "/flaky").map((r) => r.at);
  assert.equal(times.length, 3);
  // Backoff: 100 ms, then 400 ms (base 100 × 4).
  assert.ok(times[1] - times[0] >= 90, `first retry after ${times[1] - times[0]} ms`);
  assert.ok(times[2] - times[1] >= 390, `second retry after ${times[2] - times[1]} ms`);
  assert.equal(
    new Set(received.filter((r) => r.path === "/flaky").map((r) => r.headers["x-maskwatch-delivery"])).size,
    1,
  );

  script.set("/down", [500, 500, 500]);
  const down = await addHook("down", "/down", ["violation"]);
  await call(`/api/v1/webhooks/${down.id}/test`, { method: "POST" });
  const failed = await waitFor(
    async () => {
      const one = (await call(`/api/v1/webhooks/${down.id}/deliveries`)).body.deliveries[0];
      return one?.state === "failed" ? one : undefined;
    },
    10_000,
    "the delivery to fail for good",
  );
  assert.equal(failed.attempts, 3);
  assert.equal(failed.response_status, 500);
  assert.equal(failed.error, "answered 500");
  assert.equal(failed.next_attempt_at, null);
  const again = await call(`/api/v1/webhooks/${down.id}/deliveries/${failed.id}/resend`, { method: "POST" });
  assert.equal(again.status, 202, again.text);
  assert.equal(again.body.state, "pending");
  const redone = await waitFor(
    async () => {
      const one = (await call(`/api/v1/webhooks/${down.id}/deliveries`)).body.deliveries[0];
      return one?.state === "delivered" ? one : undefined;
    },
    10_000,
    "the re-sent delivery",
  );
  assert.equal(redone.id, failed.id);
  assert.equal(redone.attempts, 1);
});

test("the scene's violation reaches the webhook; a compliance rule alerts once below, once recovered", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const hook = await addHook("monitor", "/monitor", [
    "violation",
    "compliance_below",
    "compliance_recovered",
  ]);
  const other = await addHook("other source", "/other", ["violation"], { source_id: "elsewhere" });
  const rule = await call("/api/v1/alert-rules", {
    method: "POST",
    json: { name: "door", source_id: "default", below_percent: 90, window_minutes: 60, min_faces: 2 },
  });
  assert.equal(rule.status, 201, rule.text);
  assert.equal(
    (
      await call("/api/v1/alert-rules", {
        method: "POST",
        json: { name: "x", below_percent: 0, window_minutes: 5 },
      })
    ).status,
    400,
  );
  // Every frame analysed (not realtime), so the events are exactly the scene's.
  const patched = await call("/api/v1/sources/default", {
    method: "PATCH",
    json: { options: { realtime: false, fps: 10 } },
  });
  assert.equal(patched.status, 200, patched.text);
  assert.equal((await call("/api/v1/sources/default/start", { method: "POST" })).status, 200);
  const violation = await waitFor(
    () => received.find((r) => r.path === "/monitor" && r.headers["x-maskwatch-event"] === "violation"),
    60_000,
    "the violation webhook",
  );
  assert.ok(verify(violation, hook.secret));
  const payload = JSON.parse(violation.body);
  assert.equal(payload.event, "violation");
  const event = (await call(`/api/v1/events/${payload.data.id}`)).body;
  assert.deepEqual(payload.data, event, "the payload is the event as the API shows it");
  assert.equal(event.label, "no_mask");
  assert.equal(event.source_id, "default");
  // Two masked observations and one violation: 67 % < 90 %.
  const below = await waitFor(
    () =>
      received.find((r) => r.path === "/monitor" && r.headers["x-maskwatch-event"] === "compliance_below"),
    10_000,
    "the compliance alert",
  );
  const data = JSON.parse(below.body).data;
  assert.equal(data.rule.id, rule.body.id);
  assert.equal(data.faces, 3);
  assert.ok(Math.abs(data.compliance_rate - 2 / 3) < 1e-9);
  assert.equal((await call(`/api/v1/alert-rules/${rule.body.id}`)).body.firing, true);
  // It does not repeat while compliance stays low.
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(received.filter((r) => r.headers["x-maskwatch-event"] === "compliance_below").length, 1);
  assert.equal(
    received.filter((r) => r.path === "/other").length,
    0,
    "a webhook for another source hears nothing",
  );

  // Erasing the violation (admin) lifts compliance to 100 %: one recovered alert.
  const viewer = await call("/api/v1/keys", {
    method: "POST",
    json: { name: "viewer", scopes: ["events:read"] },
  });
  assert.equal(
    (await call(`/api/v1/events/${event.id}`, { method: "DELETE", key: viewer.body.key })).status,
    403,
  );
  const erased = await call(`/api/v1/events/${event.id}`, { method: "DELETE" });
  assert.equal(erased.status, 200, erased.text);
  assert.equal((await call(`/api/v1/events/${event.id}`)).status, 404);
  assert.equal((await call(`/api/v1/events/${event.id}/snapshot`)).status, 404);
  assert.equal((await call(`/api/v1/events/${event.id}`, { method: "DELETE" })).status, 404);
  await waitFor(
    () =>
      received.find(
        (r) => r.path === "/monitor" && r.headers["x-maskwatch-event"] === "compliance_recovered",
      ),
    10_000,
    "the recovered alert",
  );
  assert.equal((await call(`/api/v1/alert-rules/${rule.body.id}`)).body.firing, false);
  void other;
});

test("reports: totals, buckets, top hours and sources agree with /api/v1/stats; CSV ends with a total row", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const report = await call("/api/v1/reports?bucket=hour");
  assert.equal(report.status, 200, report.text);
  const stats = await call("/api/v1/stats?bucket=hour");
  for (const k of ["events", "violations", "mask", "no_mask", "incorrect", "compliance_rate"])
    assert.equal(report.body.totals[k], stats.body.totals[k], k);
  assert.equal(report.body.buckets.length, stats.body.buckets.length);
  assert.deepEqual(
    report.body.by_source.map((s: { source_id: string }) => s.source_id),
    ["default"],
  );
  assert.equal(report.body.totals.mask, 2);
  const csv = await call("/api/v1/reports?bucket=day&format=csv");
  assert.match(csv.headers.get("content-type") ?? "", /^text\/csv/);
  const lines = csv.text.trim().split("\r\n");
  assert.equal(lines[0], "start,events,violations,mask,no_mask,incorrect,compliance_rate");
  assert.match(lines.at(-1)!, /^total,2,0,2,0,0,1\.0000$/);
  assert.equal((await call("/api/v1/reports?bucket=week")).status, 400);
  assert.equal((await call("/api/v1/reports?from=yesterday")).status, 400);
});

test("erasing a range needs a range; the audit log names who did what, without secrets", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const none = await call("/api/v1/events/erase", { method: "POST", json: {} });
  assert.equal(none.status, 400, none.text);
  const all = await call("/api/v1/events/erase", { method: "POST", json: { source: "default" } });
  assert.equal(all.status, 200, all.text);
  assert.equal(all.body.deleted, 2);
  assert.equal((await call("/api/v1/events")).body.events.length, 0);
  const audit = await call("/api/v1/audit?limit=100");
  assert.equal(audit.status, 200, audit.text);
  const actions = audit.body.entries.map((e: { action: string }) => e.action);
  for (const a of [
    "webhook.create",
    "webhook.update",
    "webhook.delete",
    "alert_rule.create",
    "event.erase",
    "events.erase",
    "key.create",
    "source.update",
  ])
    assert.ok(actions.includes(a), `${a} in ${actions.join(", ")}`);
  const erase = audit.body.entries.find((e: { action: string }) => e.action === "events.erase");
  assert.equal(erase.actor, "key:MASKWATCH_API_KEY");
  assert.deepEqual(erase.detail, { source: "default" });
  assert.ok(!audit.text.includes("a-secret-of-20-chars"), "secrets stay out of the audit log");
  const failedCreate = audit.body.entries.filter(
    (e: { action: string }) => e.action === "webhook.create",
  ).length;
  assert.equal(failedCreate, 6, "only the webhooks really made are recorded, not the refused ones");
  const viewer = await call("/api/v1/keys", {
    method: "POST",
    json: { name: "v2", scopes: ["events:read"] },
  });
  assert.equal((await call("/api/v1/audit", { key: viewer.body.key })).status, 403);
});

test("the daily summary: yesterday's counts go out once after the hour, whatever the number of services", async () => {
  const dir = await mkdtemp(join(tmpdir(), "maskwatch-summary-"));
  const db = await openDatabase({ dataDir: dir });
  const settings = {
    ...DEFAULT_WEBHOOK_SETTINGS,
    retryBaseMs: 100,
    ruleIntervalMs: 3_600_000,
    dailySummaryHour: 6,
    mqtt: null,
  };
  const services = [new AlertService(db, createBus(), settings), new AlertService(db, createBus(), settings)];
  try {
    const day = Date.UTC(2026, 0, 10);
    const at = (h: number) => day - 86_400_000 + h * 3_600_000;
    await insertEvent(db, {
      at: at(9),
      sourceId: "door",
      trackId: 1,
      kind: "observation",
      label: "mask",
      confidence: 0.9,
      box: [0, 0, 9, 9],
      snapshot: null,
    });
    await insertEvent(db, {
      at: at(9) + 1,
      sourceId: "door",
      trackId: 2,
      kind: "violation",
      label: "no_mask",
      confidence: 0.9,
      box: [0, 0, 9, 9],
      snapshot: null,
    });
    await insertEvent(db, {
      at: day + 1,
      sourceId: "door",
      trackId: 3,
      kind: "violation",
      label: "no_mask",
      confidence: 0.9,
      box: [0, 0, 9, 9],
      snapshot: null,
    });
    await createWebhook(db, { name: "summary", url: `${hookBase}/summary`, events: ["daily_summary"] });
    // Only the senders run on their own: the ticks below say what time it is.
    for (const s of services) s.dispatcher.start();
    await Promise.all(services.map((s) => s.tick(day + 5 * 3_600_000)));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received.filter((r) => r.path === "/summary").length, 0, "not before 06:00 UTC");
    await Promise.all(services.map((s) => s.tick(day + 6 * 3_600_000)));
    await Promise.all(services.map((s) => s.tick(day + 7 * 3_600_000)));
    const got = await waitFor(() => received.find((r) => r.path === "/summary"), 5_000, "the summary");
    const data = JSON.parse(got.body).data;
    assert.equal(data.day, "2026-01-09");
    assert.equal(data.totals.events, 2, "yesterday only");
    assert.equal(data.totals.violations, 1);
    assert.equal(data.totals.compliance_rate, 0.5);
    assert.deepEqual(
      data.top_hours.map((h: { hour: number }) => h.hour),
      [9],
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received.filter((r) => r.path === "/summary").length, 1, "once");
  } finally {
    for (const s of services) await s.close();
    await db.close();
    await rm(dir, { recursive: true, force: true });
  }
});
