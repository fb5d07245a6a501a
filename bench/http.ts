/**
 * HTTP numbers for `npm run bench -- --http`: the server on loopback (its own workers), then
 * autocannon POSTing a 640×480 JPEG to /api/v1/detect (raw image/jpeg body) for a fixed time.
 */
import autocannon from "autocannon";
import sharp from "sharp";
import { loadConfig } from "../src/server/config.ts";
import { startServer } from "../src/server/main.ts";

export interface HttpBench {
  detector: string;
  seconds: number;
  connections: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number };
  non2xx: number;
  errors: number;
  serverRssMb: number;
}

export async function benchHttp(
  photo: Buffer,
  detector: string,
  seconds: number,
  dataDir: string,
): Promise<HttpBench> {
  const key = "bench-key-0123456789abcdef";
  const server = await startServer(
    loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      MASKWATCH_DATA_DIR: dataDir,
      MASKWATCH_API_KEY: key,
      MASKWATCH_DETECTOR: detector,
      MASKWATCH_RATE_LIMIT: "1000000",
      MASKWATCH_RATE_LIMIT_IP: "1000000",
      LOG_LEVEL: "warn",
    }),
  );
  try {
    for (let i = 0; i < 150; i++) {
      if ((await fetch(`${server.url}/ready`)).status === 200) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const body = await sharp(photo).resize(640, 480, { fit: "cover" }).jpeg({ quality: 90 }).toBuffer();
    const opts = {
      url: `${server.url}/api/v1/detect?detector=${detector}`,
      method: "POST" as const,
      headers: { "content-type": "image/jpeg", "x-api-key": key },
      body,
      connections: 8,
    };
    await autocannon({ ...opts, duration: 2 }); // warm-up
    const r = await autocannon({ ...opts, duration: seconds });
    return {
      detector,
      seconds,
      connections: opts.connections,
      requestsPerSecond: Math.round(r.requests.average * 10) / 10,
      latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99 },
      non2xx: r.non2xx,
      errors: r.errors,
      serverRssMb: Math.round(process.memoryUsage().rss / 1024 / 1024),
    };
  } finally {
    await server.close();
  }
}
