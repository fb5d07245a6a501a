/**
 * The alert repositories on SQLite and PostgreSQL: webhooks and their validation, deliveries leased
 * to one caller at a time (two connections racing for the same rows), attempts and re-sends, rules
 * that fire once per dip, a day claimed once, erasing events by id / range / source, and reports.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  claimDueDeliveries,
  createAlertRule,
  createWebhook,
  deleteWebhook,
  enqueueDeliveries,
  getDelivery,
  listAudit,
  listDeliveries,
  listWebhooks,
  recordAttempt,
  recordAudit,
  resendDelivery,
  setRuleFiring,
  updateWebhook,
} from "../src/store/alerts.ts";
import { type Database, openDatabase } from "../src/store/db.ts";
import { deleteEvents, insertEvent, type NewEvent } from "../src/store/events.ts";
import { buildReport, reportCsv } from "../src/store/reports.ts";
import { claimSetting } from "../src/store/settings.ts";
import { StoreError, type StoreErrorCode } from "../src/store/sources.ts";
import { skipUnlessCI } from "./support/ci.ts";
import {
  createTestDatabase,
  createTestSchema,
  PG_SKIP_MESSAGE,
  type PgTestDatabase,
  pgTestUrl,
} from "./support/pg.ts";

const pgUrl = pgTestUrl();
if (!pgUrl) console.log(`# store-alerts: PostgreSQL tests skipped: ${PG_SKIP_MESSAGE}`);
let sharedPg: Promise<PgTestDatabase> | undefined;
after(async () => {
  if (sharedPg) await (await sharedPg).drop();
});

/** Opens two connections to one fresh database (to race them), and removes it after. */
async function fresh(
  engine: "sqlite" | "postgres",
): Promise<{ a: Database; b: Database; done(): Promise<void> }> {
  if (engine === "sqlite") {
    const dir = await mkdtemp(join(tmpdir(), "maskwatch-alerts-store-"));
    const a = await openDatabase({ dataDir: dir });
    const b = await openDatabase({ dataDir: dir });
    return {
      a,
      b,
      async done() {
        await a.close();
        await b.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  sharedPg ??= createTestDatabase(pgUrl!);
  const schema = await createTestSchema((await sharedPg).url);
  const a = await openDatabase({ url: schema.url });
  const b = await openDatabase({ url: schema.url });
  return {
    a,
    b,
    async done() {
      await a.close();
      await b.close();
      await schema.drop();
    },
  };
}

const storeError = (code: StoreErrorCode) => (e: unknown) => {
  assert.ok(e instanceof StoreError, `expected a StoreError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return true;
};

const T0 = Date.UTC(2024, 0, 1);
const H = 3_600_000;

function ev(at: number, label: NewEvent["label"], sourceId = "cam1"): NewEvent {
  return {
    at,
    sourceId,
    trackId: 1,
    kind: label === "mask" ? "observation" : "violation",
    label,
    confidence: 0.9,
    box: [1, 2, 3, 4],
    snapshot: null,
  };
}

for (const engine of ["sqlite", "postgres"] as const) {
  describe(`alerts store on ${engine}`, {
    skip: engine === "postgres" ? skipUnlessCI(pgUrl ? false : PG_SKIP_MESSAGE) : false,
  }, () => {
    test("webhooks: validated, secrets kept, events filtered by subscription and source", async () => {
      const { a: db, done } = await fresh(engine);
      try {
        const base = { name: "h", url: "http://127.0.0.1:9/x", events: ["violation"] };
        await assert.rejects(
          createWebhook(db, { ...base, url: "file:///etc/passwd" }),
          storeError("invalid_url"),
        );
        await assert.rejects(
          createWebhook(db, { ...base, url: "http://u:p@h/x" }),
          storeError("invalid_url"),
        );
        await assert.rejects(createWebhook(db, { ...base, events: ["nope"] }), storeError("invalid_value"));
        await assert.rejects(createWebhook(db, { ...base, events: [] }), storeError("invalid_value"));
        await assert.rejects(createWebhook(db, { ...base, secret: "short" }), storeError("invalid_value"));
        await assert.rejects(createWebhook(db, { ...base, name: " " }), storeError("invalid_name"));
        const all = await createWebhook(db, {
          ...base,
          events: ["violation", "violation", "daily_summary"],
          now: T0,
        });
        assert.deepEqual(all.events, ["violation", "daily_summary"]);
        assert.match(all.secret, /^[0-9a-f]{64}$/);
        const cam2 = await createWebhook(db, { ...base, sourceId: "cam2", now: T0 + 1 });
        const off = await createWebhook(db, { ...base, enabled: false, now: T0 + 2 });
        const summary = await createWebhook(db, { ...base, events: ["daily_summary"], now: T0 + 3 });
        assert.equal((await enqueueDeliveries(db, "violation", { n: 1 }, { sourceId: "cam1" })).length, 1);
        assert.equal((await enqueueDeliveries(db, "violation", { n: 2 }, { sourceId: "cam2" })).length, 2);
        assert.equal((await enqueueDeliveries(db, "daily_summary", { n: 3 })).length, 2);
        assert.equal(
          (await enqueueDeliveries(db, "ping", {}, { only: off.id })).length,
          1,
          "a ping reaches a disabled one",
        );
        assert.equal((await listDeliveries(db, summary.id)).length, 1);
        await updateWebhook(db, cam2.id, { enabled: false, url: "https://example.com/y" });
        assert.deepEqual(
          (await listWebhooks(db)).map((w) => [w.id, w.enabled]),
          [
            [all.id, true],
            [cam2.id, false],
            [off.id, false],
            [summary.id, true],
          ],
        );
        await deleteWebhook(db, all.id);
        await assert.rejects(listDeliveries(db, all.id), storeError("not_found"));
        await assert.rejects(deleteWebhook(db, all.id), storeError("not_found"));
      } finally {
        await done();
      }
    });

    test("deliveries: two connections claiming at once never get the same one; attempts, failure, re-send", async () => {
      const { a, b, done } = await fresh(engine);
      try {
        const hook = await createWebhook(a, {
          name: "h",
          url: "http://127.0.0.1:9/x",
          events: ["violation"],
        });
        for (let i = 0; i < 30; i++) await enqueueDeliveries(a, "violation", { i }, { now: T0 });
        // Both race until nothing is due: a row one of them leased is skipped by the other.
        const x: Awaited<ReturnType<typeof claimDueDeliveries>> = [];
        const y: typeof x = [];
        for (let round = 0; round < 10; round++) {
          const [gotA, gotB] = await Promise.all([
            claimDueDeliveries(a, T0 + 1, T0 + 60_000, 7),
            claimDueDeliveries(b, T0 + 1, T0 + 60_000, 7),
          ]);
          x.push(...gotA);
          y.push(...gotB);
          if (!gotA.length && !gotB.length) break;
        }
        const ids = [...x, ...y].map((d) => d.id);
        assert.equal(ids.length, 30, "every due delivery handed out");
        assert.equal(new Set(ids).size, 30, "none twice");
        assert.equal(x[0].secret, hook.secret);
        assert.deepEqual(
          await claimDueDeliveries(a, T0 + 2, T0 + 60_000),
          [],
          "leased ones wait for their lease",
        );
        const d = x[0];
        await recordAttempt(a, d.id, {
          ok: false,
          status: 500,
          error: "answered 500",
          at: T0 + 5,
          retryAt: T0 + 100,
        });
        let got = await getDelivery(a, hook.id, d.id);
        assert.deepEqual(
          [got.state, got.attempts, got.responseStatus, got.nextAttemptAt],
          ["pending", 1, 500, T0 + 100],
        );
        assert.deepEqual(await claimDueDeliveries(a, T0 + 50, T0 + 60_000), [], "not due before its retry");
        assert.deepEqual(
          (await claimDueDeliveries(a, T0 + 100, T0 + 60_000)).map((c) => c.id),
          [d.id],
        );
        await recordAttempt(a, d.id, {
          ok: false,
          status: null,
          error: "connect ECONNREFUSED",
          at: T0 + 101,
          retryAt: null,
        });
        got = await getDelivery(a, hook.id, d.id);
        assert.deepEqual([got.state, got.attempts, got.error], ["failed", 2, "connect ECONNREFUSED"]);
        const again = await resendDelivery(a, hook.id, d.id, T0 + 200);
        assert.deepEqual([again.state, again.attempts, again.error], ["pending", 0, null]);
        const [re] = await claimDueDeliveries(b, T0 + 200, T0 + 60_000);
        assert.equal(re.id, d.id);
        await recordAttempt(b, d.id, { ok: true, status: 204, error: null, at: T0 + 201, retryAt: null });
        got = await getDelivery(a, hook.id, d.id);
        assert.deepEqual(
          [got.state, got.attempts, got.deliveredAt, got.nextAttemptAt],
          ["delivered", 1, T0 + 201, null],
        );
        await assert.rejects(getDelivery(a, "whk_other", d.id), storeError("not_found"));
      } finally {
        await done();
      }
    });

    test("rules fire once per dip (one of two racing callers), a day is claimed once", async () => {
      const { a, b, done } = await fresh(engine);
      try {
        await assert.rejects(
          createAlertRule(a, { name: "r", belowPercent: 0, windowMinutes: 5 }),
          storeError("invalid_value"),
        );
        await assert.rejects(
          createAlertRule(a, { name: "r", belowPercent: 50, windowMinutes: 0 }),
          storeError("invalid_value"),
        );
        const rule = await createAlertRule(a, { name: "r", belowPercent: 80, windowMinutes: 5 });
        assert.equal(rule.minFaces, 10);
        const fired = await Promise.all([
          setRuleFiring(a, rule.id, true, T0),
          setRuleFiring(b, rule.id, true, T0),
        ]);
        assert.deepEqual(fired.sort(), [false, true]);
        assert.equal(await setRuleFiring(a, rule.id, true, T0 + 1), false, "still firing: no second alert");
        assert.equal(await setRuleFiring(b, rule.id, false, T0 + 2), true);
        assert.equal(await setRuleFiring(a, rule.id, false, T0 + 3), false);
        const days = await Promise.all([
          claimSetting(a, "alerts.daily_summary_day", "2024-01-01"),
          claimSetting(b, "alerts.daily_summary_day", "2024-01-01"),
        ]);
        assert.deepEqual(days.sort(), [false, true]);
        assert.equal(
          await claimSetting(a, "alerts.daily_summary_day", "2023-12-31"),
          false,
          "never backwards",
        );
        assert.equal(await claimSetting(a, "alerts.daily_summary_day", "2024-01-02"), true);
      } finally {
        await done();
      }
    });

    test("erase by id, range or source; reports and their CSV; the audit log", async () => {
      const { a: db, done } = await fresh(engine);
      try {
        const evs = [
          ev(T0 + 1 * H, "mask"),
          ev(T0 + 1 * H + 5, "no_mask"),
          ev(T0 + 1 * H + 9, "mask"),
          ev(T0 + 3 * H, "incorrect"),
          ev(T0 + 3 * H + 1, "no_mask"),
          ev(T0 + 5 * H, "mask", "cam2"),
        ];
        const ids: number[] = [];
        for (const e of evs) ids.push((await insertEvent(db, e)).id);
        const report = await buildReport(db, { bucket: "hour" });
        assert.deepEqual(report.totals, {
          events: 6,
          violations: 3,
          mask: 3,
          no_mask: 2,
          incorrect: 1,
          compliance_rate: 0.5,
        });
        assert.deepEqual(
          report.buckets.map((x) => [x.start, x.violations, x.compliance_rate]),
          [
            [new Date(T0 + H).toISOString(), 1, 2 / 3],
            [new Date(T0 + 3 * H).toISOString(), 2, 0],
            [new Date(T0 + 5 * H).toISOString(), 0, 1],
          ],
        );
        assert.deepEqual(report.peaks, {
          most_violations: { start: new Date(T0 + 3 * H).toISOString(), violations: 2 },
          lowest_compliance: { start: new Date(T0 + 3 * H).toISOString(), compliance_rate: 0, faces: 2 },
        });
        assert.deepEqual(
          report.top_hours.map((h) => [h.hour, h.violations]),
          [
            [3, 2],
            [1, 1],
          ],
        );
        assert.deepEqual(
          report.by_source.map((s) => [s.source_id, s.events]),
          [
            ["cam1", 5],
            ["cam2", 1],
          ],
        );
        const cam2 = await buildReport(db, { bucket: "day", sourceId: "cam2", from: T0, to: T0 + 24 * H });
        assert.equal(
          reportCsv(cam2),
          `start,events,violations,mask,no_mask,incorrect,compliance_rate\r\n${new Date(T0).toISOString()},1,0,1,0,0,1.0000\r\ntotal,1,0,1,0,0,1.0000\r\n`,
        );
        await assert.rejects(deleteEvents(db, {}), storeError("invalid_filter"));
        assert.equal((await deleteEvents(db, { id: ids[1] })).deleted, 1);
        assert.equal((await deleteEvents(db, { id: ids[1] })).deleted, 0);
        assert.equal((await deleteEvents(db, { from: T0 + 3 * H, to: T0 + 4 * H })).deleted, 2);
        assert.equal((await deleteEvents(db, { sourceId: "cam2" })).deleted, 1);
        assert.equal((await buildReport(db, { bucket: "day" })).totals.events, 2);

        await recordAudit(db, {
          actor: "user:ann",
          action: "events.erase",
          target: null,
          detail: { source: "cam2" },
          at: T0,
        });
        await recordAudit(db, { actor: "key:ops", action: "webhook.delete", target: "whk_1", at: T0 + 10 });
        const audit = await listAudit(db);
        assert.deepEqual(
          audit.map((e) => [e.actor, e.action, e.target, e.detail]),
          [
            ["key:ops", "webhook.delete", "whk_1", null],
            ["user:ann", "events.erase", null, { source: "cam2" }],
          ],
        );
        assert.equal((await listAudit(db, { from: T0 + 5 })).length, 1);
      } finally {
        await done();
      }
    });
  });
}
