/**
 * Source leases in Redis: a source runs on the one replica holding its lease. A lease is a key
 * holding the replica's name with a time to live; the holder renews it, and when the holder dies the
 * key expires and another replica takes the source. The holder also keeps its own deadline (the time
 * it sent the last successful renewal plus the TTL, less a margin), so that it stops writing before
 * anyone else can have taken over, whatever the network did meanwhile.
 */
import type { Redis } from "ioredis";
import type { SourceLeases } from "../streams/manager.ts";

const RENEW = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export class RedisLeases implements SourceLeases {
  private readonly deadlines = new Map<string, number>();
  /** Where the other replicas reach this one (for MJPEG of a source running here); set once listening. */
  address = "";
  /** Clock drift between this process and Redis that a deadline allows for. */
  private readonly marginMs: number;

  constructor(
    private readonly redis: Redis,
    readonly replicaId: string,
    readonly ttlMs = 5000,
    private readonly prefix = "maskwatch:lease:source:",
  ) {
    this.marginMs = Math.min(1000, ttlMs / 5);
  }

  async acquire(id: string): Promise<boolean> {
    const sent = performance.now();
    const ok = await this.redis.set(this.prefix + id, this.value, "PX", this.ttlMs, "NX");
    if (ok !== "OK") return false;
    this.deadlines.set(id, sent + this.ttlMs - this.marginMs);
    return true;
  }

  async renew(id: string): Promise<boolean> {
    const sent = performance.now();
    let ok = false;
    try {
      ok = (await this.redis.eval(RENEW, 1, this.prefix + id, this.value, this.ttlMs)) === 1;
    } catch {
      // Redis unreachable: the lease may still be ours until its deadline; the next tick tries again.
      return this.holds(id);
    }
    if (ok) this.deadlines.set(id, sent + this.ttlMs - this.marginMs);
    else this.deadlines.delete(id);
    return ok;
  }

  async release(id: string): Promise<void> {
    this.deadlines.delete(id);
    await this.redis.eval(RELEASE, 1, this.prefix + id, this.value).catch(() => {});
  }

  holds(id: string): boolean {
    const deadline = this.deadlines.get(id);
    return deadline !== undefined && performance.now() < deadline;
  }

  /** The replica holding a source's lease and its address, if any. */
  async holder(id: string): Promise<{ replica: string; address: string } | null> {
    const value = await this.redis.get(this.prefix + id);
    if (!value) return null;
    const at = value.indexOf(" ");
    return at < 0
      ? { replica: value, address: "" }
      : { replica: value.slice(0, at), address: value.slice(at + 1) };
  }

  private get value(): string {
    return this.address ? `${this.replicaId} ${this.address}` : this.replicaId;
  }
}
