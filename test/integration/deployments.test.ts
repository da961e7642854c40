// Where Dify runs: several Difys sharing one Redis (and one queue prefix), copies of a database.
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { difyIdentity } from '../../src/store/instance.js';
import { migrate } from '../../src/store/schema.js';
import { waitForBatch, getBatchStatus } from '../../src/store/batches.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { csvOf, ingestCsv } from '../helpers/batch.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

let a: TestEnv;
let b: TestEnv;
beforeEach(async () => {
  a = await createTestEnv();
  b = await createTestEnv();
  // Staging is a copy of production: the same accounts, the same queue prefix, one Redis.
  b.config.queuePrefix = a.config.queuePrefix;
});
afterEach(async () => {
  await a.cleanup();
  await b.cleanup();
});

const names = async (env: TestEnv) => (await env.db.query(`SELECT name FROM tenants ORDER BY name`)).rows.map((r) => r.name as string);

describe('two Difys, one Redis', () => {
  it("a worker of one Dify never takes the other's jobs, and each batch ends complete in its own Dify", async () => {
    const rows = (tag: string) =>
      Array.from({ length: 5 }, (_, i) => ({ workspace_name: `${tag} ${i}`, owner_email: `owner${i + 1}@example.com` }));
    await ingestCsv(a, csvOf(rows('A')), 'wave');
    await ingestCsv(b, csvOf(rows('B')), 'wave');
    const idA = await difyIdentity(a.db);
    const idB = await difyIdentity(b.db);
    expect(idA.queueName).not.toBe(idB.queueName);

    // B's worker alone, first: it finishes B's batch and leaves A's untouched.
    const workerB = await runWorker(b.config, { concurrency: 4, logger: pino({ level: 'silent' }) });
    try {
      expect((await waitForBatch(b.db, 'wave', { intervalMs: 100 })).counts.created).toBe(5);
      await new Promise((r) => setTimeout(r, 1000));
      expect((await getBatchStatus(a.db, 'wave'))!.counts).toMatchObject({ queued: 5, created: 0 });
      expect(await names(b)).toEqual(['B 0', 'B 1', 'B 2', 'B 3', 'B 4']);
      // A's worker, started later, gets all of A's jobs while B's is still running.
      const workerA = await runWorker(a.config, { concurrency: 4, logger: pino({ level: 'silent' }) });
      try {
        expect((await waitForBatch(a.db, 'wave', { intervalMs: 100 })).counts.created).toBe(5);
      } finally {
        await workerA.close();
      }
    } finally {
      await workerB.close();
    }
    expect(await names(a)).toEqual(['A 0', 'A 1', 'A 2', 'A 3', 'A 4']);
    expect(await names(b)).toEqual(['B 0', 'B 1', 'B 2', 'B 3', 'B 4']);
  });

  it('a database copied from another (with our schema in it) gets an identity, and a queue, of its own', async () => {
    await migrate(a.db);
    const original = await difyIdentity(a.db);
    expect((await difyIdentity(a.db)).id).toBe(original.id); // stable
    // Staging restored from production's dump: B holds A's identity row, minted in A's database.
    await migrate(b.db);
    const { rows } = await a.db.query(`SELECT id, database_name, system_identifier FROM dify_provision.instance`);
    await b.db.query(`INSERT INTO dify_provision.instance (id, database_name, system_identifier) VALUES ($1, $2, $3)`, [
      rows[0].id,
      rows[0].database_name,
      rows[0].system_identifier,
    ]);
    const copied = await difyIdentity(b.db);
    expect(copied.id).not.toBe(original.id);
    expect(copied.queueName).not.toBe(original.queueName);
    expect(copied.database).toBe(b.name);
    expect((await difyIdentity(a.db)).id).toBe(original.id);
  });
});
