// The plan's row list (what the console shows): the first rows read, each with its verdict, in
// line order, however the valid rows are chunked behind the rejected ones.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRows } from '../../src/input/read-rows.js';
import { probeDifySchema } from '../../src/dify/schema-probe.js';
import { planBatch } from '../../src/ingest/plan.js';
import { csvOf } from '../helpers/batch.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

let env: TestEnv;
beforeAll(async () => {
  env = await createTestEnv({ accounts: 5 });
});
afterAll(async () => env?.cleanup());

const CSV = csvOf([
  { workspace_name: 'One', owner_email: 'owner1@example.com' }, // line 2
  { workspace_name: '', owner_email: 'owner2@example.com' }, // line 3: rejected, no name
  { workspace_name: 'Three', owner_email: 'owner3@example.com' },
  { workspace_name: 'Ghost', owner_email: 'ghost@example.com' }, // line 5: no such account
  { workspace_name: 'Bad', owner_email: 'not-an-email' }, // line 6: rejected
  { workspace_name: 'Seven', owner_email: 'owner4@example.com' },
]);

async function plan(listRows?: number) {
  const accounts = { normalized: (await probeDifySchema(env.db)).normalizedEmail };
  return planBatch(readRows(Readable.from([CSV])), env.db, { accounts, chunkSize: 2, ...(listRows ? { listRows } : {}) });
}

describe('the plan, row by row', () => {
  it('lists every row with its verdict, in line order, when asked', async () => {
    const p = await plan(100);
    expect(p.rows!.map((r) => `${r.line}:${r.verdict}:${r.workspaceName}:${r.ownerEmail}`)).toEqual([
      '2:would_create:One:owner1@example.com',
      '3:rejected::owner2@example.com',
      '4:would_create:Three:owner3@example.com',
      '5:would_fail:Ghost:ghost@example.com',
      '6:rejected:Bad:not-an-email',
      '7:would_create:Seven:owner4@example.com',
    ]);
    expect(p).toMatchObject({ total: 6, wouldCreate: 3, rejected: 2, wouldFail: 1 });
  });

  it('lists only the first rows read (their verdicts come a chunk later), and no list unless asked', async () => {
    expect((await plan(3)).rows!.map((r) => `${r.line}:${r.verdict}`)).toEqual(['2:would_create', '3:rejected', '4:would_create']);
    expect((await plan(5)).rows!.map((r) => r.line)).toEqual([2, 3, 4, 5, 6]);
    const all = await plan();
    expect(all.rows).toBeUndefined(); // the CLI's dry run and the library's plan do not carry it
    expect(all.problems.map((x) => x.line)).toEqual([3, 5, 6]);
  });
});
