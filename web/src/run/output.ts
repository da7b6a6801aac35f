// Output of one run, capped: the first KEEP_BYTES (UTF-8) are kept, the rest only counted.
// Pure (no DOM): used by the sandbox worker (so a flood never crosses the frame) and by
// the page.

export type Stream = "stdout" | "stderr";

export interface Chunk {
  stream: Stream;
  text: string;
}

export const KEEP_BYTES = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function utf8Length(text: string): number {
  // Fast path: ASCII-only text has as many bytes as UTF-16 units.
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(text) ? text.length : encoder.encode(text).length;
}

/** The longest prefix of `text` that fits in `bytes` UTF-8 bytes (never half a character). */
export function utf8Prefix(text: string, bytes: number): string {
  if (bytes <= 0) return "";
  if (utf8Length(text) <= bytes) return text;
  const cut = decoder.decode(encoder.encode(text).subarray(0, bytes));
  // A cut inside a character decodes to U+FFFD at the end: drop it.
  return cut.endsWith("\ufffd") && !text.startsWith(cut) ? cut.slice(0, -1) : cut;
}

export class OutputBuffer {
  readonly chunks: Chunk[] = [];
  keptBytes = 0;
  droppedBytes = 0;

  constructor(readonly limit = KEEP_BYTES) {}

  /** Add output; returns what was kept of it (null when nothing was). Consecutive text
   * of the same stream is merged into one chunk. */
  push(stream: Stream, text: string): Chunk | null {
    if (!text) return null;
    const size = utf8Length(text);
    const room = this.limit - this.keptBytes;
    let kept = text;
    if (size > room) {
      kept = utf8Prefix(text, room);
      this.droppedBytes += size - utf8Length(kept);
      if (!kept) return null;
    }
    this.keptBytes += utf8Length(kept);
    const last = this.chunks[this.chunks.length - 1];
    if (last && last.stream === stream) last.text += kept;
    else this.chunks.push({ stream, text: kept });
    return { stream, text: kept };
  }

  /** Count output that was dropped elsewhere (by the worker's own cap). */
  drop(bytes: number): void {
    if (bytes > 0) this.droppedBytes += bytes;
  }

  get full(): boolean {
    return this.keptBytes >= this.limit;
  }

  text(): string {
    return this.chunks.map((c) => c.text).join("");
  }
}
