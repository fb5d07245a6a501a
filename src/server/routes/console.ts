import { existsSync } from "node:fs";
import { stat } from "node:fs/promises";
import { join, normalize } from "node:path";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance, FastifyReply } from "fastify";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";

/** Paths that are the API's, never the console's: an unknown one is a JSON 404. */
const API_PATHS =
  /^\/(api|detect|video_feed|start_detection|stop_detection|reset_stats|get_stats|docs)(\/|$)/;

/**
 * The console (web/dist, built at install): its files, and index.html for every other page path so the
 * browser's router can take it (/live, /violations, …). Fingerprinted assets are cached for a year.
 */
export async function consoleRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const root = ctx.config.webDir;
  const built = existsSync(join(root, "index.html"));
  if (built) await app.register(fastifyStatic, { root, serve: false });

  const page = (reply: FastifyReply) => {
    reply.header("cache-control", "no-cache");
    if (built) return reply.sendFile("index.html", { cacheControl: false });
    reply.status(503).type("text/html; charset=utf-8");
    return "<!doctype html><title>Maskwatch</title><p>The console is not built: run <code>npm run build:web</code>.</p>";
  };

  app.get<{ Params: { "*": string } }>(
    "/*",
    { config: { public: true }, schema: { hide: true } },
    async (request, reply) => {
      const path = `/${request.params["*"]}`;
      if (API_PATHS.test(path)) throw new HttpError(404, "not_found", `no route GET ${path}`);
      const rel = normalize(path).replace(/^(\.\.[/\\])+/, "");
      if (built && rel !== "/" && (await isFile(join(root, rel)))) {
        reply.header(
          "cache-control",
          rel.startsWith("/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
        );
        return reply.sendFile(rel.slice(1), { cacheControl: false });
      }
      const accept = request.headers.accept ?? "";
      if (path !== "/" && !accept.includes("text/html"))
        throw new HttpError(404, "not_found", `no route GET ${path}`);
      return page(reply);
    },
  );
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}
