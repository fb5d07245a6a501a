import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import { SingleBar } from "cli-progress";
import { type Command, InvalidArgumentError, Option } from "commander";
import { isPresent } from "../models/store.ts";
import { DEFAULT_DETECTOR, DETECTORS, INPUT_SIZE_RANGE } from "../vision/catalog.ts";
import type { AnalyzeOptions } from "../vision/engine.ts";
import type { Face } from "../vision/types.ts";

const IMAGE_EXTENSIONS = new Set([
  ".jpg",
  ".jpeg",
  ".png",
  ".webp",
  ".gif",
  ".tif",
  ".tiff",
  ".avif",
  ".heic",
  ".bmp",
]);

interface DetectFlags {
  detector: string;
  minFaceSize?: number;
  thresholds?: number[];
  threshold?: number;
  maxFaces?: number;
  jsonl?: boolean;
  draw?: string;
  progress?: boolean;
  mask?: boolean;
  maskThreshold?: number;
  inputSize?: number;
  maskSource?: "classifier" | "head";
}

/** The detectors, with those whose models are not installed marked (and how to install them). */
function detectorHelp(): string {
  const missing = Object.entries(DETECTORS)
    .filter(([, spec]) => !spec.models.every((m) => isPresent(m)))
    .map(([id]) => id);
  if (!missing.length) return "detector";
  return `detector (not installed: ${missing.join(", ")}; \`maskwatch models pull <model>\` installs one, see \`maskwatch models list\`)`;
}

export function registerDetectCommand(program: Command): void {
  program
    .command("detect")
    .description("find faces in images; one result per image")
    .argument("<paths...>", "image files or folders (searched recursively)")
    .addOption(
      new Option("-d, --detector <id>", detectorHelp())
        .choices(Object.keys(DETECTORS))
        .default(DEFAULT_DETECTOR),
    )
    .option("--min-face-size <px>", "smallest face to search for, in pixels (MTCNN: 20)", positiveNumber)
    .option(
      "--thresholds <list>",
      "MTCNN stage thresholds pnet,rnet,onet (e.g. 0.6,0.7,0.7); for other detectors one score threshold",
      numberList,
    )
    .option("--threshold <score>", "keep faces scoring at least this", probability)
    .option("--max-faces <n>", "keep at most n faces per image (highest scores)", positiveNumber)
    .option(
      "--input-size <px>",
      "long side images are scaled to for the network (maskwatch: 640)",
      positiveNumber,
    )
    .option("--mask", "classify each face: mask, no_mask or incorrect")
    .option("--mask-threshold <p>", "report `mask` only at this probability or above (0.5)", probability)
    .addOption(
      new Option("--mask-source <source>", "the classifier on face crops, or the detector's own mask head")
        .choices(["classifier", "head"])
        .default("classifier"),
    )
    .option("--jsonl", "one JSON object per line: {image, width, height, faces, timings_ms}")
    .option("--draw <dir>", "write each image with boxes, landmarks and scores drawn into <dir>")
    .option("--no-progress", "no progress bar on stderr")
    .action(async (paths: string[], flags: DetectFlags) => {
      process.exitCode = await runDetect(paths, flags);
    });
}

async function runDetect(paths: string[], flags: DetectFlags): Promise<number> {
  let options: AnalyzeOptions;
  try {
    options = detectOptions(flags);
  } catch (err) {
    process.stderr.write(`maskwatch: ${(err as Error).message}\n`);
    return 2;
  }
  const files = await collectImages(paths);
  if (files.length === 0) {
    process.stderr.write("maskwatch: no images found in the given paths\n");
    return 2;
  }
  // The runtime and image libraries load only here, so `--help` and option errors come fast.
  const [{ Engine }, { decodeImage }, { drawFaces }] = await Promise.all([
    import("../vision/engine.ts"),
    import("../vision/image.ts"),
    import("../vision/draw.ts"),
  ]);
  const engine = new Engine();
  // Load the models before the first image, so a missing model is one clear error.
  await engine.detector(flags.detector);
  if (flags.mask) await engine.maskClassifier();
  if (flags.draw) await mkdir(flags.draw, { recursive: true });

  const bar =
    flags.progress !== false && files.length > 1 && process.stderr.isTTY
      ? new SingleBar({ format: "{bar} {value}/{total} images | {eta_formatted} left", hideCursor: true })
      : null;
  bar?.start(files.length, 0);
  let failures = 0;
  for (const file of files) {
    try {
      const t0 = performance.now();
      const { image } = await decodeImage(await readFile(file));
      const t1 = performance.now();
      const { faces, timings } = await engine.analyze(image, options);
      const t2 = performance.now();
      const detect = round(t2 - t1 - (timings.classify ?? 0));
      const timings_ms: Record<string, number> = { decode: round(t1 - t0), detect };
      if (timings.classify !== undefined) timings_ms.classify = round(timings.classify);
      const result = { image: file, width: image.width, height: image.height, faces, timings_ms };
      if (flags.draw) {
        const out = join(flags.draw, `${basename(file, extname(file))}.jpg`);
        await writeFile(out, await drawFaces(image, faces));
      }
      print(bar, flags.jsonl ? JSON.stringify(result, roundFloats) : summary(result));
    } catch (err) {
      failures++;
      const message = err instanceof Error ? err.message : String(err);
      const code = (err as { code?: string }).code ?? "error";
      print(
        bar,
        flags.jsonl
          ? JSON.stringify({ image: file, error: { code, message } })
          : `${file}: error: ${message}`,
      );
    }
    bar?.increment();
  }
  bar?.stop();
  await engine.close();
  return failures ? 1 : 0;
}

function detectOptions(flags: DetectFlags): AnalyzeOptions {
  if (flags.maskThreshold !== undefined && !flags.mask) throw new Error("--mask-threshold needs --mask");
  if (flags.maskSource === "head" && !DETECTORS[flags.detector].maskHead)
    throw new Error(`${flags.detector} has no mask head; use --mask-source classifier`);
  if (flags.inputSize !== undefined) {
    const [min, max] = INPUT_SIZE_RANGE;
    if (!DETECTORS[flags.detector].inputSize)
      throw new Error(`--input-size does not apply to ${flags.detector}`);
    if (!Number.isInteger(flags.inputSize) || flags.inputSize < min || flags.inputSize > max)
      throw new Error(`--input-size must be a whole number from ${min} to ${max}`);
  }
  const options: AnalyzeOptions = {
    detector: flags.detector,
    minFaceSize: flags.minFaceSize,
    maxFaces: flags.maxFaces,
    inputSize: flags.inputSize,
    threshold: flags.threshold,
    mask: flags.mask ? { threshold: flags.maskThreshold, source: flags.maskSource } : false,
  };
  const t = flags.thresholds;
  if (t) {
    if (flags.detector === "mtcnn") {
      if (t.length !== 3) throw new Error("--thresholds for mtcnn takes three values: pnet,rnet,onet");
      options.stageThresholds = [t[0], t[1], t[2]];
    } else {
      if (t.length !== 1) throw new Error(`--thresholds for ${flags.detector} takes one value`);
      options.threshold = t[0];
    }
  }
  return options;
}

/** Files as given, folders walked in name order; only image extensions inside folders. */
async function collectImages(paths: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const s = await stat(p).catch(() => null);
    if (!s) {
      process.stderr.write(`maskwatch: ${p}: no such file or folder\n`);
      continue;
    }
    if (s.isFile()) out.push(p);
    else if (s.isDirectory()) {
      const entries = (await readdir(p, { withFileTypes: true })).sort((a, b) =>
        a.name.localeCompare(b.name),
      );
      for (const e of entries) {
        const child = join(p, e.name);
        if (e.isDirectory()) out.push(...(await collectImages([child])));
        else if (IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(child);
      }
    }
  }
  return out;
}

function print(bar: SingleBar | null, line: string): void {
  if (bar) process.stderr.write("\r\x1b[2K");
  process.stdout.write(`${line}\n`);
}

function summary(r: {
  image: string;
  width: number;
  height: number;
  faces: Face[];
  timings_ms: Record<string, number>;
}): string {
  const scores = r.faces
    .map((f) => `score ${f.score.toFixed(2)}${f.mask ? ` ${f.mask.label} ${f.mask.score.toFixed(2)}` : ""}`)
    .join(", ");
  return `${r.image}: ${r.width}×${r.height}, ${r.faces.length} face(s)${scores ? ` [${scores}]` : ""} (decode ${r.timings_ms.decode} ms, detect ${r.timings_ms.detect} ms)`;
}

const round = (v: number) => Math.round(v * 100) / 100;

/** Coordinates to 0.01 px and scores to 1e-4 keep the lines short without losing anything useful. */
function roundFloats(key: string, value: unknown): unknown {
  if (typeof value !== "number" || Number.isInteger(value)) return value;
  return key === "score" ? Math.round(value * 1e4) / 1e4 : round(value);
}

function positiveNumber(v: string): number {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError("must be a positive number");
  return n;
}

function probability(v: string): number {
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError("must be a number between 0 and 1");
  return n;
}

function numberList(v: string): number[] {
  const parts = v.split(",").map((s) => Number(s.trim()));
  if (parts.some((n) => !(n >= 0 && n <= 1)))
    throw new InvalidArgumentError("must be numbers between 0 and 1, comma-separated");
  return parts;
}
