/**
 * Alerts: committed violations become webhook deliveries, compliance rules are evaluated over their
 * window, and a daily summary goes out once a day. With several replicas each event is queued by the
 * replica that recorded it, and a rule or a day alerts once (the store's conditional updates decide).
 */
import {
  type AlertRuleRecord,
  enqueueDeliveries,
  listAlertRules,
  setRuleFiring,
  type WebhookEvent,
} from "../store/alerts.ts";
import type { Database } from "../store/db.ts";
import { type EventRecord, eventJson, eventTotals } from "../store/events.ts";
import { buildReport } from "../store/reports.ts";
import { claimSetting } from "../store/settings.ts";
import type { MonitorBus } from "../streams/monitor.ts";
import { MqttPublisher, type MqttSettings } from "./mqtt.ts";
import { WebhookDispatcher, type WebhookSettings } from "./webhooks.ts";

export interface AlertSettings extends WebhookSettings {
  /** How often compliance rules are evaluated (also shortly after each event). */
  ruleIntervalMs: number;
  /** UTC hour after which yesterday's summary is sent (MASKWATCH_DAILY_SUMMARY_HOUR); null: never. */
  dailySummaryHour: number | null;
  /** Also publish every alert to this MQTT broker (MASKWATCH_MQTT_URL); null: no MQTT. */
  mqtt: MqttSettings | null;
}

interface Log {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

const DAY_MS = 86_400_000;

export class AlertService {
  readonly dispatcher: WebhookDispatcher;
  private mqtt: MqttPublisher | undefined;
  private ruleTimer: NodeJS.Timeout | undefined;
  private ruleSoon: NodeJS.Timeout | undefined;
  private evaluating: Promise<void> | undefined;
  private readonly onEvent = (e: EventRecord) => this.eventCommitted(e);
  private log: Log | undefined;

  constructor(
    private readonly db: Database,
    private readonly bus: MonitorBus,
    private readonly settings: AlertSettings,
    /** True while the bus re-emits another replica's message (that replica alerts for it). */
    private readonly relaying: () => boolean = () => false,
  ) {
    this.dispatcher = new WebhookDispatcher(db, settings, (obj, msg) => this.log?.warn(obj, msg));
  }

  start(log?: Log): void {
    this.log = log;
    if (this.settings.mqtt)
      this.mqtt = new MqttPublisher(this.settings.mqtt, (obj, msg) => this.log?.warn(obj, msg));
    this.bus.on("event", this.onEvent);
    this.dispatcher.start();
    this.ruleTimer = setInterval(() => void this.tick(), this.settings.ruleIntervalMs);
    this.ruleTimer.unref();
    void this.tick();
  }

  /**
   * Queues `event` for every webhook that wants it and sends it now, and publishes it over MQTT;
   * `only` (a webhook id) sends a test to that webhook alone.
   */
  async alert(
    event: WebhookEvent,
    data: unknown,
    sourceId?: string | null,
    only?: string,
  ): Promise<number[]> {
    const payload = { event, sent_at: new Date().toISOString(), data };
    const ids = await enqueueDeliveries(this.db, event, payload, { sourceId, only });
    if (ids.length) this.dispatcher.kick();
    if (this.mqtt && !only)
      await this.mqtt
        .publish(event, payload, sourceId)
        .catch((err) => this.log?.warn({ err, event }, "MQTT publish failed"));
    return ids;
  }

  private eventCommitted(e: EventRecord): void {
    if (this.relaying()) return;
    if (e.kind === "violation")
      this.alert("violation", eventJson(e), e.sourceId).catch((err) =>
        this.log?.warn({ err, event: e.id }, "violation alert not queued"),
      );
    // Rules see the new event soon, without evaluating them once per event on a busy source.
    this.ruleSoon ??= setTimeout(() => {
      this.ruleSoon = undefined;
      void this.tick();
    }, 1_000);
    this.ruleSoon.unref();
  }

  /** Evaluates every rule and the daily summary once (awaitable by tests). */
  async tick(now = Date.now()): Promise<void> {
    if (this.evaluating) return this.evaluating;
    this.evaluating = (async () => {
      try {
        for (const rule of await listAlertRules(this.db)) if (rule.enabled) await this.evaluate(rule, now);
        await this.dailySummary(now);
      } catch (err) {
        this.log?.warn({ err }, "alert rules could not be evaluated");
      }
    })().finally(() => {
      this.evaluating = undefined;
    });
    return this.evaluating;
  }

  private async evaluate(rule: AlertRuleRecord, now: number): Promise<void> {
    const from = now - rule.windowMinutes * 60_000;
    const counts = await eventTotals(this.db, {
      from,
      to: now + 1,
      sourceId: rule.sourceId ?? undefined,
      zone: rule.zone ?? undefined,
    });
    const faces = counts.mask + counts.noMask + counts.incorrect;
    if (faces < rule.minFaces) return;
    const rate = counts.mask / faces;
    const below = rate * 100 < rule.belowPercent;
    if (below === rule.firing) return;
    if (!(await setRuleFiring(this.db, rule.id, below, now))) return;
    const data = {
      rule: {
        id: rule.id,
        name: rule.name,
        below_percent: rule.belowPercent,
        window_minutes: rule.windowMinutes,
      },
      source_id: rule.sourceId,
      zone: rule.zone,
      compliance_rate: rate,
      faces,
      mask: counts.mask,
      no_mask: counts.noMask,
      incorrect: counts.incorrect,
      from: new Date(from).toISOString(),
      to: new Date(now).toISOString(),
    };
    await this.alert(below ? "compliance_below" : "compliance_recovered", data, rule.sourceId);
    this.log?.info(
      { rule: rule.id, rate, faces },
      below ? "compliance under its rule" : "compliance recovered",
    );
  }

  private async dailySummary(now: number): Promise<void> {
    const hour = this.settings.dailySummaryHour;
    if (hour === null) return;
    const today = Math.floor(now / DAY_MS) * DAY_MS;
    if (now < today + hour * 3_600_000) return;
    const day = new Date(today - DAY_MS).toISOString().slice(0, 10);
    // One replica, once per day: the setting moves forward only for the first to claim the day.
    if (!(await claimSetting(this.db, "alerts.daily_summary_day", day, now))) return;
    const { totals, peaks, top_hours, by_source } = await buildReport(this.db, {
      from: today - DAY_MS,
      to: today,
      bucket: "hour",
    });
    await this.alert("daily_summary", { day, totals, peaks, top_hours, by_source });
  }

  async close(): Promise<void> {
    this.bus.off("event", this.onEvent);
    clearInterval(this.ruleTimer);
    clearTimeout(this.ruleSoon);
    await this.evaluating;
    await this.dispatcher.close();
    await this.mqtt?.close();
  }
}
