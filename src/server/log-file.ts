import { createWriteStream, existsSync, renameSync, statSync, type WriteStream } from "node:fs";
import { Writable } from "node:stream";

/**
 * A log file that rotates by size: `file` → `file.1` → … → `file.<keep>` (the oldest dropped).
 * Lines are never split across files.
 */
export class RotatingFile extends Writable {
  private out: WriteStream;
  private size: number;

  constructor(
    private readonly file: string,
    private readonly maxBytes = 10 * 1024 * 1024,
    private readonly keep = 5,
  ) {
    super();
    this.size = existsSync(file) ? statSync(file).size : 0;
    this.out = createWriteStream(file, { flags: "a" });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.size > 0 && this.size + chunk.length > this.maxBytes) this.rotate();
    this.size += chunk.length;
    this.out.write(chunk, done);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.out.end(done);
  }

  private rotate(): void {
    this.out.end();
    for (let i = this.keep - 1; i >= 1; i--) {
      if (existsSync(`${this.file}.${i}`)) renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
    }
    renameSync(this.file, `${this.file}.1`);
    this.out = createWriteStream(this.file, { flags: "a" });
    this.size = 0;
  }
}

/** Writes every chunk to each stream (stdout and the log file). */
export function tee(...streams: Writable[]): Writable {
  return new Writable({
    write(chunk, _enc, done) {
      for (const s of streams) s.write(chunk);
      done();
    },
  });
}
