/**
 * Alerts over MQTT with a real broker (Debian's mosquitto) on loopback: the scene video's violation
 * and the compliance alert arrive on per-source topics through the real server, and an alert made
 * while the broker is down is delivered once it is back.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import mqtt from "mqtt";
import { AlertService } from "../src/alerts/service.ts";
import { DEFAULT_WEBHOOK_SETTINGS } from "../src/alerts/webhooks.ts";
import { openDatabase } from "../src/store/db.ts";
import { createBus } from "../src/streams/monitor.ts";
import { unlessCI } from "./support/ci.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { maskOffScene, videoSkipReason, writeVideo } from "./support/video.ts";

const MOSQUITTO = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].find(
  (p) => spawnSync(p, ["-h"], { stdio: "ignore" }).error === undefined,
);
const KEY = "mqtt-test-admin-key-0123456789";
const skip: string | null = MOSQUITTO
  ? videoSkipReason()
  : "mosquitto is not installed (apt-get install -y mosquitto)";
if (skip) console.log(`# mqtt: skipped: ${skip}`);
let dir = "";
const brokers: ChildProcess[] = [];

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A mosquitto on 127.0.0.1:`port`, anonymous (`persistent`: sessions kept across restarts), ready when it accepts a client. */
async function startBroker(port: number, persistent = false): Promise<ChildProcess> {
  const conf = join(dir, `mosquitto-${port}.conf`);
  // Run as root, mosquitto drops to its own user: the session file's folder must be its to write.
  const store = persistent
    ? `persistence true\npersistence_location ${await sessionFolder()}/\npersistence_file mosquitto-${port}.db\n`
    : "persistence false\n";
  await writeFile(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\n${store}`);
  const broker = spawn(MOSQUITTO!, ["-c", conf], { stdio: "ignore" });
  brokers.push(broker);
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
        reconnectPeriod: 0,
        connectTimeout: 1000,
      });
      await c.endAsync();
      return broker;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

let sessions = "";
async function sessionFolder(): Promise<string> {
  if (!sessions) {
    sessions = await mkdtemp(join(tmpdir(), "maskwatch-mosquitto-"));
    await chmod(sessions, 0o777);
  }
  return sessions;
}

/** Stops a broker (it saves its sessions on the way out) and waits until it has exited. */
async function stopBroker(broker: ChildProcess): Promise<void> {
  if (broker.exitCode !== null) return;
  const exited = new Promise((r) => broker.once("exit", r));
  broker.kill("SIGTERM");
  await exited;
}

/** Collects what arrives on `filter`. */
async function subscribe(port: number, filter: string) {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`);
  const got: { topic: string; payload: { event: string; data: Record<string, unknown> } }[] = [];
  client.on("message", (topic, payload) => got.push({ topic, payload: JSON.parse(payload.toString()) }));
  await client.subscribeAsync(filter, { qos: 1 });
  return { got, close: () => client.endAsync() };
}

async function waitFor<T>(fn: () => T | undefined, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-mqtt-"));
});

after(async () => {
  for (const b of brokers) b.kill();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (sessions) await rm(sessions, { recursive: true, force: true });
});

test("the scene's violation and the compliance alert arrive on the source's topics", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const port = await freePort();
  await startBroker(port);
  const sub = await subscribe(port, "site-a/#");
  const video = join(dir, "scene.mkv");
  const { count, scene } = await maskOffScene();
  await writeVideo(video, count, scene);
  let server: TestServer | undefined;
  try {
    server = await startTestServer({
      MASKWATCH_API_KEY: KEY,
      MASKWATCH_WORKERS: "1",
      MASKWATCH_SOURCE: video,
      MASKWATCH_SOURCE_FILE_ROOT: dir,
      MASKWATCH_MQTT_URL: `mqtt://127.0.0.1:${port}`,
      MASKWATCH_MQTT_TOPIC_PREFIX: "site-a",
      MASKWATCH_ALERT_INTERVAL_MS: "200",
    });
    const call = (path: string, body?: unknown, method = "POST") =>
      fetch(`${server!.url}${path}`, {
        method,
        headers:
          body === undefined
            ? { "x-api-key": KEY }
            : { "x-api-key": KEY, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    assert.equal(
      (
        await call("/api/v1/alert-rules", {
          name: "door",
          source_id: "default",
          below_percent: 90,
          window_minutes: 60,
          min_faces: 2,
        })
      ).status,
      201,
    );
    assert.equal(
      (await call("/api/v1/sources/default", { options: { realtime: false, fps: 10 } }, "PATCH")).status,
      200,
    );
    const started = await call("/api/v1/sources/default/start");
    assert.equal(started.status, 200, await started.clone().text());
    const violation = await waitFor(
      () => sub.got.find((m) => m.topic === "site-a/default/violation"),
      60_000,
      "the violation on MQTT",
    );
    assert.equal(violation.payload.event, "violation");
    assert.equal(violation.payload.data.label, "no_mask");
    const stored = await (
      await fetch(`${server.url}/api/v1/events/${violation.payload.data.id}`, {
        headers: { "x-api-key": KEY },
      })
    ).json();
    assert.deepEqual(violation.payload.data, stored);
    const below = await waitFor(
      () => sub.got.find((m) => m.topic === "site-a/default/compliance_below"),
      10_000,
      "the compliance alert on MQTT",
    );
    assert.equal((below.payload.data as { faces: number }).faces, 3);
    assert.equal(
      sub.got.filter((m) => m.topic.endsWith("/violation")).length,
      1,
      "one message per violation",
    );
  } finally {
    await server?.close();
    await sub.close();
  }
});

test("an alert made while the broker is down arrives when it is back; odd source ids stay one topic level", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const port = await freePort();
  // A broker that keeps sessions across a restart, and a subscriber with a persistent session.
  let broker = await startBroker(port, true);
  const subscriber = { clientId: "maskwatch-test-subscriber", clean: false } as const;
  const first = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, subscriber);
  await first.subscribeAsync("maskwatch/#", { qos: 1 });
  await first.endAsync();
  await stopBroker(broker);

  const db = await openDatabase({ dataDir: join(dir, "offline") });
  const service = new AlertService(db, createBus(), {
    ...DEFAULT_WEBHOOK_SETTINGS,
    ruleIntervalMs: 3_600_000,
    dailySummaryHour: null,
    mqtt: { url: `mqtt://127.0.0.1:${port}`, prefix: "maskwatch" },
  });
  service.start();
  try {
    await service.alert("violation", { id: 7 }, "lobby/east+#");
    broker = await startBroker(port, true);
    const got: { topic: string; payload: string }[] = [];
    // The handler is in place before the session's queued messages can arrive.
    const again = mqtt.connect(`mqtt://127.0.0.1:${port}`, { ...subscriber, manualConnect: true });
    again.on("message", (topic, payload) => got.push({ topic, payload: payload.toString() }));
    again.connect();
    try {
      const message = await waitFor(() => got[0], 15_000, "the alert queued while the broker was down");
      assert.equal(message.topic, "maskwatch/lobby_east__/violation");
      assert.deepEqual(JSON.parse(message.payload).data, { id: 7 });
    } finally {
      await again.endAsync();
    }
  } finally {
    await service.close();
    await db.close();
  }
});
