import type { FastifyInstance } from "fastify";
import { createKey, listKeys, revokeKey } from "../../store/api-keys.ts";
import { requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";

/** API keys for an admin: created (the key is shown once), listed, revoked. */
export async function keyRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  app.post<{ Body: { name: string; scopes?: string[] } }>(
    "/api/v1/keys",
    {
      config: { audit: "key.create" },
      schema: {
        summary: "Create an API key (the key is in this answer only)",
        tags: ["keys"],
        body: {
          type: "object",
          required: ["name"],
          properties: {
            name: { type: "string", minLength: 1, maxLength: 100 },
            scopes: {
              type: "array",
              items: { type: "string", enum: ["detect", "events:read", "admin"] },
              minItems: 1,
            },
          },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      requireScope(request, "admin", ctx.config.auth);
      const created = await createKey(ctx.db, {
        name: request.body.name,
        scopes: request.body.scopes ?? ["detect"],
      });
      reply.status(201);
      return created;
    },
  );

  app.get(
    "/api/v1/keys",
    { schema: { summary: "List API keys (never the keys themselves)", tags: ["keys"] } },
    async (request) => {
      requireScope(request, "admin", ctx.config.auth);
      return { keys: await listKeys(ctx.db) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/api/v1/keys/:id",
    { config: { audit: "key.revoke" }, schema: { summary: "Revoke an API key", tags: ["keys"] } },
    async (request) => {
      requireScope(request, "admin", ctx.config.auth);
      try {
        await revokeKey(ctx.db, request.params.id);
      } catch (err) {
        throw new HttpError(404, "not_found", (err as Error).message);
      }
      return { status: "ok" };
    },
  );
}
