// Remembers which line first used each key, in 12 bytes a key (two 32-bit hash halves and a
// line, open addressing), so that a million-row file costs tens of megabytes, not hundreds.
// Two different keys share a 64-bit hash with odds of ~3·10⁻⁸ in a million-row file; the
// worst that does is reject a row as a duplicate, naming the line it collided with.

function hash64(s: string): [number, number] {
  // cyrb53's mixing, kept at two full 32-bit halves.
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return [h1 >>> 0, h2 >>> 0];
}

export class KeyIndex {
  private hi = new Uint32Array(1024);
  private lo = new Uint32Array(1024);
  private lines = new Uint32Array(1024); // 0 = empty slot (lines start at 1)
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** The line that recorded `key` first, recording `line` for it when it is new. */
  firstLine(key: string, line: number): number | undefined {
    const [a, b] = hash64(key);
    const slot = this.find(a, b);
    const seen = this.lines[slot]!;
    if (seen !== 0) return seen;
    this.hi[slot] = a;
    this.lo[slot] = b;
    this.lines[slot] = line;
    if (++this.count * 2 > this.lines.length) this.grow();
    return undefined;
  }

  private find(a: number, b: number): number {
    const mask = this.lines.length - 1;
    let i = (a ^ Math.imul(b, 0x9e3779b1)) & mask;
    while (this.lines[i] !== 0 && (this.hi[i] !== a || this.lo[i] !== b)) i = (i + 1) & mask;
    return i;
  }

  private grow(): void {
    const { hi, lo, lines } = this;
    this.hi = new Uint32Array(lines.length * 2);
    this.lo = new Uint32Array(lines.length * 2);
    this.lines = new Uint32Array(lines.length * 2);
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] === 0) continue;
      const slot = this.find(hi[i]!, lo[i]!);
      this.hi[slot] = hi[i]!;
      this.lo[slot] = lo[i]!;
      this.lines[slot] = lines[i]!;
    }
  }
}
