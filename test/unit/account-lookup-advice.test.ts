// When a worker advises the index on lower(email), and the cost it states (dify/accounts.ts).
import { describe, expect, it } from 'vitest';
import { accountLookupAdvice, LOWER_EMAIL_INDEX_SQL } from '../../src/dify/accounts.js';

describe('the advice on a Dify with many accounts', () => {
  it('is given from 2,000 accounts without the index, with the scan cost measured per account (~0.4 µs)', () => {
    expect(accountLookupAdvice({ accounts: 1_999, indexed: false })).toBeUndefined();
    const at2k = accountLookupAdvice({ accounts: 2_000, indexed: false });
    expect(at2k).toContain(LOWER_EMAIL_INDEX_SQL);
    expect(at2k).toContain('about 0.8 ms of PostgreSQL CPU each at this size');
    expect(accountLookupAdvice({ accounts: 100_000, indexed: false })).toContain('about 40.0 ms of PostgreSQL CPU each');
  });

  it('is not given once the index is there, however large the table', () => {
    expect(accountLookupAdvice({ accounts: 1_000_000, indexed: true })).toBeUndefined();
  });
});
