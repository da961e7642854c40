import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { hash64, KeyIndex } from '../../src/input/key-index.js';
import { openFilesNamed } from '../helpers/open-files.js';

const spills = () => readdirSync(tmpdir()).filter((f) => f.startsWith('dify-provision-keys-'));
const openSpills = () => openFilesNamed('dify-provision-keys-');

describe('the compact key index', () => {
  it('returns the first line of a key seen before, and nothing for a new one', () => {
    const index = new KeyIndex();
    expect(index.firstLine('a', 2)).toBeUndefined();
    expect(index.firstLine('b', 3)).toBeUndefined();
    expect(index.firstLine('a', 4)).toBe(2);
    expect(index.firstLine('a', 5)).toBe(2);
    expect(index.firstLine('Straße', 6)).toBeUndefined();
    expect(index.firstLine('Straße', 7)).toBe(6);
    expect(index.size).toBe(3);
    index.close();
  });

  it('keeps every key through many growths and its spill to a file, with no false duplicates among 300,000 keys', () => {
    const index = new KeyIndex();
    for (let i = 1; i <= 300_000; i++) expect(index.firstLine(`external:cust-${i}`, i + 1)).toBeUndefined();
    for (let i = 1; i <= 300_000; i += 997) expect(index.firstLine(`external:cust-${i}`, 999_999)).toBe(i + 1);
    expect(index.size).toBe(300_000);
    index.close();
  });

  it('never takes two keys with the same hash for one: every key collides, and each is still told apart', () => {
    // Every key has the same slot and fingerprint: only the exact comparison can tell them apart.
    const index = new KeyIndex(() => [7, 7]);
    const keys = Array.from({ length: 3000 }, (_, i) => `["owner${i % 7}@example.com","acme ${i}"]`);
    keys.forEach((k, i) => expect(index.firstLine(k, i + 2)).toBeUndefined());
    keys.forEach((k, i) => expect(index.firstLine(k, 99_999)).toBe(i + 2));
    expect(index.size).toBe(3000);
    index.close();
  });

  it('tells apart keys whose hashes differ only outside the slot bits and share a fingerprint, read back from its file', () => {
    // The real hash's slot, a fingerprint fixed to one value: candidates on every probe, keys past 1 MiB on disk.
    const index = new KeyIndex((bytes, end) => [hash64(bytes, end)[0], 1]);
    for (let i = 1; i <= 60_000; i++) expect(index.firstLine(`external:${'x'.repeat(20)}-${i}`, i)).toBeUndefined();
    for (let i = 1; i <= 60_000; i += 101) expect(index.firstLine(`external:${'x'.repeat(20)}-${i}`, 0)).toBe(i);
    index.close();
  });

  it('keeps its keys in a file that has no name from the start, and closes it', () => {
    const before = spills();
    const index = new KeyIndex();
    for (let i = 1; i <= 100_000; i++) index.firstLine(`external:a-long-enough-customer-key-${i}`, i);
    const open = openSpills();
    expect(open).toHaveLength(1);
    expect(open[0]).toMatch(/ \(deleted\)$/);
    expect(spills()).toEqual(before);
    index.close();
    expect(openSpills()).toEqual([]);
  });

  it('makes no file for a small input', () => {
    const index = new KeyIndex();
    for (let i = 1; i <= 5000; i++) index.firstLine(`external:cust-${i}`, i);
    expect(openSpills()).toEqual([]);
    index.close();
  });
});
