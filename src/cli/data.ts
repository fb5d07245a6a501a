import { basename, dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { BackupUnsupportedError, openDatabase, SQLITE_FILE } from "../store/db.ts";
import { pruneEvents } from "../store/retention.ts";

/** `maskwatch backup` and `maskwatch prune`: the data the server keeps, from the same configuration. */
export function registerDataCommands(program: Command): void {
  program
    .command("backup")
    .description(
      "copy the SQLite database consistently while the server runs (online backup API); PostgreSQL: use pg_dump",
    )
    .argument("[file]", "where to write it (default: DATA_DIR/backups/maskwatch-<time>.db)")
    .action(async (file: string | undefined) => {
      const dataDir = resolve(process.env.MASKWATCH_DATA_DIR || "data");
      const db = await openDatabase({ url: process.env.DATABASE_URL, dataDir });
      const stamp = new Date().toISOString().replace(/[:.]/g, "-");
      const target = resolve(file ?? join(dataDir, "backups", `${basename(SQLITE_FILE, ".db")}-${stamp}.db`));
      try {
        await db.backup(target);
        process.stdout.write(`${target}\n`);
      } catch (err) {
        if (err instanceof BackupUnsupportedError) {
          process.stderr.write(`maskwatch: ${err.message}\n`);
          process.exitCode = 2;
          return;
        }
        throw err;
      } finally {
        await db.close();
      }
      // Snapshots are in the database now; those of older events are files: say where, so they are copied too.
      process.stderr.write(
        `snapshots of events from before they moved into the database are files under ${join(dirname(join(dataDir, SQLITE_FILE)), "snapshots")}\n`,
      );
    });

  program
    .command("prune")
    .description("delete events (and their snapshots) older than N days")
    .requiredOption("--days <n>", "keep this many days", (v) => {
      const n = Number(v);
      if (!(Number.isInteger(n) && n > 0)) throw new Error("--days must be a whole number above 0");
      return n;
    })
    .action(async (opts: { days: number }) => {
      const dataDir = resolve(process.env.MASKWATCH_DATA_DIR || "data");
      const db = await openDatabase({ url: process.env.DATABASE_URL, dataDir });
      try {
        const r = await pruneEvents(db, dataDir, opts.days);
        process.stdout.write(
          `deleted ${r.deleted} events (with their snapshots; ${r.files} snapshot files) before ${new Date(r.before).toISOString()}\n`,
        );
      } finally {
        await db.close();
      }
    });
}
