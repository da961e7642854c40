// The CLI's counts in words: one row, two rows (a new user's trial read "1 rows read", "1 changes").
import { describe, expect, it } from 'vitest';
import { counted } from '../../src/cli/rejections.js';

describe('counted', () => {
  it('is singular for one, plural otherwise (zero too)', () => {
    expect(counted(1, 'row')).toBe('1 row');
    expect(counted(1, 'change')).toBe('1 change');
    expect(counted(0, 'row')).toBe('0 rows');
    expect(counted(2, 'change')).toBe('2 changes');
  });
});
