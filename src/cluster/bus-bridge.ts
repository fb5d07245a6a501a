/**
 * Carries each replica's monitor bus (committed events, per-frame tracks, source statuses) to every
 * other replica over Redis pub/sub, so a console connected anywhere sees every source live.
 * Messages from other replicas are re-emitted on the local bus; `relaying` is true while they are,
 * so that listeners counting local work (metrics) can tell them apart and nothing is echoed back.
 */
import type { Redis } from "ioredis";
import type { MonitorBus } from "../streams/monitor.ts";

const TYPES = ["event", "frame", "status"] as const;
type BusType = (typeof TYPES)[number];

export class BusBridge {
  relaying = false;
  private readonly unsubscribe: (() => void)[] = [];

  constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    private readonly bus: MonitorBus,
    readonly replicaId: string,
    private readonly channel = "maskwatch:bus",
  ) {}

  async start(): Promise<void> {
    this.sub.on("message", (channel: string, raw: string) => {
      if (channel !== this.channel) return;
      let msg: { from: string; type: BusType; payload: unknown };
      try {
        msg = JSON.parse(raw);
      } catch {
        return;
      }
      if (msg.from === this.replicaId || !TYPES.includes(msg.type)) return;
      this.relaying = true;
      try {
        (this.bus.emit as (type: string, payload: unknown) => boolean)(msg.type, msg.payload);
      } finally {
        this.relaying = false;
      }
    });
    await this.sub.subscribe(this.channel);
    for (const type of TYPES) {
      const listener = (payload: unknown) => {
        if (this.relaying) return;
        const raw = JSON.stringify({ from: this.replicaId, type, payload });
        this.pub.publish(this.channel, raw).catch(() => {});
      };
      (this.bus.on as (type: string, fn: (p: unknown) => void) => MonitorBus)(type, listener);
      this.unsubscribe.push(() =>
        (this.bus.off as (type: string, fn: (p: unknown) => void) => MonitorBus)(type, listener),
      );
    }
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribe.splice(0)) off();
    await this.sub.unsubscribe(this.channel).catch(() => {});
  }
}
