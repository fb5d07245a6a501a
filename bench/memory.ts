/**
 * Peak memory for `npm run bench -- --memory`: the server as its own process (MASKWATCH_WORKERS=2, default
 * limits), then the heaviest legal requests, each mix sent several at a time, while the process's resident
 * memory is sampled from /proc. The README's ceiling is this run's overall peak (VmHWM).
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import sharp from "sharp";

export interface MemoryScenario {
  name: string;
  requests: number;
  statuses: Record<string, number>;
  peakRssMb: number;
  seconds: number;
}

export interface MemoryBench {
  workers: number;
  idleRssMb: number;
  scenarios: MemoryScenario[];
  /** VmHWM at the end: the highest resident memory the process ever had. */
  peakRssMb: number;
  afterRssMb: number;
}

interface Request {
  path: string;
  body: Buffer | FormData;
  type?: string;
}

const mb = (kb: number) => Math.round(kb / 1024);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function procStatus(pid: number): Promise<{ rss: number; hwm: number }> {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

/** Legal inputs at the default limits (10 MB upload, 40 MP): the largest pixels and the most work. */
async function scenarios(photo: Buffer): Promise<{ name: string; requests: Request[] }[]> {
  // A flat 36 MP PNG is tiny on the wire and huge in pixels.
  const flatPng = await sharp({ create: { width: 6000, height: 6000, channels: 3, background: "#7a8" } })
    .png()
    .toBuffer();
  // A real photo blown up to 40 MP (7300×5470), still under 10 MB as JPEG.
  const bigJpeg = await sharp(photo).resize(7300, 5470, { fit: "cover" }).jpeg({ quality: 70 }).toBuffer();
  const vga = await sharp(photo).resize(640, 480, { fit: "cover" }).jpeg({ quality: 90 }).toBuffer();
  const batch = new FormData();
  for (let i = 0; i < 8; i++) batch.append("files", new Blob([new Uint8Array(bigJpeg)]), `p${i}.jpg`);
  const form = (bytes: Buffer) => {
    const f = new FormData();
    f.append("file", new Blob([new Uint8Array(bytes)], { type: "image/jpeg" }), "a.jpg");
    return f;
  };
  const times = (n: number, r: Request) => Array.from({ length: n }, () => r);
  const jpeg = "image/jpeg";
  return [
    {
      name: "640×480 JPEG, maskwatch + masks ×16",
      requests: times(16, { path: "/api/v1/detect?mask=true", body: vga, type: jpeg }),
    },
    {
      name: "36 MP flat PNG, maskwatch ×6",
      requests: times(6, { path: "/api/v1/detect", body: flatPng, type: "image/png" }),
    },
    {
      name: "40 MP JPEG, maskwatch + masks + annotate ×6",
      requests: times(6, { path: "/api/v1/detect?mask=true&annotate=true", body: bigJpeg, type: jpeg }),
    },
    {
      name: "40 MP JPEG, MTCNN min face 8, thresholds 0.01 ×4",
      requests: times(4, {
        path: "/api/v1/detect?detector=mtcnn&min_face_size=8&threshold_pnet=0.01&threshold_rnet=0.01&threshold_onet=0.01",
        body: bigJpeg,
        type: jpeg,
      }),
    },
    {
      name: "compatible /detect, 40 MP JPEG ×6",
      requests: times(6, { path: "/detect", body: form(bigJpeg) as unknown as Buffer }),
    },
    {
      name: "batch of 8 × 40 MP JPEG ×2",
      requests: times(2, { path: "/api/v1/detect/batch", body: batch as unknown as Buffer }),
    },
  ];
}

export async function benchMemory(photo: Buffer, dataDir: string, workers = 2): Promise<MemoryBench> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(import.meta.dirname, "../src/cli/main.ts"), "serve"],
    {
      env: {
        ...process.env,
        PORT: String(port),
        HOST: "127.0.0.1",
        MASKWATCH_DATA_DIR: dataDir,
        MASKWATCH_AUTH: "off",
        MASKWATCH_WORKERS: String(workers),
        MASKWATCH_RATE_LIMIT_IP: "1000000",
        MASKWATCH_REQUEST_TIMEOUT_MS: "120000",
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const pid = child.pid as number;
  const base = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; ; i++) {
      const ok = await fetch(`${base}/ready`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
      if (i > 300 || child.exitCode !== null) throw new Error("bench: the server did not become ready");
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 1000));
    const idle = await procStatus(pid);
    const results: MemoryScenario[] = [];
    for (const s of await scenarios(photo)) {
      let peak = 0;
      const sampler = setInterval(() => {
        procStatus(pid).then(
          ({ rss }) => (peak = Math.max(peak, rss)),
          () => undefined,
        );
      }, 20);
      const started = performance.now();
      const statuses: Record<string, number> = {};
      await Promise.all(
        s.requests.map(async (r) => {
          const headers: Record<string, string> = r.type ? { "content-type": r.type } : {};
          const res = await fetch(base + r.path, { method: "POST", headers, body: r.body as BodyInit });
          await res.arrayBuffer();
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        }),
      );
      clearInterval(sampler);
      peak = Math.max(peak, (await procStatus(pid)).rss);
      results.push({
        name: s.name,
        requests: s.requests.length,
        statuses,
        peakRssMb: mb(peak),
        seconds: Math.round((performance.now() - started) / 100) / 10,
      });
    }
    const end = await procStatus(pid);
    return {
      workers,
      idleRssMb: mb(idle.rss),
      scenarios: results,
      peakRssMb: mb(end.hwm),
      afterRssMb: mb(end.rss),
    };
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
}

export function formatMemory(m: MemoryBench): string {
  const lines = [
    `server with MASKWATCH_WORKERS=${m.workers}: idle ${m.idleRssMb} MB resident`,
    "| requests (sent at once) | answers | peak RSS (MB) | seconds |",
    "| --- | --- | ---: | ---: |",
    ...m.scenarios.map(
      (s) =>
        `| ${s.name} | ${Object.entries(s.statuses)
          .map(([code, n]) => `${n}× ${code}`)
          .join(", ")} | ${s.peakRssMb} | ${s.seconds} |`,
    ),
    `peak resident memory over the run (VmHWM): ${m.peakRssMb} MB; after: ${m.afterRssMb} MB`,
  ];
  return lines.join("\n");
}
