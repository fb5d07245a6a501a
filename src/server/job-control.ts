import type { FastifyReply } from "fastify";
import type { JobControl } from "../vision/pool.ts";

/**
 * The inference deadline of a request (MASKWATCH_REQUEST_TIMEOUT_MS) and a signal that fires when its
 * client goes away before the answer is sent, so the pool drops or stops the work nobody waits for.
 */
export function requestControl(reply: FastifyReply, timeoutMs: number): JobControl {
  const controller = new AbortController();
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return { timeoutMs, signal: controller.signal };
}
