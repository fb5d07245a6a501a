/**
 * `npm run loadtest`: autocannon through nginx against one, then two Maskwatch replicas (real
 * `maskwatch serve` processes sharing PostgreSQL and Redis, the shipped nginx site in front), each
 * with one inference worker. Two requests: a light JSON GET (proxy, auth, shared rate limit) and a
 * 640×480 JPEG to /api/v1/detect. Reports req/s, latency percentiles and errors; numbers compare
 * only within one run on one machine.
 *
 *   npm run loadtest -- [--seconds 15] [--connections 16] [--detector blazeface] [--json out.json]
 *                       [--database-url postgres://…]   (default: MASKWATCH_TEST_DATABASE_URL)
 * Needs Debian's redis-server and nginx, a PostgreSQL it may create a database in, and the shared data.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import sharp from "sharp";
import {
  clusterSkipReason,
  type Proc,
  startApp,
  startNginx,
  startRedis,
  stop,
} from "../test/support/cluster.ts";
import { createTestDatabase } from "../test/support/pg.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "15" },
    connections: { type: "string", default: "16" },
    detector: { type: "string", default: "blazeface" },
    json: { type: "string" },
    "database-url": { type: "string" },
  },
});

const KEY = "loadtest-key-0123456789abcdef";
const SHARED = resolve(process.env.MASKWATCH_SHARED ?? join(import.meta.dirname, "../../shared"));
const PHOTO = join(SHARED, "datasets/dlib-faces/2008_002506.jpg");

interface Row {
  replicas: number;
  request: string;
  requestsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number };
  non2xx: number;
  errors: number;
  statusCodes: Record<string, number>;
}

async function main(): Promise<void> {
  const adminUrl = args["database-url"] ?? process.env.MASKWATCH_TEST_DATABASE_URL;
  const skip =
    clusterSkipReason() ?? (adminUrl ? null : "give --database-url or MASKWATCH_TEST_DATABASE_URL");
  if (skip) {
    console.error(`loadtest: ${skip}`);
    process.exit(2);
  }
  const seconds = Number(args.seconds);
  const connections = Number(args.connections);
  const dir = await mkdtemp(join(tmpdir(), "maskwatch-loadtest-"));
  const database = await createTestDatabase(adminUrl!);
  const procs: Proc[] = [];
  const rows: Row[] = [];
  try {
    const redis = await startRedis(join(dir, "redis"));
    procs.push(redis);
    const env = (name: string) => ({
      DATABASE_URL: database.url,
      REDIS_URL: redis.redisUrl,
      MASKWATCH_API_KEY: KEY,
      MASKWATCH_WORKERS: "1",
      MASKWATCH_DETECTOR: args.detector!,
      MASKWATCH_RATE_LIMIT: "1000000",
      MASKWATCH_RATE_LIMIT_IP: "1000000",
      MASKWATCH_TRUST_PROXY: "on",
      MASKWATCH_DATA_DIR: join(dir, name),
      LOG_LEVEL: "warn",
    });
    const apps = [await startApp("a", env("a"))];
    procs.push(apps[0]);
    const jpeg = await sharp(PHOTO).resize(640, 480, { fit: "cover" }).jpeg({ quality: 90 }).toBuffer();
    for (const replicas of [1, 2]) {
      if (replicas === 2) {
        apps.push(await startApp("b", env("b")));
        procs.push(apps[1]);
      }
      const nginx = await startNginx(join(dir, `nginx-${replicas}`), apps);
      try {
        const requests = [
          { request: "GET /api/v1/models", path: "/api/v1/models", method: "GET" as const },
          {
            request: `POST /api/v1/detect (${args.detector}, 640×480 JPEG)`,
            path: `/api/v1/detect?detector=${args.detector}`,
            method: "POST" as const,
            body: jpeg,
          },
        ];
        for (const r of requests) {
          const opts = {
            url: nginx.url + r.path,
            method: r.method,
            headers: { "x-api-key": KEY, ...(r.body ? { "content-type": "image/jpeg" } : {}) },
            body: r.body,
            connections,
          };
          await autocannon({ ...opts, duration: 2 }); // warm-up: models, connections
          const res = await autocannon({ ...opts, duration: seconds });
          rows.push({
            replicas,
            request: r.request,
            requestsPerSecond: Math.round(res.requests.average * 10) / 10,
            latencyMs: { p50: res.latency.p50, p90: res.latency.p90, p99: res.latency.p99 },
            non2xx: res.non2xx,
            errors: res.errors,
            statusCodes: Object.fromEntries(
              Object.entries(res.statusCodeStats ?? {}).map(([code, v]) => [
                code,
                (v as { count: number }).count,
              ]),
            ),
          });
          console.error(`  ${replicas} replica(s), ${r.request}: ${rows.at(-1)!.requestsPerSecond} req/s`);
          if (res.non2xx) {
            const one = await fetch(opts.url, { method: r.method, headers: opts.headers, body: r.body });
            console.error(`    a request now: ${one.status} ${(await one.text()).slice(0, 300)}`);
          }
        }
      } finally {
        await stop(nginx);
      }
    }
  } finally {
    for (const p of procs.reverse()) await stop(p);
    await database.drop();
    await rm(dir, { recursive: true, force: true });
  }

  const lines = [
    `Load test: ${seconds} s per row, ${connections} connections, through nginx; ${cpus().length} cores, ` +
      "every process (nginx, Redis, PostgreSQL, the replicas) on this one machine; one inference worker per replica.",
    "",
    "| replicas | request | req/s | p50 ms | p90 ms | p99 ms | non-2xx | errors | status codes |",
    "| -------: | ------- | ----: | -----: | -----: | -----: | ------: | -----: | ------------ |",
    ...rows.map(
      (r) =>
        `| ${r.replicas} | ${r.request} | ${r.requestsPerSecond} | ${r.latencyMs.p50} | ${r.latencyMs.p90} | ` +
        `${r.latencyMs.p99} | ${r.non2xx} | ${r.errors} | ${Object.entries(r.statusCodes)
          .map(([c, n]) => `${c}: ${n}`)
          .join(", ")} |`,
    ),
  ];
  for (const request of new Set(rows.map((r) => r.request))) {
    const [one, two] = [1, 2].map((n) => rows.find((r) => r.replicas === n && r.request === request)!);
    lines.push(
      "",
      `${request}: 2 replicas ÷ 1 = ${(two.requestsPerSecond / one.requestsPerSecond).toFixed(2)}× req/s`,
    );
  }
  console.log(lines.join("\n"));
  if (args.json) await writeFile(args.json, `${JSON.stringify({ seconds, connections, rows }, null, 2)}\n`);
}

await main();
