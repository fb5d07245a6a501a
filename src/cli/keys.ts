/**
 * `maskwatch keys …`: manage the API keys of the service.
 *
 *   maskwatch keys create --name <name> [--scope detect|events:read|admin ...] [--json]
 *   maskwatch keys list [--json]
 *   maskwatch keys revoke <id|prefix> [--json]
 *
 * The database is the one the server uses: PostgreSQL when DATABASE_URL is set, else the SQLite file under
 * MASKWATCH_DATA_DIR (default ./data).
 */
import type { Command } from "commander";
import { type ApiKeyRecord, createKey, isApiKeyError, listKeys, revokeKey } from "../store/api-keys.ts";
import { type Database, DatabaseOpenError, openDatabase } from "../store/db.ts";
import { MigrationError } from "../store/migrations.ts";

export interface KeysCliIO {
  stdout?: (text: string) => void;
  stderr?: (text: string) => void;
  /** Called with 1 on failure (default: sets process.exitCode). */
  setExitCode?: (code: number) => void;
  /** Environment to read DATABASE_URL / MASKWATCH_DATA_DIR from (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return `${rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join("  ")).join("\n")}\n`;
}

function when(ms: number | null): string {
  return ms === null ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Add the `keys` command (create / list / revoke) to `program`; returns the `keys` command. */
export function registerKeysCommand(program: Command, io: KeysCliIO = {}): Command {
  const out = io.stdout ?? ((s: string) => void process.stdout.write(s));
  const err = io.stderr ?? ((s: string) => void process.stderr.write(s));
  const fail =
    io.setExitCode ??
    ((code: number) => {
      process.exitCode = code;
    });

  /** Open the database from the environment, run `fn`, close it; errors become one line and exit code 1. */
  const withDb =
    <A extends unknown[]>(fn: (db: Database, ...args: A) => Promise<void>) =>
    async (...args: A): Promise<void> => {
      const env = io.env ?? process.env;
      let db: Database | undefined;
      try {
        db = await openDatabase({
          url: env["DATABASE_URL"],
          dataDir: env["MASKWATCH_DATA_DIR"] || undefined,
        });
        await fn(db, ...args);
      } catch (e) {
        const expected = isApiKeyError(e) || e instanceof DatabaseOpenError || e instanceof MigrationError;
        if (!expected && env["MASKWATCH_DEBUG"] && e instanceof Error) err(`maskwatch: ${e.stack}\n`);
        else err(`maskwatch: ${e instanceof Error ? e.message : String(e)}\n`);
        fail(1);
      } finally {
        await db?.close().catch(() => {});
      }
    };

  const keys = program
    .command("keys")
    .description(
      "create, list and revoke API keys (database: $DATABASE_URL or $MASKWATCH_DATA_DIR/maskwatch.db)",
    );

  keys
    .command("create")
    .description("create an API key; it is printed once and cannot be shown again")
    .requiredOption("--name <name>", "what the key is for (shown in lists)")
    .option(
      "--scope <scope>",
      "detect, events:read or admin; repeat or comma-separate for several (default: detect)",
      collect,
    )
    .option("--json", "machine-readable output")
    .action(
      withDb(async (db, opts: { name: string; scope?: string[]; json?: boolean }) => {
        const created = await createKey(db, { name: opts.name, scopes: opts.scope ?? ["detect"] });
        const warning = "Store this key now: it cannot be shown again.";
        if (opts.json) {
          out(`${JSON.stringify(created, null, 2)}\n`);
          err(`maskwatch: ${warning}\n`);
          return;
        }
        out(
          `Created API key ${created.id} "${created.name}" (scopes: ${created.scopes.join(", ")})\n\n` +
            `    ${created.key}\n\n` +
            `${warning}\n`,
        );
      }),
    );

  keys
    .command("list")
    .description("list the API keys (never the keys themselves)")
    .option("--json", "machine-readable output")
    .action(
      withDb(async (db, opts: { json?: boolean }) => {
        const rows = await listKeys(db);
        if (opts.json) {
          out(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (rows.length === 0) {
          out("no API keys; create one with `maskwatch keys create --name <name>`\n");
          return;
        }
        const status = (k: ApiKeyRecord) =>
          k.revokedAt === null ? "active" : `revoked ${when(k.revokedAt)}`;
        out(
          table([
            ["ID", "PREFIX", "NAME", "SCOPES", "CREATED", "LAST USED", "STATUS"],
            ...rows.map((k) => [
              k.id,
              k.prefix,
              k.name,
              k.scopes.join(","),
              when(k.createdAt),
              when(k.lastUsedAt),
              status(k),
            ]),
          ]),
        );
      }),
    );

  keys
    .command("revoke")
    .description("revoke an API key; requests using it are refused from then on")
    .argument("<id|prefix>", "the key's id or its prefix (see `maskwatch keys list`)")
    .option("--json", "machine-readable output")
    .action(
      withDb(async (db, ref: string, opts: { json?: boolean }) => {
        const now = Date.now();
        const k = await revokeKey(db, ref, now);
        if (opts.json) {
          out(`${JSON.stringify(k, null, 2)}\n`);
          return;
        }
        const already = k.revokedAt !== now;
        out(
          already
            ? `API key ${k.id} (${k.prefix}…, "${k.name}") was already revoked at ${when(k.revokedAt)}\n`
            : `Revoked API key ${k.id} (${k.prefix}…, "${k.name}")\n`,
        );
      }),
    );

  return keys;
}
