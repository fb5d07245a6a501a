import { Readable } from "node:stream";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { ServerContext } from "./context.ts";

const FORWARDED = "x-maskwatch-forwarded";

/**
 * Annotated MJPEG of a source. Only the replica running a source draws its frames: any other one
 * relays the stream from it (its address is in the source's lease), passing the caller's credentials
 * on so the running replica checks them itself.
 */
export async function sendMjpeg(
  ctx: ServerContext,
  id: string,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<void> {
  const monitor = await ctx.streams.monitorOf(id);
  const holder =
    ctx.cluster && !monitor.running && !request.headers[FORWARDED]
      ? await ctx.cluster.leases.holder(id)
      : null;
  if (holder?.address && holder.replica !== ctx.cluster?.replicaId) {
    const abort = new AbortController();
    const headers: Record<string, string> = { [FORWARDED]: ctx.cluster!.replicaId };
    for (const name of ["cookie", "x-api-key"] as const) {
      const v = request.headers[name];
      if (typeof v === "string") headers[name] = v;
    }
    const query = new URL(request.url, "http://x").search;
    const upstream = await fetch(`${holder.address}/api/v1/sources/${encodeURIComponent(id)}/mjpeg${query}`, {
      headers,
      signal: abort.signal,
    }).catch(() => undefined);
    if (upstream?.ok && upstream.body) {
      reply.hijack();
      reply.raw.writeHead(200, {
        "content-type": upstream.headers.get("content-type") ?? "multipart/x-mixed-replace; boundary=frame",
        "cache-control": "no-cache, no-store",
        "x-maskwatch-replica": holder.replica,
      });
      const body = Readable.fromWeb(upstream.body as import("node:stream/web").ReadableStream);
      body.on("error", () => reply.raw.end());
      reply.raw.on("close", () => abort.abort());
      body.pipe(reply.raw);
      return;
    }
    abort.abort();
  }
  reply.hijack();
  monitor.mjpeg.add(reply.raw);
}
