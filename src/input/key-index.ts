// Remembers which line first used each key, exactly, in 6 bytes of memory a slot. A hash table
// (open addressing, at most half full) holds a 16-bit fingerprint of each key and a reference to
// the key itself, written with its line to a KeySpill. A matching fingerprint is only a candidate:
// the key is read back and compared byte for byte, so two keys that share a hash are never taken
// for one. A million keys cost 12.6 MB of memory (the keys themselves go to an unlinked
// temporary file past 1 MiB); growing re-reads the keys in order instead of keeping their hashes.
import { closeSync, readSync, writeSync } from 'node:fs';
import { openScratchFile } from './scratch-file.js';

export type BytesHash = (bytes: Buffer, end: number) => [number, number];

/** cyrb53's mixing over the key's UTF-8 bytes, kept at two 32-bit halves (the slot, the fingerprint). */
export const hash64: BytesHash = (bytes, end) => {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < end; i++) {
    const c = bytes[i]!;
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return [h1 >>> 0, h2 >>> 0];
};

/** Records are 8-byte aligned, so a 32-bit reference reaches 32 GiB of keys. */
const ALIGN = 8;
const HEADER = 8; // the line (u32) and the key's length in bytes (u32)
/** Keys stay in memory up to this size; past it they go to the file (small inputs make none). */
const IN_MEMORY = 1 << 20;
const WRITE_BUFFER = 256 << 10;

/**
 * Keys with their lines, appended in order and read back by reference (never 0). Up to 1 MiB they
 * stay in memory; past that they go to a temporary file that is unlinked as soon as it is created
 * (nothing is left behind, whatever happens to the process) and closed by `close()`.
 */
class KeySpill {
  private buf = Buffer.allocUnsafe(64 << 10);
  private used = 0;
  /** Bytes in the file, all before `buf`'s first byte. */
  private flushed = 0;
  private fd: number | undefined;
  private largest = 0;

  append(key: Buffer, n: number, line: number): number {
    const size = Math.ceil((HEADER + n) / ALIGN) * ALIGN;
    if (this.used + size > this.buf.length) this.makeRoom(size);
    this.largest = Math.max(this.largest, size);
    const at = this.flushed + this.used;
    this.buf.writeUInt32LE(line, this.used);
    this.buf.writeUInt32LE(n, this.used + 4);
    key.copy(this.buf, this.used + HEADER, 0, n);
    this.used += size;
    const ref = at / ALIGN + 1;
    if (ref > 0xffffffff) throw new RangeError('too many keys in one input (over 32 GiB of them)');
    return ref;
  }

  /** The line recorded at `ref` if its key is `key[0, n)`, else undefined. */
  lineIf(ref: number, key: Buffer, n: number): number | undefined {
    const at = (ref - 1) * ALIGN;
    let record: Buffer;
    if (at >= this.flushed) {
      record = this.buf.subarray(at - this.flushed, at - this.flushed + HEADER + n);
    } else {
      record = Buffer.allocUnsafe(HEADER + n);
      readSync(this.fd!, record, 0, record.length, at);
    }
    if (record.readUInt32LE(4) !== n || record.compare(key, 0, n, HEADER, HEADER + n) !== 0) return undefined;
    return record.readUInt32LE(0);
  }

  /** Every key in order, with its reference (the file is read in large pieces). */
  *entries(): Generator<[ref: number, key: Buffer]> {
    const piece = Buffer.allocUnsafe(Math.max(WRITE_BUFFER, this.largest));
    let at = 0;
    while (at < this.flushed) {
      const len = readSync(this.fd!, piece, 0, Math.min(piece.length, this.flushed - at), at);
      let off = 0;
      while (off + HEADER <= len) {
        const size = Math.ceil((HEADER + piece.readUInt32LE(off + 4)) / ALIGN) * ALIGN;
        if (off + size > len) break;
        yield [(at + off) / ALIGN + 1, piece.subarray(off + HEADER, off + HEADER + piece.readUInt32LE(off + 4))];
        off += size;
      }
      at += off; // a record cut by the end of the piece is read again at the start of the next one
    }
    for (let off = 0; off < this.used;) {
      const n = this.buf.readUInt32LE(off + 4);
      yield [(this.flushed + off) / ALIGN + 1, this.buf.subarray(off + HEADER, off + HEADER + n)];
      off += Math.ceil((HEADER + n) / ALIGN) * ALIGN;
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private makeRoom(size: number): void {
    if (this.fd === undefined && this.used + size <= IN_MEMORY) {
      const bigger = Buffer.allocUnsafe(Math.min(IN_MEMORY, Math.max(this.buf.length * 2, this.used + size)));
      this.buf.copy(bigger, 0, 0, this.used);
      this.buf = bigger;
      return;
    }
    this.fd ??= openScratchFile('keys');
    for (let off = 0; off < this.used;) off += writeSync(this.fd, this.buf, off, this.used - off, this.flushed + off);
    this.flushed += this.used;
    this.used = 0;
    if (this.buf.length < Math.max(WRITE_BUFFER, size)) this.buf = Buffer.allocUnsafe(Math.max(WRITE_BUFFER, size));
  }
}

export class KeyIndex {
  private fps = new Uint16Array(1024);
  private refs = new Uint32Array(1024); // 0 = empty slot
  private count = 0;
  private readonly spill = new KeySpill();
  private scratch = Buffer.allocUnsafe(1024);

  /** `hash` is for tests (a constant one makes every key collide). */
  constructor(private readonly hash: BytesHash = hash64) {}

  get size(): number {
    return this.count;
  }

  /**
   * The line that recorded `key` first, recording `line` for it when it is new. Keys are compared
   * as UTF-8, so they must be well-formed (validated text is: a lone surrogate is refused).
   */
  firstLine(key: string, line: number): number | undefined {
    if (key.length * 3 > this.scratch.length) this.scratch = Buffer.allocUnsafe(key.length * 3);
    const n = this.scratch.write(key, 'utf8');
    const [a, b] = this.hash(this.scratch, n);
    const fp = b & 0xffff;
    const mask = this.refs.length - 1;
    let i = a & mask;
    for (; this.refs[i] !== 0; i = (i + 1) & mask) {
      if (this.fps[i] !== fp) continue;
      const seen = this.spill.lineIf(this.refs[i]!, this.scratch, n);
      if (seen !== undefined) return seen;
    }
    this.fps[i] = fp;
    this.refs[i] = this.spill.append(this.scratch, n, line);
    if (++this.count * 2 > this.refs.length) this.grow();
    return undefined;
  }

  /** Frees the temporary file (the index can't be used after). */
  close(): void {
    this.spill.close();
  }

  private grow(): void {
    const size = this.refs.length * 2;
    // The old table is dropped first: the new one is filled from the keys, not from it.
    this.fps = new Uint16Array(0);
    this.refs = new Uint32Array(0);
    const fps = new Uint16Array(size);
    const refs = new Uint32Array(size);
    const mask = size - 1;
    for (const [ref, key] of this.spill.entries()) {
      const [a, b] = this.hash(key, key.length);
      let i = a & mask;
      while (refs[i] !== 0) i = (i + 1) & mask;
      fps[i] = b & 0xffff;
      refs[i] = ref;
    }
    this.fps = fps;
    this.refs = refs;
  }
}
