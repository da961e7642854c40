// The registry's judgement: which other servers of one identity are a second live server (a
// physical copy), which may be this one before a restart, and which are gone.
import { describe, expect, it } from 'vitest';
import { conflictMessage, judge, type ServerEntry } from '../../src/queue/server-watch.js';
import type { ServerView } from '../../src/store/server.js';

const s = (seconds: number) => String(seconds * 1_000_000);
const self: ServerView = { lineage: 'a', since: new Date(0), started: s(100), seen: s(200), instance: 'i', chain: ['a'], known: ['a'] };
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
    expect(judge(self, [other], now, 30_000)).toEqual({ gate: 'conflict', others: [other], copies: [] });
  });

  it('waits for a live server last seen before this one started (a restart, or a copy not seen since)', () => {
    const before = entry({ lineage: 'a', started: s(10), seen: s(90) });
    expect(judge(self, [before], now, 30_000).gate).toBe('waiting');
    // ...unless this process itself was connected to it before the restart.
    expect(judge(self, [before], now, 30_000, new Set([`a@${s(10)}`])).gate).toBe('open');
  });

  describe('a physical copy: the server whose database had the other lineage first is the copy', () => {
    // Production (lineage a, its database had p before) and a pg_basebackup copy of it, whose
    // database had a and p when it minted its own lineage c; each answered after the other started.
    const production: ServerView = { ...self, lineage: 'a', known: ['a', 'p'] };
    const copy: ServerView = { ...self, lineage: 'c', since: new Date(5_000), chain: ['c'], known: ['c', 'a', 'p'] };
    const entryOf = (v: ServerView) => entry({ lineage: v.lineage, known: v.known, since: v.since.toISOString() });

    it('keeps the original open, naming the copy, and closes the copy, naming the command for it', () => {
      const seenByProduction = entryOf(copy);
      expect(judge(production, [seenByProduction], now, 30_000)).toEqual({ gate: 'open', others: [], copies: [seenByProduction] });
      // ...also before the copy answered after production started: a copy is never a reason to wait.
      expect(judge(production, [{ ...seenByProduction, seen: s(90) }], now, 30_000).gate).toBe('open');

      const seenByCopy = entryOf(production);
      expect(judge(copy, [seenByCopy], now, 30_000)).toEqual({ gate: 'conflict', others: [seenByCopy], copies: [] });
      const message = conflictMessage('q', 'dify', copy, [seenByCopy]);
      expect(message).toMatch(/^physical copy: this PostgreSQL server \(lineage c .*is a copy of the live server .*lineage a /);
      expect(message).toContain('On this server (the copy), not on the original, run `dify-provision identity --new`');
    });

    it('a standby that took over (a process of ours saw the failover: a is its recorded predecessor) waits for the old entry to age out, never calling itself a copy', () => {
      const promoted: ServerView = { ...copy, chain: ['c', 'a'] };
      const old = entryOf(production);
      expect(judge(promoted, [old], now, 30_000)).toEqual({ gate: 'waiting', others: [old], copies: [] });
      expect(judge(promoted, [{ ...old, at: now - 30_001 }], now, 30_000).gate).toBe('open');
    });

    it('holds both when nobody can tell: one lineage, each lineage new to the other, or an entry that says nothing', () => {
      // The original crashed after the copy was made, with no process of ours connected: its new
      // lineage b is as new to the copy as the copy's c is to it.
      const crashed: ServerView = { ...production, lineage: 'b', chain: ['b'], known: ['b', 'a', 'p'] };
      expect(judge(crashed, [entryOf(copy)], now, 30_000).gate).toBe('conflict');
      expect(judge(copy, [entryOf(crashed)], now, 30_000).gate).toBe('conflict');
      expect(conflictMessage('q', 'dify', copy, [entryOf(crashed)])).toMatch(/^identity conflict: .*only you know which one is the copy/);
      // A copy of a stopped server carries its lineage.
      expect(
        judge(
          production,
          [entryOf(production)].map((e) => ({ ...e, started: s(5) })),
          now,
          30_000,
        ).gate,
      ).toBe('conflict');
      // An entry of an older version (no lineages listed) never makes this server the original.
      const { known: _, ...silent } = entryOf(copy);
      expect(judge(production, [silent], now, 30_000).gate).toBe('conflict');
    });
  });
});
