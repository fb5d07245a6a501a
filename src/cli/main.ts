import { Command, CommanderError } from "commander";
import { registerDataCommands } from "./data.ts";
import { registerDetectCommand } from "./detect.ts";
import { registerKeysCommand } from "./keys.ts";
import { registerModelsCommand } from "./models.ts";
import { registerServeCommands } from "./serve.ts";
import { registerUsersCommand } from "./users.ts";

const program = new Command("maskwatch")
  .description("Face and face-mask detection: engine, models and service")
  .showHelpAfterError()
  .exitOverride();

registerDetectCommand(program);
registerModelsCommand(program);
registerServeCommands(program);
registerKeysCommand(program);
registerDataCommands(program);
registerUsersCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exitCode = err.exitCode;
  else {
    process.stderr.write(`maskwatch: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
