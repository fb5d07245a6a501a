/**
 * HTTP numbers for `npm run bench -- --http`: the server on loopback (its own workers), then
 * autocannon POSTing a 640×480 JPEG for a fixed time, either to /api/v1/detect (raw image/jpeg
 * body, faces and masks) or to the replaced service's `POST /detect` (multipart field `file`,
 * faces only, MASKWATCH_COMPAT_DETECTOR set to the detector): what its clients send.
 */
import autocannon from "autocannon";
import sharp from "sharp";
import { loadConfig } from "../src/server/config.ts";
import { startServer } from "../src/server/main.ts";

export type HttpEndpoint = "api" | "compat";

export interface HttpBench {
  detector: string;
  endpoint: HttpEndpoint;
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
  endpoint: HttpEndpoint = "api",
): Promise<HttpBench> {
  const key = "bench-key-0123456789abcdef";
  const server = await startServer(
    loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      MASKWATCH_DATA_DIR: dataDir,
      MASKWATCH_API_KEY: key,
      MASKWATCH_DETECTOR: detector,
      MASKWATCH_COMPAT_DETECTOR: detector,
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
    const jpeg = await sharp(photo).resize(640, 480, { fit: "cover" }).jpeg({ quality: 90 }).toBuffer();
    const boundary = "maskwatch-bench-boundary";
    const opts = {
      url: endpoint === "api" ? `${server.url}/api/v1/detect?detector=${detector}` : `${server.url}/detect`,
      method: "POST" as const,
      headers: {
        "content-type": endpoint === "api" ? "image/jpeg" : `multipart/form-data; boundary=${boundary}`,
        "x-api-key": key,
      },
      body:
        endpoint === "api"
          ? jpeg
          : Buffer.concat([
              Buffer.from(
                `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n` +
                  "Content-Type: image/jpeg\r\n\r\n",
              ),
              jpeg,
              Buffer.from(`\r\n--${boundary}--\r\n`),
            ]),
      connections: 8,
    };
    await autocannon({ ...opts, duration: 2 }); // warm-up
    const r = await autocannon({ ...opts, duration: seconds });
    return {
      detector,
      endpoint,
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
