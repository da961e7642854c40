import { describe, expect, it } from 'vitest';
import { generateToken, maskToken } from '../../src/dify/api-keys.js';
import { spreadsheetSafe } from '../../src/report/format.js';

describe("Dify's API key format", () => {
  it('is the prefix and 24 characters of [A-Za-z0-9], every character reachable', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const t = generateToken();
      expect(t).toMatch(/^dataset-[A-Za-z0-9]{24}$/);
      for (const c of t.slice(8)) seen.add(c);
    }
    expect(seen.size).toBe(62);
    expect(generateToken('app-')).toMatch(/^app-[A-Za-z0-9]{24}$/);
  });

  it("masks like Dify's console: first 5 + ... + last 4, and *** for 8 characters or fewer", () => {
    expect(maskToken('dataset-abcdefghijklmnopqrstuvwx')).toBe('datas...uvwx');
    expect(maskToken('12345678')).toBe('***');
    expect(maskToken('123456789')).toBe('12345...6789');
  });
});

describe('spreadsheet-safe cells (OWASP CSV injection)', () => {
  it.each([
    ['=SUM(A1)', "'=SUM(A1)"],
    ['+1', "'+1"],
    ['-1', "'-1"],
    ['@cmd', "'@cmd"],
    ['\tx', "'\tx"],
    [' =1+1', "' =1+1"],
    ['\u00a0=1+1', "'\u00a0=1+1"],
    ['\n=1+1', "'\n=1+1"],
    ['\r=1+1', "'\r=1+1"],
    ['\rplain', "'\rplain"],
    ['\r', "'\r"],
    ['\r\n @x', "'\r\n @x"],
    ['\u3000\u200b-1', "'\u3000\u200b-1"],
    ['\uff1dSUM(A1)', "'\uff1dSUM(A1)"],
    // Every format character (category Cf) before the sign, and the small equals sign.
    ['\u2060=1+1', "'\u2060=1+1"],
    ['\u200c=1+1', "'\u200c=1+1"],
    ['\u00ad=1+1', "'\u00ad=1+1"],
    ['\u200e\u202e@x', "'\u200e\u202e@x"],
    ['\ufe66SUM(A1)', "'\ufe66SUM(A1)"],
    ['\u2060\ufe66SUM(A1)', "'\u2060\ufe66SUM(A1)"],
    ['\u2060Acme', '\u2060Acme'],
    ['\nplain', "'\nplain"],
    [' Acme', ' Acme'],
    ['Acme', 'Acme'],
    ['a=b', 'a=b'],
  ])('%j becomes %j', (input, output) => expect(spreadsheetSafe(input)).toBe(output));
});
