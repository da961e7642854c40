// Dify's accounts are found by lower(email), which Dify's own index on email cannot serve: on a
// large Dify every look-up scanned the whole table (BENCHMARKS.md: ~38 ms of PostgreSQL CPU a
// workspace at 100,000 accounts). We never alter Dify's tables; a worker says so at start, with the
// index an operator may add, and that index does serve our look-up.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import {
  accountCandidates,
  accountLookupAdvice,
  accountLookupCost,
  LARGE_ACCOUNTS,
  LOWER_EMAIL_INDEX_SQL,
} from '../../src/dify/accounts.js';
import { runWorker } from '../../src/worker/run-worker.js';
import type { TestEnv } from '../helpers/test-env.js';
import { freshEnvEachTest } from '../helpers/world.js';

let env: TestEnv;
freshEnvEachTest((e) => (env = e));

/** What a worker logs at start, at warn and above. */
async function startupWarnings(): Promise<string[]> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const w = await runWorker(env.config, { concurrency: 1, sweep: false, logger: pino({ level: 'warn' }, sink) });
  await w.close();
  return lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
}

async function addAccounts(n: number): Promise<void> {
  await env.db.query(
    `INSERT INTO accounts (name, email, status) SELECT 'User ' || i, 'user' || i || '@many.example', 'active' FROM generate_series(1, $1::int) i`,
    [n],
  );
  await env.db.query('ANALYZE accounts');
}

describe("the look-up of Dify's accounts on a large Dify", () => {
  it('a small Dify: nothing to say', async () => {
    await env.db.query('ANALYZE accounts');
    expect(accountLookupAdvice(await accountLookupCost(env.db))).toBeUndefined();
    expect((await startupWarnings()).join('\n')).not.toContain('lower(email)');
  });

  it('a large Dify without an index on lower(email): the worker warns at start, naming the index; with it, nothing is said and our look-up uses it', async () => {
    await addAccounts(LARGE_ACCOUNTS + 2_000);
    const cost = await accountLookupCost(env.db);
    expect(cost).toMatchObject({ indexed: false });
    expect(cost.accounts).toBeGreaterThanOrEqual(LARGE_ACCOUNTS);
    const warned = (await startupWarnings()).find((m) => m.includes('no index on lower(email)'));
    expect(warned).toContain(LOWER_EMAIL_INDEX_SQL);
    // With the cost it estimates for this size (~0.4 µs an account).
    expect(warned).toMatch(/about \d+\.\d ms of PostgreSQL CPU each at this size/);

    // Our look-up scans the table without it...
    const { where, params } = accountCandidates(['User7@many.example'], { normalized: false }, 1);
    const plan = async () =>
      (await env.db.query(`EXPLAIN SELECT a.id FROM accounts a WHERE ${where}`, params)).rows.map((r) => r['QUERY PLAN']).join('\n');
    expect(await plan()).toMatch(/Seq Scan on accounts/);

    // ...and the advised index serves it (CONCURRENTLY: Dify keeps running while it is built).
    await env.db.query(LOWER_EMAIL_INDEX_SQL);
    await env.db.query('ANALYZE accounts');
    expect(await accountLookupCost(env.db)).toMatchObject({ indexed: true });
    expect(await plan()).toMatch(/dify_provision_accounts_lower_email/);
    expect((await startupWarnings()).join('\n')).not.toContain('lower(email)');
  });

  it('a partial or invalid index on lower(email) does not count', async () => {
    await addAccounts(LARGE_ACCOUNTS + 2_000);
    await env.db.query(`CREATE INDEX partial_lower_email ON accounts (lower(email)) WHERE status = 'banned'`);
    expect(await accountLookupCost(env.db)).toMatchObject({ indexed: false });
  });
});
