/**
 * Works around a stall in @fastify/busboy 3.2 (the multipart parser under @fastify/multipart): a part it
 * skips (no Content-Disposition, say) and that is larger than the stream buffer ends inside one write,
 * leaving the parser paused with no part left to resume it, so the request is never answered. Pausing
 * holds back the part being received; once a write leaves no part open (every part so far has all its
 * data), the write is released.
 */
import { createRequire } from "node:module";

interface DicerLike {
  _pause: boolean;
  _part: unknown;
  _unpause(): void;
  _write(data: Buffer, encoding: string, cb: (err?: Error) => void): void;
}

const fromMultipart = createRequire(createRequire(import.meta.url).resolve("@fastify/multipart"));
const Dicer = fromMultipart("@fastify/busboy/deps/dicer/lib/Dicer.js") as { prototype: DicerLike };
const PATCHED = Symbol.for("maskwatch.dicer-unpause");

const proto = Dicer.prototype as DicerLike & { [PATCHED]?: true };
if (!proto[PATCHED]) {
  const write = proto._write;
  proto._write = function (this: DicerLike, data, encoding, cb) {
    write.call(this, data, encoding, cb);
    if (this._pause && this._part === undefined) this._unpause();
  };
  proto[PATCHED] = true;
}
