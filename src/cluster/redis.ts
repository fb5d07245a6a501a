/**
 * Redis connections for running several replicas as one service (REDIS_URL). PostgreSQL keeps the
 * record; Redis holds what is shared and short-lived: rate-limit counters, source leases, live pub/sub.
 */

import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { Redis } from "ioredis";

export class RedisUnavailableError extends Error {
  override name = "RedisUnavailableError";
}

/** A connected client; a start without Redis fails fast with the reason instead of waiting forever. */
export async function connectRedis(url: string, name: string, timeoutMs = 5000): Promise<Redis> {
  const client = new Redis(url, {
    connectionName: `maskwatch-${name}`,
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 2,
    // Keep retrying after a drop (every ≤ 2 s); requests fail fast meanwhile.
    retryStrategy: (times) => Math.min(200 * times, 2000),
  });
  client.on("error", () => {}); // reported through failed commands and /ready, not as crashes
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    client.disconnect();
    throw new RedisUnavailableError(`REDIS_URL: cannot reach Redis (${(err as Error).message})`);
  }
  return client;
}

/** This process's name among the replicas: MASKWATCH_REPLICA_ID, else host, pid and a random tag. */
export function replicaName(env: NodeJS.ProcessEnv = process.env): string {
  return env.MASKWATCH_REPLICA_ID || `${hostname()}-${process.pid}-${randomBytes(2).toString("hex")}`;
}
