// The registry's judgement: which other servers of one identity are a second live server (a
// physical copy), which may be this one before a restart, and which are gone.
import { describe, expect, it } from 'vitest';
import { judge, type ServerEntry } from '../../src/queue/server-watch.js';
import type { ServerView } from '../../src/store/server.js';

const s = (seconds: number) => String(seconds * 1_000_000);
const self: ServerView = { lineage: 'a', since: new Date(0), started: s(100), seen: s(200), instance: 'i', chain: ['a'] };
const entry = (e: Partial<ServerEntry>): ServerEntry => ({
  lineage: 'b',
  since: new Date(0).toISOString(),
  started: s(10),
  seen: s(150),
  instance: 'i',
  database: 'dify',
  host: 'h',
  at: 1_000_000,
  ...e,
});
const now = 1_000_000;

describe('judge', () => {
  it('is open with no other server, or only ones gone, or of another identity', () => {
    expect(judge(self, [], now, 30_000).gate).toBe('open');
    expect(judge(self, [entry({ at: now - 31_000 })], now, 30_000).gate).toBe('open');
    expect(judge(self, [entry({ instance: 'j' })], now, 30_000).gate).toBe('open');
  });

  it('is a conflict when each server answered after the other started', () => {
    const other = entry({ started: s(10), seen: s(150) }); // seen at 150, after this one started at 100
    expect(judge(self, [other], now, 30_000)).toEqual({ gate: 'conflict', others: [other] });
  });

  it('waits for a live server last seen before this one started (a restart, or a copy not seen since)', () => {
    const before = entry({ lineage: 'a', started: s(10), seen: s(90) });
    expect(judge(self, [before], now, 30_000).gate).toBe('waiting');
    // ...unless this process itself was connected to it before the restart.
    expect(judge(self, [before], now, 30_000, new Set([`a@${s(10)}`])).gate).toBe('open');
  });
});
