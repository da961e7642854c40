// Rows a real worker must refuse or skip, and rows that must still get an answer: a workspace_id
// that is an existing tenant, a cancelled row whose job is still in Redis, a member named owner,
// and a recorded job the worker's contract refuses.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { cancelBatch } from '../../src/queue/batch-control.js';
import { jobFor, type JobData, type JobResult } from '../../src/queue/contract.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { csvOf, envQueue, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { keyFile } from '../helpers/dify-checks.js';
import { type TestEnv } from '../helpers/test-env.js';
import { freshEnvEachTest } from '../helpers/world.js';

let env: TestEnv;
freshEnvEachTest((e) => (env = e));

const rowsOf = async (batch: string) =>
  (
    await env.db.query(`SELECT line, outcome, tenant_id, attempts, error FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`, [
      batch,
    ])
  ).rows;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const tenantCount = async () => (await env.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tenants`)).rows[0]!.n;

describe('a workspace_id that is an existing tenant', () => {
  it("is refused by the worker, and the existing tenant's private key is left byte for byte", async () => {
    const id = '0d024308-a14f-4742-8762-bb48869bf67a';
    await ingestCsv(env, csvOf([{ workspace_name: 'First', owner_email: 'owner1@example.com', workspace_id: id }]), 'first');
    expect((await runUntilDone(env, ['first']))[0]!.counts.created).toBe(1);
    const file = keyFile(env, id);
    const before = {
      pem: sha256(await readFile(file)),
      stat: await stat(file),
      tenant: (await env.db.query(`SELECT * FROM tenants`)).rows,
    };

    // Another row (another owner and name: another idempotency key) asks for the same tenant id.
    await ingestCsv(env, csvOf([{ workspace_name: 'Second', owner_email: 'owner2@example.com', workspace_id: id }]), 'second');
    const [second] = await runUntilDone(env, ['second']);
    expect(sha256(await readFile(file)), "the existing tenant's private.pem was rewritten").toBe(before.pem);
    expect(await stat(file)).toMatchObject({ mode: before.stat.mode, uid: before.stat.uid, ino: before.stat.ino });
    expect((await env.db.query(`SELECT * FROM tenants`)).rows).toEqual(before.tenant);
    expect(second!.counts).toMatchObject({ failed: 1, created: 0 });
    expect((await rowsOf('second'))[0]).toMatchObject({
      outcome: 'failed',
      error: expect.stringMatching(/^workspace_id: a Dify workspace with id 0d024308-a14f-4742-8762-bb48869bf67a exists already/),
    });
    const ledger = await env.db.query(`SELECT batch_id FROM dify_provision.ledger`);
    expect(ledger.rows).toEqual([{ batch_id: 'first' }]);
  });
});

describe('a cancelled row', () => {
  it('whose job is still in Redis is skipped by the worker: no tenant, no key, the row stays cancelled', async () => {
    const rows = [1, 2, 3].map((i) => ({ workspace_name: `Cancelled ${i}`, owner_email: `owner${i}@example.com` }));
    await ingestCsv(env, csvOf(rows), 'gone');
    const queue = await envQueue(env);
    try {
      expect(await cancelBatch(env.db, { queue, redis: env.redis }, 'gone')).toBe(3);
      // The jobs come back as they were (a worker held them while the batch was cancelled, or
      // their removal failed): the same ids, the same data.
      const { rows: specs } = await env.db.query<{ spec: JobData; round: number }>(
        `SELECT spec, round FROM dify_provision.rows WHERE batch_id = 'gone' ORDER BY line`,
      );
      for (const s of specs) {
        const job = jobFor(s.spec, { attempts: 3, backoffMs: 50 }, s.round);
        await queue.add(job.name, job.data, job.opts);
      }
      expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 3 });

      const worker = await runWorker(env.config, { concurrency: 2, logger: pino({ level: 'silent' }) });
      const results: JobResult[] = [];
      try {
        await new Promise<void>((resolve, reject) => {
          worker.worker.on('completed', (_job, result) => {
            results.push(result);
            if (results.length === 3) resolve();
          });
          worker.worker.on('failed', (job, err) => reject(new Error(`job ${job?.id} failed: ${err.message}`)));
        });
      } finally {
        await worker.close();
      }
      expect(results).toEqual([{ outcome: 'cancelled' }, { outcome: 'cancelled' }, { outcome: 'cancelled' }]);
    } finally {
      await queue.close();
    }
    expect(await tenantCount()).toBe(0);
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toEqual([]);
    expect((await rowsOf('gone')).map((r) => [r.outcome, r.error])).toEqual(Array(3).fill(['cancelled', 'cancelled before it ran']));
    expect((await env.db.query(`SELECT count(*)::int AS n FROM dify_provision.ledger`)).rows[0].n).toBe(0);
  });
});

describe('members named owner', () => {
  it('are rejected at ingest with their line and field, and the rest of the batch finishes', async () => {
    const csv = csvOf([
      { workspace_name: 'Fine', owner_email: 'owner1@example.com', members: 'owner2@example.com:admin' },
      { workspace_name: 'Two owners', owner_email: 'owner3@example.com', members: 'owner4@example.com:owner' },
      { workspace_name: 'Shouting', owner_email: 'owner5@example.com', members: 'owner6@example.com:editor; owner7@example.com: OWNER ' },
    ]);
    expect(await ingestCsv(env, csv, 'owners')).toMatchObject({ total: 3, queued: 1, rejected: 2 });
    const [status] = await runUntilDone(env, ['owners']);
    expect(status).toMatchObject({ done: true, counts: expect.objectContaining({ created: 1, rejected: 2 }) });
    expect((await rowsOf('owners')).map((r) => [r.line, r.outcome, r.error])).toEqual([
      [2, 'created', null],
      [3, 'rejected', `members: "owner4@example.com" cannot be an owner: the workspace's owner is owner_email; use admin`],
      [4, 'rejected', `members: "owner7@example.com" cannot be an owner: the workspace's owner is owner_email; use admin`],
    ]);
    const { rows: roles } = await env.db.query(`SELECT role, count(*)::int AS n FROM tenant_account_joins GROUP BY role ORDER BY role`);
    expect(roles).toEqual([
      { role: 'admin', n: 1 },
      { role: 'owner', n: 1 },
    ]);
  });

  it('a row whose recorded job the worker refuses as malformed still gets an answer', async () => {
    // Ingest and the worker's contract disagreeing (ingest accepted what the contract refuses):
    // the record and the job both say what such an ingest would have written.
    await ingestCsv(
      env,
      csvOf([{ workspace_name: 'Disputed', owner_email: 'owner1@example.com', members: 'owner2@example.com:admin' }]),
      'odd',
    );
    const queue = await envQueue(env);
    try {
      const { rows } = await env.db.query<{ spec: JobData }>(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'odd'`);
      const spec = { ...rows[0]!.spec, members: [{ email: 'owner2@example.com', role: 'owner' }] };
      await env.db.query(`UPDATE dify_provision.rows SET spec = $1 WHERE batch_id = 'odd'`, [JSON.stringify(spec)]);
      const [job] = await queue.getJobs(['waiting']);
      await job!.updateData(spec);
    } finally {
      await queue.close();
    }
    const [status] = await runUntilDone(env, ['odd']);
    expect(status!.counts).toMatchObject({ failed: 1 });
    expect((await rowsOf('odd'))[0]).toMatchObject({
      outcome: 'failed',
      error: expect.stringMatching(/malformed data \(members\.0\.role/),
    });
    expect(await tenantCount()).toBe(0);
  });
});
