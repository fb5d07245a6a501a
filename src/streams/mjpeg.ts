/**
 * MJPEG out: `multipart/x-mixed-replace` as browsers show it in an <img>, the format of the old
 * app's /video_feed. Slow viewers skip frames instead of buffering them.
 */
import type { ServerResponse } from "node:http";

export const MJPEG_BOUNDARY = "frame";
export const MJPEG_CONTENT_TYPE = `multipart/x-mixed-replace; boundary=${MJPEG_BOUNDARY}`;

/** One part of the stream: boundary, headers, the JPEG. */
export function mjpegPart(jpeg: Uint8Array): Buffer {
  const head = `--${MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head), jpeg, Buffer.from("\r\n")]);
}

export class MjpegHub {
  private readonly viewers = new Set<ServerResponse>();
  private last: Buffer | undefined;

  get size(): number {
    return this.viewers.size;
  }

  /** Starts streaming to `res` (headers written here); the latest frame goes out at once. */
  add(res: ServerResponse): void {
    res.writeHead(200, {
      "Content-Type": MJPEG_CONTENT_TYPE,
      "Cache-Control": "no-cache, no-store, must-revalidate",
      Pragma: "no-cache",
      Connection: "close",
      // nginx must not buffer a never-ending response.
      "X-Accel-Buffering": "no",
    });
    res.flushHeaders(); // the client sees the stream open before the first frame
    this.viewers.add(res);
    const drop = () => this.viewers.delete(res);
    res.on("close", drop);
    res.on("error", drop);
    if (this.last) res.write(this.last);
  }

  publish(jpeg: Uint8Array): void {
    const part = mjpegPart(jpeg);
    this.last = part;
    for (const res of this.viewers) {
      // More than about two frames still queued: this viewer is slow, skip this one.
      if (res.writableLength > 2 * part.length) continue;
      res.write(part);
    }
  }

  /** Ends every viewer's response (the source stopped or the server is closing). */
  closeAll(): void {
    for (const res of this.viewers) res.end();
    this.viewers.clear();
    this.last = undefined;
  }
}
