/**
 * Test videos made with ffmpeg from dataset photos: face patches (a face with its surroundings,
 * cut from Kaggle face-mask images) moving over a plain background, appearing, disappearing,
 * and swapping patch (a person taking the mask off).
 */
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { parseVocXml } from "../../eval/groundtruth.ts";
import { sharedPath } from "./paths.ts";

export const VIDEO_WIDTH = 640;
export const VIDEO_HEIGHT = 480;
export const PATCH = 200;

/** Kaggle training-split faces that BlazeFace finds and the classifier labels with ≥ 0.97. */
export const FACES = {
  maskA: "maksssksksss29",
  maskB: "maksssksksss80",
  noMaskB: "maksssksksss72",
} as const;

export function hasFfmpeg(): boolean {
  return spawnSync(process.env.MASKWATCH_FFMPEG ?? "ffmpeg", ["-version"]).status === 0;
}

/** Why video tests cannot run here, or null. */
export function videoSkipReason(): string | null {
  if (!hasFfmpeg()) return "ffmpeg is not installed (apt-get install -y ffmpeg)";
  if (!sharedPath("datasets/kaggle-face-mask/annotations")) return "the kaggle-face-mask dataset is absent";
  return null;
}

/** A PATCH×PATCH RGB square around the largest face of a Kaggle image (2.2× the face box). */
export async function facePatch(name: string): Promise<Buffer> {
  const dir = sharedPath("datasets/kaggle-face-mask");
  if (!dir) throw new Error("kaggle-face-mask is absent");
  const voc = parseVocXml(readFileSync(join(dir, "annotations", `${name}.xml`), "utf8"));
  const area = (b: number[]) => (b[2] - b[0]) * (b[3] - b[1]);
  const [x1, y1, x2, y2] = voc.objects.reduce((a, o) => (area(o.box) > area(a.box) ? o : a)).box;
  const side = Math.round(Math.max(x2 - x1, y2 - y1) * 2.2);
  return sharp(join(dir, "images", `${name}.jpg`))
    .extract({
      left: Math.round((x1 + x2) / 2 - side / 2),
      top: Math.round((y1 + y2) / 2 - side / 2),
      width: side,
      height: side,
    })
    .resize(PATCH, PATCH)
    .removeAlpha()
    .raw()
    .toBuffer();
}

/** Where a patch is in one frame (its top-left corner), or null when it is not in view. */
export interface Placement {
  patch: Buffer;
  left: number;
  top: number;
}

/** Renders frame `i` of `frames` with the placements `scene(i)` gives. */
export async function renderFrame(placements: readonly Placement[]): Promise<Buffer> {
  return sharp({
    create: { width: VIDEO_WIDTH, height: VIDEO_HEIGHT, channels: 3, background: { r: 120, g: 130, b: 140 } },
  })
    .composite(
      placements.map((p) => ({
        input: p.patch,
        raw: { width: PATCH, height: PATCH, channels: 3 as const },
        left: Math.round(p.left),
        top: Math.round(p.top),
      })),
    )
    .removeAlpha()
    .raw()
    .toBuffer();
}

/** Encodes frames (raw RGB, VIDEO_WIDTH×VIDEO_HEIGHT) as MJPEG in Matroska at `fps`. */
export async function writeVideo(
  file: string,
  count: number,
  scene: (i: number) => Placement[],
  fps = 10,
): Promise<void> {
  const ff = spawn(
    process.env.MASKWATCH_FFMPEG ?? "ffmpeg",
    [
      "-hide_banner",
      "-loglevel",
      "error",
      "-y",
      "-f",
      "rawvideo",
      "-pix_fmt",
      "rgb24",
      "-s",
      `${VIDEO_WIDTH}x${VIDEO_HEIGHT}`,
      "-r",
      String(fps),
      "-i",
      "pipe:0",
      "-c:v",
      "mjpeg",
      "-q:v",
      "2",
      "-pix_fmt",
      "yuvj444p",
      file,
    ],
    { stdio: ["pipe", "ignore", "pipe"] },
  );
  let stderr = "";
  ff.stderr.on("data", (d) => {
    stderr += d;
  });
  const done = new Promise<void>((resolve, reject) => {
    ff.on("error", reject);
    ff.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`ffmpeg failed (${code}): ${stderr}`)),
    );
  });
  for (let i = 0; i < count; i++) {
    const frame = await renderFrame(scene(i));
    if (!ff.stdin.write(frame)) await new Promise((r) => ff.stdin.once("drain", r));
  }
  ff.stdin.end();
  await done;
}

/**
 * The standard scene, 60 frames at 10 fps: A wears a mask throughout, walking right; B wears one,
 * is hidden for 3 frames (15–17), then from frame 30 has it off. Expected: A observed once with
 * a mask; B observed once with a mask, then exactly one no_mask violation, under one track id.
 */
export async function maskOffScene(): Promise<{ count: number; scene: (i: number) => Placement[] }> {
  const [a, b, bOff] = await Promise.all([
    facePatch(FACES.maskA),
    facePatch(FACES.maskB),
    facePatch(FACES.noMaskB),
  ]);
  return {
    count: 60,
    scene: (i) => {
      const out: Placement[] = [{ patch: a, left: 20 + 3 * i, top: 30 }];
      if (i < 15 || i > 17) out.push({ patch: i < 30 ? b : bOff, left: 420 - 1.5 * i, top: 260 });
      return out;
    },
  };
}
