import { randomInt } from "node:crypto";
import type { Database } from "../store/db.ts";
import { StoreError } from "../store/sources.ts";
import { countUsers, createUser } from "../store/users.ts";
import type { Config } from "./config.ts";

/** Letters and digits that cannot be mistaken for each other when read off a log. */
const ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/**
 * The console's first admin. With MASKWATCH_ADMIN_PASSWORD it is made now; otherwise, while there are no
 * users, a one-time setup code is returned (the caller logs it) that the setup screen asks for.
 */
export async function ensureAdmin(
  db: Database,
  config: Config,
): Promise<{ created?: string; setupCode?: string }> {
  if (!config.auth || (await countUsers(db)) > 0) return {};
  const { username, password } = config.admin;
  if (password) {
    try {
      await createUser(db, { username, password, role: "admin" });
    } catch (err) {
      // Another replica made it at the same moment.
      if (!(err instanceof StoreError && err.code === "conflict")) throw err;
    }
    return { created: username };
  }
  const code = Array.from({ length: 8 }, () => ALPHABET[randomInt(ALPHABET.length)]).join("");
  return { setupCode: `${code.slice(0, 4)}-${code.slice(4)}` };
}
