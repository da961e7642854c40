import { describe, expect, it } from 'vitest';
import { KeyIndex } from '../../src/csv/key-index.js';

describe('the compact key index', () => {
  it('returns the first line of a key seen before, and nothing for a new one', () => {
    const index = new KeyIndex();
    expect(index.firstLine('a', 2)).toBeUndefined();
    expect(index.firstLine('b', 3)).toBeUndefined();
    expect(index.firstLine('a', 4)).toBe(2);
    expect(index.firstLine('a', 5)).toBe(2);
    expect(index.size).toBe(2);
  });

  it('keeps every key through many growths, with no false duplicates among 300,000 keys', () => {
    const index = new KeyIndex();
    for (let i = 1; i <= 300_000; i++) expect(index.firstLine(`external:cust-${i}`, i + 1)).toBeUndefined();
    for (let i = 1; i <= 300_000; i += 997) expect(index.firstLine(`external:cust-${i}`, 999_999)).toBe(i + 1);
    expect(index.size).toBe(300_000);
  });
});
