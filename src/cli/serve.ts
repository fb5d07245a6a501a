import type { Command } from "commander";
import { ConfigError, describeConfig, loadConfig } from "../server/config.ts";

export function registerServeCommands(program: Command): void {
  program
    .command("serve")
    .description("serve the API on PORT (default 8080); configured by environment and .env")
    .action(async () => {
      const config = loadOrExit();
      // The server (and through its workers, the runtime) loads only for this command.
      const { startServer } = await import("../server/main.ts");
      const server = await startServer(config);
      const stop = (signal: string) => {
        server.app.log.info({ signal }, "shutting down: finishing requests in flight");
        // Requests in flight end by their deadline; whatever still hangs after it does not hold the exit.
        const graceMs = config.requestTimeoutMs + 10_000;
        setTimeout(() => {
          server.app.log.error({ graceMs }, "shutdown took too long: exiting anyway");
          process.exit(1);
        }, graceMs).unref();
        server.close().then(
          () => process.exit(0),
          (err) => {
            server.app.log.error({ err }, "shutdown failed");
            process.exit(1);
          },
        );
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });

  program
    .command("config")
    .description("print the effective configuration, secrets hidden")
    .action(() => {
      process.stdout.write(`${JSON.stringify(describeConfig(loadOrExit()), null, 2)}\n`);
    });
}

function loadOrExit() {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`maskwatch: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}
