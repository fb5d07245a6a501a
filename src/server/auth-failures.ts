/**
 * Wrong API keys per address in a sliding window. One replica counts in memory; with REDIS_URL every
 * replica counts in one Redis sorted set per address, so a guesser cannot spread tries over replicas.
 */
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";

export interface FailureCounter {
  add(address: string): Promise<void>;
  /** Milliseconds until the address may try again; 0 when it may now. */
  blockedFor(address: string): Promise<number>;
}

export class MemoryFailureCounter implements FailureCounter {
  private readonly times = new Map<string, number[]>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}

  async add(address: string): Promise<void> {
    const now = Date.now();
    const list = this.recent(address, now);
    list.push(now);
    this.times.set(address, list);
    if (this.times.size > 10_000) {
      for (const [a, t] of this.times) if (t[t.length - 1] < now - this.windowMs) this.times.delete(a);
    }
  }

  async blockedFor(address: string): Promise<number> {
    const now = Date.now();
    const list = this.recent(address, now);
    if (list.length === 0) this.times.delete(address);
    return list.length >= this.limit ? list[list.length - this.limit] + this.windowMs - now : 0;
  }

  private recent(address: string, now: number): number[] {
    return (this.times.get(address) ?? []).filter((t) => t > now - this.windowMs);
  }
}

/** Shared by every replica; when Redis fails it falls back to counting here (never blocks everyone). */
export class RedisFailureCounter implements FailureCounter {
  private readonly local: MemoryFailureCounter;

  constructor(
    private readonly redis: Redis,
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly prefix = "maskwatch:authfail:",
  ) {
    this.local = new MemoryFailureCounter(limit, windowMs);
  }

  async add(address: string): Promise<void> {
    const now = Date.now();
    const key = this.prefix + address;
    try {
      await this.redis
        .multi()
        .zremrangebyscore(key, "-inf", now - this.windowMs)
        .zadd(key, now, `${now}-${randomBytes(4).toString("hex")}`)
        .pexpire(key, this.windowMs)
        .exec();
    } catch {
      await this.local.add(address);
    }
  }

  async blockedFor(address: string): Promise<number> {
    const now = Date.now();
    const key = this.prefix + address;
    try {
      await this.redis.zremrangebyscore(key, "-inf", now - this.windowMs);
      // The oldest of the newest `limit` failures: when it leaves the window, one more try is allowed.
      const [, score] = await this.redis.zrange(key, -this.limit, -this.limit, "WITHSCORES");
      return score === undefined ? 0 : Math.max(0, Number(score) + this.windowMs - now);
    } catch {
      return this.local.blockedFor(address);
    }
  }
}
