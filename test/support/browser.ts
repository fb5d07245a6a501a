/**
 * A real browser for the console tests: Debian's chromium driven by playwright-core, headless, with a fake
 * camera that plays a video file (Chrome's --use-file-for-fake-video-capture reads Y4M and loops it).
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { REPO } from "./paths.ts";

export const CHROMIUM = process.env.MASKWATCH_CHROMIUM ?? "/usr/bin/chromium";
/** Screenshots of each page, kept by CI as test artefacts (git-ignored). */
export const ARTIFACTS = join(REPO, "test-artifacts", "console");

/** Why browser tests cannot run here, or null. */
export function browserSkipReason(): string | null {
  if (!existsSync(CHROMIUM) || spawnSync(CHROMIUM, ["--version"]).status !== 0)
    return `chromium is not installed at ${CHROMIUM} (apt-get install -y chromium, or set MASKWATCH_CHROMIUM)`;
  return null;
}

/** Chromium whose camera is `y4m` (a looping fake device; the permission prompt is answered yes). */
export function launchBrowser(y4m?: string): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      ...(y4m ? [`--use-file-for-fake-video-capture=${y4m}`] : []),
    ],
  });
}

/** Every console error, failed request and uncaught exception of the pages of a context. */
export function watchErrors(context: BrowserContext): string[] {
  const errors: string[] = [];
  const watch = (page: Page) => {
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning")
        errors.push(`${page.url()}: console.${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => errors.push(`${page.url()}: uncaught: ${e.message}`));
  };
  context.pages().forEach(watch);
  context.on("page", watch);
  return errors;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Re-encodes a video as Y4M (yuv420p), the format Chrome's fake camera plays. */
export function toY4m(input: string, output: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const ff = spawn(
      process.env.MASKWATCH_FFMPEG ?? "ffmpeg",
      [
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        input,
        "-pix_fmt",
        "yuv420p",
        "-f",
        "yuv4mpegpipe",
        output,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    ff.stderr.on("data", (d) => {
      stderr += d;
    });
    ff.on("error", reject);
    ff.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`ffmpeg failed (${code}): ${stderr}`)),
    );
  });
}
