/**
 * `npm run bench`: per-stage latency of each detector on a 640×480 and a 1920×1080 JPEG
 * (median and p90 over many runs) and peak RSS. Timings are only comparable within one run
 * on one machine: compare commits with `--compare old.json` (ratios), not absolute ms.
 *
 *   npm run bench -- [--detectors mtcnn,blazeface] [--runs 40] [--json out.json] [--compare old.json]
 *                    [--http [--http-seconds 10]]   (autocannon against the server on loopback:
 *                    /api/v1/detect, and the replaced service's multipart /detect for maskwatch and mtcnn)
 *                    [--stream [--stream-repeats 5]]  (one live source through the monitor, one ORT thread)
 *   npm run bench -- --classify [--classify-photos 40] [--classify-repeats 3] [--classify-detector maskwatch|none] [--classify-threads n]
 *                    (only the mask classifier: ms per face for crop, network and both, batches 1/8/32)
 *   npm run bench -- --memory [--memory-workers 2]  (peak resident memory of a server under the heaviest legal requests)
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { verify } from "../src/models/store.ts";
import { DETECTORS, Engine } from "../src/vision/engine.ts";
import { decodeImage } from "../src/vision/image.ts";
import { BATCH_SIZES, benchClassify, formatClassify } from "./classify.ts";
import { benchHttp, type HttpEndpoint } from "./http.ts";
import { benchMemory, formatMemory } from "./memory.ts";
import { benchStream, formatStream, type StreamBench } from "./stream.ts";

const { values: args } = parseArgs({
  options: {
    detectors: { type: "string" },
    runs: { type: "string", default: "40" },
    json: { type: "string" },
    compare: { type: "string" },
    image: { type: "string" },
    http: { type: "boolean", default: false },
    "http-seconds": { type: "string", default: "10" },
    stream: { type: "boolean", default: false },
    "stream-repeats": { type: "string", default: "5" },
    classify: { type: "boolean", default: false },
    "classify-photos": { type: "string", default: "40" },
    "classify-repeats": { type: "string", default: "3" },
    "classify-detector": { type: "string", default: "maskwatch" },
    "classify-threads": { type: "string" },
    memory: { type: "boolean", default: false },
    "memory-workers": { type: "string", default: "2" },
    help: { type: "boolean", short: "h", default: false },
  },
});

const USAGE = `usage: npm run bench -- [--detectors mtcnn,blazeface] [--runs 40] [--image file.jpg] [--json out.json] [--compare old.json]
                      [--http [--http-seconds 10]] [--stream [--stream-repeats 5]]
       npm run bench -- --classify [--classify-photos 40] [--classify-repeats 3] [--classify-detector maskwatch|none] [--classify-threads n] [--json out.json]
       npm run bench -- --memory [--memory-workers 2] [--json out.json]

Detectors: per-stage median/p90 ms on a 640x480 and a 1920x1080 JPEG, then the mask classifier on the
640x480 photo's faces. --classify: only the mask classifier, on Kaggle test photos (MASKWATCH_DATA or
MASKWATCH_SHARED/datasets): median ms per face for the crop, the network and both, at batch sizes
${BATCH_SIZES.join("/")}, for ground-truth boxes and for detected faces (eye landmarks: rotated crops);
--classify-threads n: ONNX Runtime threads (default all cores; the server's workers use 1).
--memory: a server process with that many workers and default limits gets the heaviest legal requests (36-40 MP
images, annotate, MTCNN at its floors, batches), several at once; peak resident memory per mix and overall.`;

const SHARED = resolve(process.env.MASKWATCH_SHARED ?? join(import.meta.dirname, "../../shared"));
// A street photo with three frontal faces, scaled to each benchmark size.
const SOURCE = args.image ?? join(SHARED, "datasets/dlib-faces/2008_002506.jpg");

type Stage = "decode" | "preprocess" | "inference" | "postprocess" | "total";
const STAGES: Stage[] = ["decode", "preprocess", "inference", "postprocess", "total"];

interface Row {
  detector: string;
  size: string;
  runs: number;
  faces: number;
  median: Record<Stage, number>;
  p90: Record<Stage, number>;
}

async function main(): Promise<void> {
  if (args.help) {
    console.log(USAGE);
    return;
  }
  if (args.classify) {
    // --classify-threads 1: as each server worker runs (MASKWATCH_THREADS); default all cores.
    const threads = args["classify-threads"] ? Number(args["classify-threads"]) : undefined;
    const engine = new Engine({ threads });
    const detector = args["classify-detector"] === "none" ? null : args["classify-detector"];
    const result = await benchClassify(engine, {
      photos: Number(args["classify-photos"]),
      repeats: Number(args["classify-repeats"]),
      detector,
    });
    await engine.close();
    console.log(formatClassify(result));
    if (args.json) {
      const report = { date: new Date().toISOString(), node: process.version, classifyFaces: result };
      await writeFile(args.json, `${JSON.stringify(report, null, 2)}\n`);
    }
    return;
  }
  let photo: Buffer;
  try {
    photo = await readFile(SOURCE);
  } catch {
    console.error(`bench: no source photo at ${SOURCE}; set MASKWATCH_SHARED or pass --image FILE`);
    process.exit(2);
  }
  if (args.memory) {
    const dir = await mkdtemp(join(tmpdir(), "maskwatch-bench-memory-"));
    try {
      const result = await benchMemory(photo, dir, Number(args["memory-workers"]));
      console.log(formatMemory(result));
      if (args.json) {
        const report = { date: new Date().toISOString(), node: process.version, memory: result };
        await writeFile(args.json, `${JSON.stringify(report, null, 2)}\n`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    return;
  }
  const sizes = [
    [640, 480],
    [1920, 1080],
  ] as const;
  const jpegs = await Promise.all(
    sizes.map(([w, h]) => sharp(photo).resize(w, h, { fit: "cover" }).jpeg({ quality: 90 }).toBuffer()),
  );

  const pulled = new Set((await verify()).filter((v) => v.status === "ok").map((v) => v.id));
  const wanted = args.detectors ? args.detectors.split(",") : Object.keys(DETECTORS);
  const runs = Number(args.runs);
  const engine = new Engine();
  const rows: Row[] = [];
  for (const id of wanted) {
    const spec = DETECTORS[id];
    if (!spec) throw new Error(`unknown detector ${id}`);
    const missing = spec.models.filter((m) => !pulled.has(m));
    if (missing.length) {
      console.error(
        `bench: skipping ${id}: models not pulled (${missing.join(", ")}); run maskwatch models pull`,
      );
      continue;
    }
    const detector = await engine.detector(id);
    for (let s = 0; s < sizes.length; s++) {
      const n = s === 0 ? runs : Math.max(5, Math.round(runs / 4));
      const samples: Record<Stage, number[]> = {
        decode: [],
        preprocess: [],
        inference: [],
        postprocess: [],
        total: [],
      };
      let faces = 0;
      for (let i = -3; i < n; i++) {
        const t0 = performance.now();
        const { image } = await decodeImage(jpegs[s]);
        const t1 = performance.now();
        const result = await detector.detect(image);
        const t2 = performance.now();
        if (i < 0) continue; // warm-up
        faces = result.faces.length;
        samples.decode.push(t1 - t0);
        samples.preprocess.push(result.timings.preprocess);
        samples.inference.push(result.timings.inference);
        samples.postprocess.push(result.timings.postprocess);
        samples.total.push(t2 - t0);
      }
      const row: Row = {
        detector: id,
        size: `${sizes[s][0]}x${sizes[s][1]}`,
        runs: n,
        faces,
        median: pick(samples, 0.5),
        p90: pick(samples, 0.9),
      };
      rows.push(row);
      console.log(format(row));
    }
  }
  const classify = await benchClassifier(engine, jpegs[0], pulled, runs);
  await engine.close();
  const http = [];
  if (args.http) {
    const dataDir = await mkdtemp(join(tmpdir(), "maskwatch-bench-"));
    const targets: [string, HttpEndpoint][] = [];
    for (const id of ["maskwatch", "blazeface", "mtcnn"].filter((d) => wanted.includes(d))) {
      targets.push([id, "api"]);
      // The replaced service's endpoint, as its clients call it (MTCNN there, maskwatch by default here).
      if (id !== "blazeface") targets.push([id, "compat"]);
    }
    for (const [id, endpoint] of targets) {
      const r = await benchHttp(photo, id, Number(args["http-seconds"]), dataDir, endpoint);
      http.push(r);
      const label = `${id} ${endpoint === "api" ? "/api/v1/detect" : "/detect"}`;
      console.log(
        `http ${label.padEnd(26)} ${r.requestsPerSecond} req/s, latency p50 ${r.latencyMs.p50} / p90 ${r.latencyMs.p90} / p99 ${r.latencyMs.p99} ms, non-2xx ${r.non2xx}, errors ${r.errors}, RSS ${r.serverRssMb} MB (server and workers' parent)`,
      );
    }
    await rm(dataDir, { recursive: true, force: true });
  }
  const stream = args.stream ? await benchStream(pulled, Math.max(1, Number(args["stream-repeats"]))) : null;
  if (stream) console.log(formatStream(stream));
  const report = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: (await import("node:os")).cpus().length,
    source: SOURCE,
    peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
    rows,
    classify,
    http,
    stream,
  };
  console.log(`peak RSS ${report.peakRssMb} MB`);
  if (args.json) await writeFile(args.json, `${JSON.stringify(report, null, 2)}\n`);
  if (args.compare) compare(JSON.parse(await readFile(args.compare, "utf8")) as typeof report, report);
}

/**
 * The mask classifier's stage: the faces MTCNN finds in the 640×480 photo, and a batch of 32
 * faces (the photo's faces repeated), median ms per call and per face.
 */
async function benchClassifier(engine: Engine, jpeg: Buffer, pulled: Set<string>, runs: number) {
  if (!pulled.has("mask-classifier") || !pulled.has("mtcnn-pnet")) {
    console.error("bench: skipping the classify stage: mask-classifier or mtcnn not available");
    return null;
  }
  const { image } = await decodeImage(jpeg);
  const { faces } = await (await engine.detector("mtcnn")).detect(image);
  if (faces.length === 0) return null;
  const classifier = await engine.maskClassifier();
  const batch32 = Array.from({ length: 32 }, (_, i) => faces[i % faces.length]);
  const out: Record<string, { faces: number; medianMs: number; msPerFace: number }> = {};
  for (const [name, set] of [
    ["photo", faces],
    ["batch32", batch32],
  ] as const) {
    const times: number[] = [];
    for (let i = -3; i < runs; i++) {
      const t = performance.now();
      await classifier.classify(image, set);
      if (i >= 0) times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)];
    out[name] = { faces: set.length, medianMs: round2(median), msPerFace: round2(median / set.length) };
    console.log(
      `classify ${name.padEnd(8)} ${set.length} faces: median ${median.toFixed(2)} ms, ${(median / set.length).toFixed(3)} ms/face`,
    );
  }
  return out;
}

const round2 = (v: number) => Math.round(v * 100) / 100;

function pick(samples: Record<Stage, number[]>, q: number): Record<Stage, number> {
  const out = {} as Record<Stage, number>;
  for (const stage of STAGES) {
    const sorted = [...samples[stage]].sort((a, b) => a - b);
    const v = sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1) + 0.5))];
    out[stage] = Math.round(v * 100) / 100;
  }
  return out;
}

function format(r: Row): string {
  const cells = STAGES.map((s) => `${s} ${r.median[s].toFixed(1)}/${r.p90[s].toFixed(1)}`);
  return `${r.detector.padEnd(17)} ${r.size.padEnd(9)} faces ${String(r.faces).padStart(2)}  ms median/p90: ${cells.join("  ")}`;
}

function compare(
  old: { rows: Row[]; stream?: StreamBench | null },
  now: { rows: Row[]; stream?: StreamBench | null },
): void {
  console.log("\nratio new/old of median total (below 1 is faster):");
  for (const r of now.rows) {
    const o = old.rows.find((x) => x.detector === r.detector && x.size === r.size);
    if (o)
      console.log(
        `${r.detector.padEnd(17)} ${r.size.padEnd(9)} ${(r.median.total / o.median.total).toFixed(3)}`,
      );
  }
  if (old.stream && now.stream)
    console.log(
      `stream            ${now.stream.size.padEnd(9)} ${(now.stream.pipeline.medianMs / old.stream.pipeline.medianMs).toFixed(3)} (median ms/frame)`,
    );
}

await main();
