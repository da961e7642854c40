// Issue 18, round 2 of hardening, the batch's integrity: each test performs the attack or the
// fault against real Redis and PostgreSQL (items 4, 5, 7, 8, 12, 13, 17, 19, 22).
import { Readable } from 'node:stream';
import type { Queue } from 'bullmq';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rsaKeySource } from '../../src/crypto/rsa-keys.js';
import { BatchConflictError } from '../../src/common/errors.js';
import { BatchTooLargeError } from '../../src/ingest/enqueue-batch.js';
import type { WorkspaceInput } from '../../src/input/input-rows.js';
import { createProvisioner, type Provisioner } from '../../src/provisioner.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { sweepLostJobs } from '../../src/worker/sweep.js';
import { csvOf, envQueue, runUntilDone, waitUntilDone } from '../helpers/batch.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

let env: TestEnv;
let provisioner: Provisioner;
let queue: Queue;
async function open(opts: { redisDb?: number } = {}) {
  env = await createTestEnv(opts);
  provisioner = await createProvisioner(env.config);
  queue = await envQueue(env);
}
async function close() {
  await queue.close();
  await provisioner.close();
  await env.cleanup();
}
beforeEach(() => open());
afterEach(() => close());

const rowsOf = async (batch: string) =>
  (
    await env.db.query<{ line: number; outcome: string; error: string | null; tenant_id: string | null; idempotency_key: string }>(
      `SELECT line, outcome, error, tenant_id, idempotency_key FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`,
      [batch],
    )
  ).rows;
const tenants = async () => Number((await env.db.query<{ n: string }>(`SELECT count(*) AS n FROM tenants`)).rows[0]!.n);
const jobsInRedis = async () => {
  const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed', 'completed');
  return Object.values(c).reduce((a, b) => a + b, 0);
};
const owners = (n: number, prefix: string): WorkspaceInput[] =>
  Array.from({ length: n }, (_, i) => ({ workspace_name: `${prefix} ${i}`, owner_email: `owner${(i % 20) + 1}@example.com` }));

describe('a refused ingest (item 4)', () => {
  it('reusing a batch id for a different file queues nothing and leaves the batch as it was', async () => {
    await provisioner.enqueue([{ workspace_name: 'First', owner_email: 'owner1@example.com' }], { batchId: 'reused' });
    // The other file: line 1 differs, and 200 more rows follow in small chunks, so that many
    // chunks are on their way before the first one's answer says "a different row".
    const other = [{ workspace_name: 'Not first', owner_email: 'owner2@example.com' }, ...owners(200, 'Other')];
    const err = await provisioner.enqueue(other, { batchId: 'reused', chunkSize: 10 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BatchConflictError);
    expect((await rowsOf('reused')).map((r) => r.line)).toEqual([1]);
    expect(await jobsInRedis()).toBe(1);
    expect((err as Error).message).toMatch(/already has a different row at line 1: nothing was queued and the batch is as it was/);
    expect(await provisioner.batch('reused').status()).toMatchObject({ total: 1, counts: { queued: 1 } });
  });

  it('a batch over its row or byte limit queues nothing and records nothing (maxRows, maxBytes)', async () => {
    const err = await provisioner.enqueue(owners(50, 'Big'), { batchId: 'big', maxRows: 40, chunkSize: 10 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BatchTooLargeError);
    expect((err as Error).message).toMatch(/over its limit of 40 rows at line 41: nothing was queued .*--max-rows/);
    const bytes = await provisioner.enqueue(owners(50, 'Big'), { batchId: 'big', maxBytes: 4096, chunkSize: 10 }).catch((e: unknown) => e);
    expect(bytes).toBeInstanceOf(BatchTooLargeError);
    expect((bytes as Error).message).toMatch(/over its limit of 4096 bytes of rows at line \d+: .*--max-bytes/);
    expect(await provisioner.batches()).toEqual([]);
    expect(await jobsInRedis()).toBe(0);

    // At the limit is fine.
    const fits = await provisioner.enqueue(owners(40, 'Big'), { batchId: 'big', maxRows: 40, chunkSize: 10 });
    expect(fits.summary).toMatchObject({ total: 40, queued: 40 });
  });
});

describe('jobs queued while the batch is recorded (issue 34)', () => {
  // A source that stops before row `at` until the test lets it go on (or fail): the rows before
  // it are recorded in the open transaction and their jobs are in Redis, before any COMMIT.
  const held = () => {
    let go!: () => void;
    let fail!: (err: Error) => void;
    const until = new Promise<void>((resolve, reject) => ((go = resolve), (fail = reject)));
    return { until, go, fail };
  };
  async function* pausedAt(rows: WorkspaceInput[], at: number, until: Promise<void>): AsyncGenerator<WorkspaceInput> {
    for (const [i, row] of rows.entries()) {
      if (i === at) await until;
      yield row;
    }
  }
  const seen = async (check: () => Promise<boolean>) => {
    while (!(await check())) await new Promise((r) => setTimeout(r, 50));
  };
  // The worker has taken a job (it waits for the batch, hands it back, or fails it).
  const taken = async () =>
    Object.values(await queue.getJobCounts('active', 'delayed', 'failed', 'completed')).reduce((a, b) => a + b, 0) > 0;
  // Key generation is beside the point: a few real pairs, reused.
  const reusedKeys = async () => {
    const pairs = await Promise.all([1, 2, 3].map(() => rsaKeySource.generate()));
    let n = 0;
    return { generate: async () => pairs[n++ % 3]! };
  };

  it('each chunk is queued as it is recorded; a worker that takes a job before the COMMIT waits for it, then creates each row once', async () => {
    const gate = held();
    const worker = await runWorker(env.config, { concurrency: 4, logger: pino({ level: 'silent' }), keys: await reusedKeys() });
    try {
      const ingest = provisioner.enqueue(pausedAt(owners(30, 'Early'), 20, gate.until), { batchId: 'early', chunkSize: 10 });
      // Two chunks written, their jobs in Redis, and the worker has taken some: the rows are not
      // committed, so it can see none of them and creates nothing.
      await seen(async () => (await jobsInRedis()) >= 20 && (await taken()));
      expect(await rowsOf('early')).toEqual([]);
      expect(await tenants()).toBe(0);
      gate.go();
      expect((await ingest).summary).toMatchObject({ total: 30, queued: 30 });
      const [status] = await waitUntilDone(env, ['early']);
      expect(status!.counts).toMatchObject({ created: 30, failed: 0 });
      expect(await tenants()).toBe(30);
    } finally {
      gate.go();
      await worker.close();
    }
  });

  it('a refused ingest takes back every job it queued, those a waiting worker holds too: nothing is queued or created', async () => {
    const gate = held();
    const worker = await runWorker(env.config, { concurrency: 4, logger: pino({ level: 'silent' }), keys: await reusedKeys() });
    try {
      const ingest = provisioner.enqueue(pausedAt(owners(30, 'Refused'), 20, gate.until), { batchId: 'refused', chunkSize: 10 });
      await seen(async () => (await jobsInRedis()) >= 20 && (await taken()));
      gate.fail(new Error('the source broke at row 21'));
      expect(await ingest.catch((e: unknown) => e)).toMatchObject({ message: expect.stringMatching(/the source broke at row 21/) });
      expect(await jobsInRedis()).toBe(0);
      expect(await provisioner.batches()).toEqual([]);
      expect(await tenants()).toBe(0);
    } finally {
      await worker.close();
    }
  });
});

describe('two ingests of one file at the same time (item 5)', () => {
  it('queue exactly the stored specs, count each row once, and every row is created once', async () => {
    const csv = csvOf(owners(120, 'Twice').map((r) => ({ workspace_name: r.workspace_name, owner_email: r.owner_email })));
    const other = await createProvisioner(env.config);
    let summaries;
    try {
      const file = () => Readable.from([Buffer.from(csv)]);
      summaries = await Promise.all([
        provisioner.enqueueCsv(file(), { batchId: 'twice', chunkSize: 20 }),
        other.enqueueCsv(file(), { batchId: 'twice', chunkSize: 20 }),
      ]);
    } finally {
      await other.close();
    }
    expect(summaries.map((b) => [b.summary.queued, b.summary.alreadyInBatch]).sort()).toEqual([
      [0, 120],
      [120, 0],
    ]);
    // Every job in Redis is exactly its row's stored spec.
    const stored = new Map(
      (await env.db.query(`SELECT line, spec FROM dify_provision.rows WHERE batch_id = 'twice'`)).rows.map((r) => [r.line, r.spec]),
    );
    const jobs = await queue.getWaiting(0, 1000);
    expect(jobs).toHaveLength(120);
    for (const j of jobs) expect(j.data).toEqual(stored.get(j.data.line));

    // Key generation is beside the point here: a few real pairs, reused.
    const pairs = await Promise.all([1, 2, 3].map(() => rsaKeySource.generate()));
    let n = 0;
    const [status] = await runUntilDone(env, ['twice'], { concurrency: 8, keys: { generate: async () => pairs[n++ % 3]! } });
    expect(status!.counts).toMatchObject({ created: 120, failed: 0 });
    expect(await tenants()).toBe(120);
  }, 300_000);
});

describe('rows whose job Redis lost (item 7)', () => {
  // Its own Redis logical database: FLUSHDB must not touch the queues of tests beside it.
  beforeEach(async () => {
    await close();
    await open({ redisDb: 14 });
  });

  it('status says so; one sweep at a time queues each again exactly once; a worker then creates each once', async () => {
    const batch = await provisioner.enqueue(owners(6, 'Lost'), { batchId: 'lost' });
    // Two rows had started (a worker took them, then died) when Redis lost everything.
    await env.db.query(`UPDATE dify_provision.rows SET outcome = 'active', attempts = 1 WHERE batch_id = 'lost' AND line <= 2`);
    await env.redis.flushdb();
    expect(await batch.rowsWithoutJob()).toBe(6);

    // Two workers sweep at once: the rows are queued again once in all.
    const sweeps = await Promise.all([sweepLostJobs(env.db, provisionerDeps(), 0), sweepLostJobs(env.db, provisionerDeps(), 0)]);
    expect(sweeps.reduce((n, s) => n + (s?.lost ?? 0), 0)).toBe(6);
    expect(await batch.rowsWithoutJob()).toBe(0);
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 6 });
    expect((await rowsOf('lost')).map((r) => r.outcome)).toEqual(Array(6).fill('queued'));

    const [status] = await runUntilDone(env, ['lost']);
    expect(status!.counts).toMatchObject({ created: 6 });
    expect(await tenants()).toBe(6);
  });

  it("a running worker's periodic sweep finds them; cancel, retry --cancelled and a re-ingest work on them", async () => {
    const batch = await provisioner.enqueue(owners(3, 'Gone'), { batchId: 'gone' });
    await env.db.query(`UPDATE dify_provision.rows SET outcome = 'active' WHERE batch_id = 'gone' AND line = 1`);
    await env.redis.flushdb();
    // cancel answers even the row left active without a job: the batch ends.
    expect(await batch.cancel()).toBe(3);
    expect(await batch.status()).toMatchObject({ done: true, counts: { cancelled: 3 } });
    expect(await batch.resumeCancelled()).toBe(3);
    await env.redis.flushdb();
    // A re-ingest of the same rows queues the ones whose job is gone.
    const again = await provisioner.enqueue(owners(3, 'Gone'), { batchId: 'gone' });
    expect(again.summary).toMatchObject({ queued: 0, alreadyInBatch: 3 });
    expect(await batch.rowsWithoutJob()).toBe(0);
    await env.redis.flushdb();
    expect(await batch.rowsWithoutJob()).toBe(3);

    const worker = await runWorker(env.config, {
      concurrency: 2,
      logger: pino({ level: 'silent' }),
      sweep: { intervalMs: 200, idleSeconds: 0 },
    });
    try {
      const [status] = await waitUntilDone(env, ['gone']);
      expect(status!.counts).toMatchObject({ created: 3 });
    } finally {
      await worker.close();
    }
    expect(await tenants()).toBe(3);
  });

  it('rows that finished are not "without a job" after a flush: status and the sweep count only open rows, and queue none for them', async () => {
    const finished = await provisioner.enqueue([...owners(2, 'Finished'), { workspace_name: 'Ghost', owner_email: 'ghost@example.com' }], {
      batchId: 'finished',
      retry: { attempts: 1, backoffMs: 0 },
    });
    await runUntilDone(env, ['finished']);
    expect((await rowsOf('finished')).map((r) => r.outcome)).toEqual(['created', 'created', 'failed']);
    // A batch whose first rows finished and whose last one still waits (its worker died).
    const mixed = await provisioner.enqueue(owners(4, 'Mixed'), { batchId: 'mixed' });
    await env.db.query(
      `UPDATE dify_provision.rows SET outcome = (ARRAY['existing', 'failed', 'cancelled'])[line], finished_at = now(), error = 'x'
        WHERE batch_id = 'mixed' AND line <= 3`,
    );
    await env.redis.flushdb();

    expect(await finished.rowsWithoutJob()).toBe(0);
    expect(await mixed.rowsWithoutJob()).toBe(1);
    expect(await sweepLostJobs(env.db, provisionerDeps(), 0)).toEqual({ open: 1, lost: 1, failed: 0 });
    const waiting = await queue.getWaiting();
    expect(waiting.map((j) => [j.data.batchId, j.data.line])).toEqual([['mixed', 4]]);
    expect((await rowsOf('finished')).map((r) => r.outcome)).toEqual(['created', 'created', 'failed']);
  });

  it("a sweep's turn looks at rowsPerTurn open rows at most, and the next turn goes on after the last one", async () => {
    await provisioner.enqueue(owners(5, 'Turns'), { batchId: 'turns' });
    await env.redis.flushdb();
    const first = await sweepLostJobs(env.db, provisionerDeps(), 0, { maxRows: 2 });
    expect(first).toEqual({ open: 2, lost: 2, failed: 0, next: { batchId: 'turns', line: 2 } });
    const second = await sweepLostJobs(env.db, provisionerDeps(), 0, { after: first!.next!, maxRows: 2 });
    expect(second).toEqual({ open: 2, lost: 2, failed: 0, next: { batchId: 'turns', line: 4 } });
    expect(await sweepLostJobs(env.db, provisionerDeps(), 0, { after: second!.next!, maxRows: 2 })).toEqual({
      open: 1,
      lost: 1,
      failed: 0,
    });
    expect((await queue.getWaiting()).map((j) => j.data.line).sort()).toEqual([1, 2, 3, 4, 5]);
    // A running worker's turns go round: every row is found though each turn looks at two.
    await env.redis.flushdb();
    const worker = await runWorker(env.config, {
      concurrency: 2,
      logger: pino({ level: 'silent' }),
      sweep: { intervalMs: 200, idleSeconds: 0, rowsPerTurn: 2 },
    });
    try {
      const [status] = await waitUntilDone(env, ['turns']);
      expect(status!.counts).toMatchObject({ created: 5 });
    } finally {
      await worker.close();
    }
  });

  it('a sweep analyzes the rows table first when a large batch changed it, so its pages take the open-rows index (BENCHMARKS.md: 52–85 s against 10 s for a million rows)', async () => {
    const analyzed = async () =>
      Number(
        (await env.db.query(`SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'dify_provision.rows'::regclass`)).rows[0]
          .analyze_count,
      );
    // A small batch changes the table too little: no ANALYZE of ours (autovacuum's are counted apart).
    await provisioner.enqueue(owners(5, 'Small'), { batchId: 'small' });
    const before = await analyzed();
    await sweepLostJobs(env.db, provisionerDeps(), 3600);
    expect(await analyzed()).toBe(before);
    // A large one: the next sweep analyzes it (PostgreSQL publishes a backend's counts within seconds: asked until it has).
    await provisioner.enqueue(owners(12_000, 'Large'), { batchId: 'large' });
    for (let i = 0; (await analyzed()) === before; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 500));
      expect(i).toBeLessThan(120);
      expect(await sweepLostJobs(env.db, provisionerDeps(), 3600)).toMatchObject({ lost: 0, failed: 0 });
    }
    // Analyzed: the next sweep leaves it.
    const after = await analyzed();
    await sweepLostJobs(env.db, provisionerDeps(), 3600);
    expect(await analyzed()).toBe(after);
  });

  it('the sweep waits out its idle window: a row touched, or a batch whose ingest finished, within it is left alone', async () => {
    const batch = await provisioner.enqueue(owners(2, 'Idle'), { batchId: 'idle' });
    await env.redis.flushdb();
    expect(await batch.rowsWithoutJob()).toBe(2);
    const sweep = async () => (await sweepLostJobs(env.db, provisionerDeps(), 60))!.lost;
    expect(await sweep()).toBe(0); // just queued: its ingest may still be queueing them
    // Rows untouched for two minutes, but the batch's ingest finished just now (a re-ingest queueing them): left.
    await env.db.query(`UPDATE dify_provision.rows SET updated_at = now() - interval '2 minutes' WHERE batch_id = 'idle'`);
    expect(await sweep()).toBe(0);
    // The ingest finished long ago; line 1 was touched just now (a worker on it), line 2 was not: only line 2 is queued again.
    await env.db.query(`UPDATE dify_provision.batches SET ingest_finished_at = now() - interval '2 minutes' WHERE id = 'idle'`);
    await env.db.query(`UPDATE dify_provision.rows SET updated_at = now() WHERE batch_id = 'idle' AND line = 1`);
    expect(await sweep()).toBe(1);
    expect((await queue.getWaiting()).map((j) => (j.data as { line: number }).line)).toEqual([2]);
    expect(await batch.rowsWithoutJob()).toBe(1);
  });

  const provisionerDeps = () => ({ queue, redis: env.redis });
});

describe('a key the ledger knows (items 8, 17, 19)', () => {
  it('a reused external_id with another owner or name fails, naming the recorded line, batch and tenant, and the apply change that fixes it', async () => {
    const first = await provisioner.enqueue(
      [
        { workspace_name: 'Filler', owner_email: 'owner3@example.com' },
        { workspace_name: 'Acme', owner_email: 'owner1@example.com', external_id: 'cust-1' },
      ],
      { batchId: 'acme' },
    );
    await runUntilDone(env, ['acme']);
    const tenant = (await first.report())[1]!.tenantId;
    // The same customer again (the email in another case): existing.
    await provisioner.enqueue([{ workspace_name: 'Acme', owner_email: 'OWNER1@example.com', external_id: 'cust-1' }], {
      batchId: 'same-again',
    });
    // One batch may not name a key twice: each case in its own batch.
    await provisioner.enqueue([{ workspace_name: 'Acme', owner_email: 'owner2@example.com', external_id: 'cust-1' }], {
      batchId: 'other-owner',
    });
    await provisioner.enqueue([{ workspace_name: 'Acme renamed', owner_email: 'owner1@example.com', external_id: 'cust-1' }], {
      batchId: 'other-name',
    });
    await provisioner.enqueue([{ workspace_name: 'Other Co', owner_email: 'owner4@example.com', external_id: 'cust-1' }], {
      batchId: 'other-both',
    });
    await runUntilDone(env, ['same-again', 'other-owner', 'other-name', 'other-both']);
    expect((await rowsOf('same-again'))[0]).toMatchObject({ outcome: 'existing', tenant_id: tenant });
    const refused = (what: string) =>
      `external_id: external_id "cust-1" belongs to tenant ${tenant}, made for line 2 of batch "acme", with another ${what}: nothing was created. ` +
      'If it is the same customer, change that workspace instead: `dify-provision apply` with the row';
    const rename = 'action=rename, external_id=cust-1, name=';
    const transfer = 'action=transfer_owner, external_id=cust-1, email=';
    const tail = ' (docs/changes.md), then `retry` this batch; only another customer needs an external_id of its own';
    const failed = { outcome: 'failed', tenant_id: expect.not.stringMatching(tenant!) };
    expect((await rowsOf('other-name'))[0]).toMatchObject({
      ...failed,
      error: `${refused('workspace name')} ${rename}Acme renamed${tail}`,
    });
    expect((await rowsOf('other-owner'))[0]).toMatchObject({
      ...failed,
      error: `${refused('owner')} ${transfer}owner2@example.com (after an add_member row if they are not a member)${tail}`,
    });
    expect((await rowsOf('other-both'))[0]).toMatchObject({
      ...failed,
      error: `${refused('owner and workspace name')}s ${rename}Other Co; ${transfer}owner4@example.com (after an add_member row if they are not a member)${tail}`,
    });
    expect(await tenants()).toBe(2);

    // The advice followed: the changes applied, the same rows retried are the workspace, not a second one.
    await provisioner.apply(
      [
        { action: 'rename', external_id: 'cust-1', name: 'Acme renamed' },
        { action: 'add_member', external_id: 'cust-1', email: 'owner2@example.com', role: 'admin' },
        { action: 'transfer_owner', external_id: 'cust-1', email: 'owner2@example.com' },
      ],
      { batchId: 'fix' },
    );
    await runUntilDone(env, ['fix']);
    expect((await provisioner.batch('fix').report()).map((r) => r.outcome)).toEqual(['applied', 'applied', 'applied']);
    expect(await provisioner.batch('other-name').retryFailed()).toBe(1);
    expect(await provisioner.batch('other-owner').retryFailed()).toBe(1);
    await runUntilDone(env, ['other-name', 'other-owner']);
    expect((await rowsOf('other-name'))[0]).toMatchObject({ outcome: 'existing', tenant_id: tenant });
    expect((await rowsOf('other-owner'))[0]).toMatchObject({ outcome: 'existing', tenant_id: tenant });
    expect(await tenants()).toBe(2);
  });

  it('a workspace deleted in Dify is not answered existing: the row fails naming the deleted tenant and how to create it again', async () => {
    const first = await provisioner.enqueue([{ workspace_name: 'Doomed', owner_email: 'owner1@example.com' }], { batchId: 'doomed' });
    await runUntilDone(env, ['doomed']);
    const tenant = (await first.report())[0]!.tenantId!;
    await env.db.query(`DELETE FROM tenant_account_joins WHERE tenant_id = $1`, [tenant]);
    await env.db.query(`DELETE FROM tenants WHERE id = $1`, [tenant]);

    await provisioner.enqueue([{ workspace_name: 'Doomed', owner_email: 'owner1@example.com' }], { batchId: 'again' });
    await runUntilDone(env, ['again']);
    const [row] = await rowsOf('again');
    expect(row!.outcome).toBe('failed');
    expect(row!.error).toContain(`(tenant ${tenant}, made for line 1 of batch "doomed") and has since been deleted from Dify`);
    expect(row!.error).toContain(`DELETE FROM dify_provision.ledger WHERE tenant_id = '${tenant}'`);
    expect(await tenants()).toBe(0);

    // Following the advice creates it again.
    await env.db.query(`DELETE FROM dify_provision.ledger WHERE tenant_id = $1`, [tenant]);
    expect(await provisioner.batch('again').retryFailed()).toBe(1);
    const [status] = await runUntilDone(env, ['again']);
    expect(status!.counts.created).toBe(1);
    expect(await tenants()).toBe(1);
  });

  it('one name in NFC and NFD (a macOS export) is one key: one workspace', async () => {
    const nfc = 'Café Zoë';
    const nfd = nfc.normalize('NFD');
    expect(nfd).not.toBe(nfc);
    await provisioner.enqueue([{ workspace_name: nfc, owner_email: 'owner1@example.com' }], { batchId: 'nfc' });
    await runUntilDone(env, ['nfc']);
    const both = await provisioner.enqueue(
      [
        { workspace_name: nfd, owner_email: 'owner1@example.com' },
        { workspace_name: nfc, owner_email: 'owner1@example.com' },
      ],
      { batchId: 'nfd' },
    );
    expect(both.summary).toMatchObject({ queued: 1, rejected: 1 });
    await runUntilDone(env, ['nfd']);
    const [first, second] = await rowsOf('nfd');
    expect(first).toMatchObject({ outcome: 'existing', tenant_id: (await rowsOf('nfc'))[0]!.tenant_id });
    expect(second).toMatchObject({ outcome: 'rejected', error: expect.stringMatching(/duplicate: line 1/) });
    expect(await tenants()).toBe(1);
    const names = (await env.db.query<{ name: string }>(`SELECT name FROM tenants`)).rows.map((r) => r.name);
    expect(names).toEqual([nfc]);
  });
});

describe('a permanently failed row (item 12)', () => {
  it('is not run again by a copy of its failed job, nor by retrying that job in Redis', async () => {
    await provisioner.enqueue([{ workspace_name: 'Ghostly', owner_email: 'ghost@example.com' }], { batchId: 'ghost' });
    await runUntilDone(env, ['ghost']);
    const [failed] = await rowsOf('ghost');
    expect(failed!.outcome).toBe('failed');
    // Now the row could succeed: only `retry` may run it again.
    await env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Ghost', 'ghost@example.com', 'active')`);
    const [job] = await queue.getFailed();
    await queue.add('workspace', job!.data, { jobId: 'copied-1' });
    await job!.retry();

    const worker = await runWorker(env.config, { concurrency: 2, logger: pino({ level: 'silent' }) });
    try {
      // Until both jobs have run (failed, completed, or completed and removed).
      const ran = async (id: string) => ['failed', 'completed', 'unknown'].includes(await queue.getJobState(id));
      while (!((await ran('copied-1')) && (await ran(job!.id!)))) await new Promise((r) => setTimeout(r, 100));
    } finally {
      await worker.close();
    }
    expect(await tenants()).toBe(0);
    expect(await rowsOf('ghost')).toEqual([{ ...failed }]);
    expect((await queue.getJob('copied-1'))?.failedReason).toMatch(/nothing was created/);
    expect((await queue.getJob(job!.id!))?.failedReason).toMatch(/the row is failed, not queued/);
  });
});

describe('a malformed row from a script (item 13)', () => {
  it('is its own error: a Symbol, a deep list, a throwing toString or getter; the rest of the batch is queued', async () => {
    let deep: unknown = [];
    for (let i = 0; i < 200_000; i++) deep = [deep];
    const throwing = {
      toString() {
        throw new Error('boom');
      },
    };
    const getter = Object.defineProperty({ owner_email: 'owner5@example.com' }, 'workspace_name', {
      enumerable: true,
      get() {
        throw new Error('boom');
      },
    });
    const rows = [
      { workspace_name: 'Good', owner_email: 'owner1@example.com' },
      { workspace_name: Symbol('x'), owner_email: 'owner2@example.com' },
      { workspace_name: deep, owner_email: 'owner3@example.com' },
      { workspace_name: 'Deep members', owner_email: 'owner3@example.com', members: deep },
      { workspace_name: throwing, owner_email: 'owner4@example.com' },
      getter,
      null,
      { workspace_name: 'Also good', owner_email: 'owner6@example.com' },
    ] as unknown as WorkspaceInput[];
    const batch = await provisioner.enqueue(rows, { batchId: 'malformed' });
    expect(batch.summary).toMatchObject({ total: 8, queued: 2, rejected: 6 });
    expect(await batch.status()).toMatchObject({ ingested: true, total: 8 });
    expect((await rowsOf('malformed')).map((r) => `${r.line} ${r.outcome} ${r.error ?? ''}`)).toEqual([
      '1 queued ',
      '2 rejected workspace_name: must be text, not symbol',
      '3 rejected workspace_name: must be text, not a list',
      '4 rejected members: member 1 must be { email, role }',
      '5 rejected workspace_name: must be text, not object',
      '6 rejected row: could not be read (a property threw when read)',
      '7 rejected row: must be an object with workspace_name and owner_email',
      '8 queued ',
    ]);
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 2 });
  });
});
