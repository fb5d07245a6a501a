import { randomInt } from "node:crypto";
import type { Database } from "../store/db.ts";
import { deleteSetting, getSetting, setSetting } from "../store/settings.ts";
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
  // One code for every replica: the first to start stores it, the others log the same one.
  const stored = await getSetting<string>(db, SETUP_CODE_KEY);
  if (typeof stored === "string") return { setupCode: stored };
  const code = Array.from({ length: 8 }, () => ALPHABET[randomInt(ALPHABET.length)]).join("");
  await setSetting(db, SETUP_CODE_KEY, `${code.slice(0, 4)}-${code.slice(4)}`);
  return { setupCode: (await getSetting<string>(db, SETUP_CODE_KEY))! };
}

const SETUP_CODE_KEY = "console.setup_code";

/** The setup code while the first admin is still to be made (any replica may be asked). */
export async function currentSetupCode(db: Database): Promise<string | undefined> {
  if ((await countUsers(db)) > 0) return undefined;
  const code = await getSetting<string>(db, SETUP_CODE_KEY);
  return typeof code === "string" ? code : undefined;
}

/** The code is spent once the admin exists. */
export async function spendSetupCode(db: Database): Promise<void> {
  await deleteSetting(db, SETUP_CODE_KEY);
}
