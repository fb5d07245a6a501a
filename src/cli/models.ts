/**
 * `maskwatch models …`: list, pull and verify the model files of the registry.
 *
 *   maskwatch models list [--json]
 *   maskwatch models pull [ids...] [--defaults] [--all] [--mirror <dir|url>] [--force] [--quiet]
 *   maskwatch models verify [ids...] [--json]
 */
import type { Command } from "commander";
import { isModelError } from "../models/errors.ts";
import { bundledModelIds, modelIds } from "../models/registry.ts";
import { getModel, list, type PullOutcome, type PullProgress, pullMany, verify } from "../models/store.ts";

export interface ModelsCliIO {
  stdout?: (text: string) => void;
  stderr?: (text: string) => void;
  /** Called with 1 on failure (default: sets process.exitCode). */
  setExitCode?: (code: number) => void;
  /** Whether stderr is a terminal (live progress). Default: process.stderr.isTTY. */
  interactive?: boolean;
}

function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "-";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return `${rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join("  ")).join("\n")}\n`;
}

/** Add the `models` command (with list / pull / verify) to `program`; returns the `models` command. */
export function registerModelsCommand(program: Command, io: ModelsCliIO = {}): Command {
  const out = io.stdout ?? ((s: string) => void process.stdout.write(s));
  const err = io.stderr ?? ((s: string) => void process.stderr.write(s));
  const fail =
    io.setExitCode ??
    ((code: number) => {
      process.exitCode = code;
    });
  const interactive = io.interactive ?? Boolean(process.stderr.isTTY);

  /** Run an action; expected errors become one line on stderr and exit code 1. */
  const guarded =
    <A extends unknown[]>(fn: (...args: A) => Promise<void>) =>
    async (...args: A): Promise<void> => {
      try {
        await fn(...args);
      } catch (e) {
        if (isModelError(e)) err(`maskwatch: ${e.message}\n`);
        else if (process.env["MASKWATCH_DEBUG"] && e instanceof Error) err(`maskwatch: ${e.stack}\n`);
        else err(`maskwatch: ${e instanceof Error ? e.message : String(e)}\n`);
        fail(1);
      }
    };

  const models = program
    .command("models")
    .description("list, download and verify the model files (cache: $MASKWATCH_MODEL_DIR or .cache/models)");

  models
    .command("list")
    .description("show the model catalogue and what is in the cache")
    .option("--json", "machine-readable output")
    .action(
      guarded(async (opts: { json?: boolean }) => {
        const rows = await list();
        if (opts.json) {
          out(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        const body = rows.map((r) => [
          r.id,
          r.verified ? "yes" : r.pulled ? "outdated" : "no",
          formatBytes(r.size),
          r.bundled ? "yes" : "no",
          r.licence,
          r.source + (r.converted ? " (converted)" : ""),
        ]);
        out(table([["ID", "INSTALLED", "SIZE", "DEFAULT", "LICENCE", "SOURCE"], ...body]));
        const outdated = rows.filter((r) => r.pulled && !r.verified).map((r) => r.id);
        if (outdated.length)
          out(
            `\noutdated: cached by another version of maskwatch (sha256 differs); replace with\n  npx maskwatch models pull ${outdated.join(" ")}\n`,
          );
      }),
    );

  models
    .command("pull")
    .description("download models into the cache, verifying their sha256")
    .argument("[ids...]", "model ids (see `maskwatch models list`)")
    .option("--defaults", "the default (bundled) models")
    .option("--all", "every model in the catalogue")
    .option(
      "--mirror <dir|url>",
      "take files from a mirror folder or http(s) base URL ($MASKWATCH_MODEL_MIRROR)",
    )
    .option("--force", "fetch again even if a verified file is cached")
    .option("--quiet", "print errors only")
    .action(
      guarded(
        async (
          ids: string[],
          opts: { defaults?: boolean; all?: boolean; mirror?: string; force?: boolean; quiet?: boolean },
        ) => {
          const wanted = new Set<string>(ids);
          if (opts.all) for (const id of modelIds()) wanted.add(id);
          if (opts.defaults) for (const id of bundledModelIds()) wanted.add(id);
          if (wanted.size === 0) {
            err("maskwatch: nothing to pull: name model ids, or use --defaults or --all\n");
            fail(1);
            return;
          }
          for (const id of wanted) getModel(id); // unknown ids: fail before fetching anything
          const live = interactive && !opts.quiet;
          let lastDraw = 0;
          const onProgress = (p: PullProgress) => {
            if (!live) return;
            const now = Date.now();
            if (p.phase === "fetch" && now - lastDraw < 100) return;
            lastDraw = now;
            const amount =
              p.phase === "fetch" && p.received !== undefined
                ? ` ${formatBytes(p.received)}${p.total ? ` / ${formatBytes(p.total)}` : ""}`
                : "";
            err(`\r\x1b[K${p.id}: ${p.phase}${amount}`);
          };
          let failed = 0;
          const report = (r: PullOutcome) => {
            if (live) err("\r\x1b[K");
            if (r.status === "failed") {
              failed++;
              err(`maskwatch: ${r.id}: ${r.error.message}\n`);
            } else if (!opts.quiet) {
              const what = r.status === "present" ? "already present" : `pulled from ${r.from}`;
              out(`${r.id}: ${what} (sha256 ${r.sha256.slice(0, 12)}…)\n`);
            }
          };
          const results = await pullMany(
            [...wanted],
            { mirror: opts.mirror, force: opts.force, onProgress },
            report,
          );
          if (failed > 0) {
            err(`maskwatch: ${failed} of ${results.length} model(s) failed to pull\n`);
            fail(1);
          }
        },
      ),
    );

  models
    .command("verify")
    .description("re-hash cached models; exits non-zero if a requested model is missing or corrupt")
    .argument("[ids...]", "model ids (default: all; then only corrupt files fail, missing ones are listed)")
    .option("--json", "machine-readable output")
    .action(
      guarded(async (ids: string[], opts: { json?: boolean }) => {
        const explicit = ids.length > 0;
        const results = await verify(explicit ? ids : undefined);
        const bad = results.filter((r) => r.status === "mismatch" || (explicit && r.status === "missing"));
        if (opts.json) {
          out(`${JSON.stringify(results, null, 2)}\n`);
        } else {
          for (const r of results) {
            if (r.status === "ok") out(`ok        ${r.id}  ${r.path}\n`);
            else if (r.status === "missing")
              out(`missing   ${r.id}  (run \`maskwatch models pull ${r.id}\`)\n`);
            else out(`MISMATCH  ${r.id}  ${r.path}: expected sha256 ${r.expected}, actual ${r.actual}\n`);
          }
        }
        if (bad.length > 0) {
          if (!opts.json)
            err(
              `maskwatch: ${bad.length} model(s) failed verification: ${bad.map((r) => r.id).join(", ")}\n`,
            );
          fail(1);
        }
      }),
    );

  return models;
}
