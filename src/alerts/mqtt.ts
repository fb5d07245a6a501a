/**
 * Alerts over MQTT (MASKWATCH_MQTT_URL): each alert is published as JSON (QoS 1) on
 * `<prefix>/<source id>/<event>` (`<prefix>/all/<event>` when it concerns no one source), so a
 * subscriber picks a source (`maskwatch/door/#`) or an alert (`maskwatch/+/violation`). The client
 * reconnects by itself and queues what is published while the broker is away.
 */
import mqtt, { type MqttClient } from "mqtt";
import { redactUrl } from "../store/db.ts";

export interface MqttSettings {
  url: string;
  /** First topic level (MASKWATCH_MQTT_TOPIC_PREFIX, default "maskwatch"). */
  prefix: string;
}

type Log = (obj: object, msg: string) => void;

/** A topic level: what MQTT reserves (`/`, `+`, `#`) and control characters become `_`. */
function level(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it removes
  return s.replace(/[/+#\u0000-\u001f]/g, "_") || "_";
}

export class MqttPublisher {
  private readonly client: MqttClient;
  private lastError = "";

  constructor(
    private readonly settings: MqttSettings,
    warn?: Log,
  ) {
    this.client = mqtt.connect(settings.url, {
      clientId: `maskwatch-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      reconnectPeriod: 2_000,
      connectTimeout: 10_000,
    });
    this.client.on("error", (err) => {
      // One line per distinct failure, not one per reconnect attempt.
      if (err.message !== this.lastError)
        warn?.({ err: err.message, url: redactUrl(settings.url) }, "MQTT broker error");
      this.lastError = err.message;
    });
    this.client.on("connect", () => {
      this.lastError = "";
    });
  }

  topic(event: string, sourceId?: string | null): string {
    return `${this.settings.prefix}/${level(sourceId ?? "all")}/${level(event)}`;
  }

  get connected(): boolean {
    return this.client.connected;
  }

  /** Publishes (or queues while disconnected); resolves when the broker has it, or at once when queued. */
  publish(event: string, payload: unknown, sourceId?: string | null): Promise<void> {
    const topic = this.topic(event, sourceId);
    const body = JSON.stringify(payload);
    if (!this.client.connected) {
      this.client.publish(topic, body, { qos: 1 });
      return Promise.resolve();
    }
    return new Promise((resolve, reject) =>
      this.client.publish(topic, body, { qos: 1 }, (err) => (err ? reject(err) : resolve())),
    );
  }

  async close(): Promise<void> {
    await this.client.endAsync(false).catch(() => {});
  }
}
