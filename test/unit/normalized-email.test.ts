// Dify's normalised email, case for case from Dify's own tests (helpers/dify-email-cases.ts).
import { describe, expect, it } from 'vitest';
import { normalizedEmail } from '../../src/input/same-customer.js';
import { difyNormalizedEmail } from '../../src/dify/normalized-email.js';
import { DIFY_CASES } from '../helpers/dify-email-cases.js';

describe("Dify's normalised email", () => {
  it.each(DIFY_CASES)('%s → %s', (email, want) => {
    expect(difyNormalizedEmail(email)).toBe(want);
  });

  it.each(['u.ser+tag@gmail.com', 'u.ser+tag@outlook.com', 'u.ser+tag@mac.com', 'u.ser_name-tag+other@proton.me'])(
    'is idempotent for %s',
    (email) => {
      const once = difyNormalizedEmail(email);
      expect(difyNormalizedEmail(once)).toBe(once);
    },
  );

  it('keeps dots apart where Dify does (Microsoft, Apple) and not where it does not (Gmail)', () => {
    expect(difyNormalizedEmail('first.last@outlook.com')).not.toBe(difyNormalizedEmail('firstlast@outlook.com'));
    expect(difyNormalizedEmail('first.last@me.com')).not.toBe(difyNormalizedEmail('firstlast@me.com'));
    expect(difyNormalizedEmail('john.doe+x@gmail.com')).toBe(difyNormalizedEmail('johndoe@gmail.com'));
  });

  it('is what "the same owner" means for rows, after NFC and trimming', () => {
    expect(normalizedEmail('  John.Doe+x@GMAIL.com ')).toBe('johndoe@gmail.com');
    expect(normalizedEmail('Jose\u0301@Example.com')).toBe('jos\u00e9@example.com');
    expect(normalizedEmail('first.last+a@me.com')).toBe(normalizedEmail('FIRST.LAST@icloud.com'));
  });
});
