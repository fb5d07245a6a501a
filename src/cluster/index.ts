/** Several replicas as one service: the Redis side (leases, pub/sub, shared rate limits). */
import type { Redis } from "ioredis";
import type { MonitorBus } from "../streams/monitor.ts";
import { BusBridge } from "./bus-bridge.ts";
import { RedisLeases } from "./leases.ts";
import { connectRedis, replicaName } from "./redis.ts";

export { RedisUnavailableError } from "./redis.ts";

export interface Cluster {
  replicaId: string;
  /** Commands: leases, rate-limit counters, publishing. */
  redis: Redis;
  leases: RedisLeases;
  /** Set by attach(): whether the bus is re-emitting another replica's message right now. */
  relaying(): boolean;
  /** Carry the monitor bus to and from the other replicas. */
  attach(bus: MonitorBus): Promise<void>;
  /** Tell every replica (this one too) that the stored settings changed. */
  settingsChanged(): Promise<void>;
  onSettingsChanged(fn: () => void): Promise<void>;
  close(): Promise<void>;
}

const SETTINGS_CHANNEL = "maskwatch:settings";

export async function joinCluster(url: string, opts: { leaseMs?: number } = {}): Promise<Cluster> {
  const replicaId = replicaName();
  const redis = await connectRedis(url, "commands");
  // A subscribed connection can do nothing else.
  const sub = await connectRedis(url, "subscriber");
  const leases = new RedisLeases(redis, replicaId, opts.leaseMs);
  let bridge: BusBridge | undefined;
  return {
    replicaId,
    redis,
    leases,
    relaying: () => bridge?.relaying ?? false,
    async attach(bus) {
      bridge = new BusBridge(redis, sub, bus, replicaId);
      await bridge.start();
    },
    async settingsChanged() {
      await redis.publish(SETTINGS_CHANNEL, replicaId);
    },
    async onSettingsChanged(fn) {
      sub.on("message", (channel: string) => {
        if (channel === SETTINGS_CHANNEL) fn();
      });
      await sub.subscribe(SETTINGS_CHANNEL);
    },
    async close() {
      await bridge?.close();
      sub.disconnect();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
