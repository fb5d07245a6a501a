/**
 * `maskwatch users …`: the console's users, from the same database as the server (for a locked-out admin,
 * or scripted set-up). Passwords come from MASKWATCH_PASSWORD or standard input, never the command line,
 * where other users of the machine could read them.
 *
 *   maskwatch users list
 *   maskwatch users add <name> [--role admin|viewer]      (password: MASKWATCH_PASSWORD or stdin)
 *   maskwatch users password <name>                       (ends the user's sessions)
 *   maskwatch users remove <name>
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import { type Database, openDatabase } from "../store/db.ts";
import { deleteUserSessions } from "../store/sessions.ts";
import { StoreError } from "../store/sources.ts";
import {
  countUsers,
  createUser,
  deleteUser,
  getUser,
  listUsers,
  setPassword,
  type UserRole,
} from "../store/users.ts";

async function withDb(fn: (db: Database) => Promise<void>): Promise<void> {
  const db = await openDatabase({
    url: process.env.DATABASE_URL,
    dataDir: resolve(process.env.MASKWATCH_DATA_DIR || "data"),
  });
  try {
    await fn(db);
  } catch (err) {
    if (!(err instanceof StoreError)) throw err;
    process.stderr.write(`maskwatch: ${err.message}\n`);
    process.exitCode = 1;
  } finally {
    await db.close();
  }
}

async function readPassword(): Promise<string> {
  if (process.env.MASKWATCH_PASSWORD) return process.env.MASKWATCH_PASSWORD;
  if (process.stdin.isTTY) process.stderr.write("password (then Enter, Ctrl-D): ");
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  return text.replace(/\r?\n$/, "");
}

export function registerUsersCommand(program: Command): void {
  const users = program.command("users").description("console users: list, add, password, remove");

  users
    .command("list")
    .description("every user with role and last sign-in")
    .action(() =>
      withDb(async (db) => {
        for (const u of await listUsers(db)) {
          const last = u.lastLoginAt ? new Date(u.lastLoginAt).toISOString() : "never signed in";
          process.stdout.write(`${u.username}\t${u.role}\t${last}\n`);
        }
      }),
    );

  users
    .command("add")
    .description("add a user (password from MASKWATCH_PASSWORD or standard input)")
    .argument("<name>")
    .option("--role <role>", "admin or viewer", "viewer")
    .action((name: string, opts: { role: string }) =>
      withDb(async (db) => {
        const user = await createUser(db, {
          username: name,
          password: await readPassword(),
          role: opts.role as UserRole,
        });
        process.stdout.write(`added ${user.username} (${user.role})\n`);
      }),
    );

  users
    .command("password")
    .description("set a user's password (from MASKWATCH_PASSWORD or standard input); their sessions end")
    .argument("<name>")
    .action((name: string) =>
      withDb(async (db) => {
        const user = await setPassword(db, name, await readPassword());
        const ended = await deleteUserSessions(db, user.id);
        process.stdout.write(`password of ${user.username} set; ${ended} sessions ended\n`);
      }),
    );

  users
    .command("remove")
    .description("remove a user (the last admin stays)")
    .argument("<name>")
    .action((name: string) =>
      withDb(async (db) => {
        const user = await getUser(db, name);
        if (!user) throw new StoreError("not_found", `no user "${name}"`);
        if (user.role === "admin" && (await countUsers(db, "admin")) <= 1)
          throw new StoreError("conflict", "the last admin cannot be removed");
        await deleteUser(db, user.id);
        process.stdout.write(`removed ${user.username}\n`);
      }),
    );
}
