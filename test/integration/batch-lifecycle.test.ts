import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { StrictValidationError } from '../../src/input/input-rows.js';
import { ConfigSchema } from '../../src/config/config.js';
import { createProvisioner, provisionerOn, type Provisioner } from '../../src/provisioner.js';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { waitFor } from '../../src/services/local-services.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { csvOf } from '../helpers/batch.js';
import { tcpProxy } from '../helpers/tcp-proxy.js';
import type { TestEnv } from '../helpers/test-env.js';
import { freshProvisionerEachTest } from '../helpers/world.js';

let env: TestEnv;
let provisioner: Provisioner;
const world = freshProvisionerEachTest((w) => ({ env, provisioner } = w));

const csv = (rows: Record<string, string>[]) => Readable.from([Buffer.from(csvOf(rows))]);
async function withWorker<T>(fn: () => Promise<T>): Promise<T> {
  const w = await runWorker(env.config, { concurrency: 4, logger: pino({ level: 'silent' }) });
  try {
    return await fn();
  } finally {
    await w.close();
  }
}

describe('the per-row report', () => {
  it('answers every input row once, in input order, across valid, invalid, existing and failing rows; and survives a Redis flush', async () => {
    // A Redis database of its own: FLUSHALL would also wipe the queues of tests running beside this one.
    await world.reopen({ redisDb: 15 });
    const first = await provisioner.enqueueCsv(csv([{ workspace_name: 'Already', owner_email: 'owner1@example.com', external_id: 'e1' }]), {
      batchId: 'earlier',
    });
    await withWorker(() => first.done(100));

    const rows = [
      { workspace_name: '=SUM(A1:A9)', owner_email: 'owner2@example.com', external_id: 'e2' },
      { workspace_name: 'Broken', owner_email: 'nope', external_id: 'e3' },
      { workspace_name: 'Already', owner_email: 'owner1@example.com', external_id: 'e1' },
      { workspace_name: 'Ghost', owner_email: 'ghost@example.com', external_id: 'e4' },
      { workspace_name: '+cmd|calc', owner_email: 'owner3@example.com', external_id: 'e5' },
    ];
    const batch = await provisioner.enqueueCsv(csv(rows), { batchId: 'mixed', retry: { attempts: 3, backoffMs: 20 } });
    const final = await withWorker(() => batch.done(100));
    expect(final).toMatchObject({ done: true, succeeded: false, total: 5, counts: { created: 2, existing: 1, rejected: 1, failed: 1 } });

    await env.redis.flushdb();
    expect(await env.redis.dbsize()).toBe(0);
    const report = await batch.report();
    expect(report.map((r) => [r.line, r.externalId, r.outcome])).toEqual([
      [2, 'e2', 'created'],
      [3, 'e3', 'rejected'],
      [4, 'e1', 'existing'],
      [5, 'e4', 'failed'],
      [6, 'e5', 'created'],
    ]);
    expect(report[1]!.error).toBe('owner_email: is not a valid email address');
    expect(report[3]!).toMatchObject({
      attempts: 1,
      tenantId: null,
      error: expect.stringContaining('no Dify account has the email "ghost@example.com"'),
    });
    const earlier = (await first.report())[0]!;
    expect(report[2]).toMatchObject({ tenantId: earlier.tenantId, fingerprint: earlier.fingerprint });
    expect(report[0]!.fingerprint).toMatch(/^[0-9a-f]{64}$/);

    let text = '';
    for await (const chunk of batch.reportCsv()) text += chunk;
    const lines = text.trimEnd().split('\r\n');
    expect(lines[0]).toBe(
      'line,external_id,workspace_name,owner_email,outcome,tenant_id,public_key_sha256,attempts,duration_ms,accounts_created,api_key,error,mail,dify_tasks,invitations',
    );
    expect(lines).toHaveLength(6);
    expect(lines[1]).toMatch(/^2,e2,'=SUM\(A1:A9\),owner2@example\.com,created,[0-9a-f-]{36},[0-9a-f]{64},1,\d+,,,,,,$/);
    expect(lines[5]).toContain(",'+cmd|calc,");
  });
});

describe('batch lifecycle', () => {
  it('the library: an input path that cannot be read is refused naming it (ingest, apply, both plans), nothing recorded, nothing left unhandled', async () => {
    const missing = join(env.dir, 'no-such.csv');
    const calls = (path: string) => [
      () => provisioner.enqueueCsv(path),
      () => provisioner.plan(path),
      () => provisioner.applyFile(path),
      () => provisioner.planChanges(path),
    ];
    for (const call of calls(missing)) await expect(call()).rejects.toThrow(`cannot read ${missing}: no such file`);
    for (const call of calls(env.dir)) await expect(call()).rejects.toThrow(`cannot read ${env.dir}: a folder, not a file`);
    expect(await provisioner.batches()).toEqual([]);
  });

  it('strict mode queues nothing when one row is invalid, and lists every invalid row', async () => {
    const rows = [
      { workspace_name: 'Fine', owner_email: 'owner1@example.com' },
      { workspace_name: 'Bad', owner_email: 'x' },
      { workspace_name: '', owner_email: 'owner1@example.com' },
    ];
    const err = await provisioner.enqueue(rows, { batchId: 'strict', strict: true }).catch((e) => e);
    expect(err).toBeInstanceOf(StrictValidationError);
    expect((err as StrictValidationError).rejected.map((r) => r.line)).toEqual([2, 3]);
    expect(await provisioner.batches()).toEqual([]);
    const waiting = await env.redis.keys(`${env.config.queuePrefix}:*`);
    expect(waiting.filter((k) => !k.endsWith(':meta') && !k.endsWith(':servers'))).toEqual([]); // the servers registry only names servers
  });

  it('a batch of many rows leaves the rows table analyzed: the sweep pages through open rows with the plan fresh statistics give', async () => {
    const reltuples = async () =>
      Number(
        (await env.db.query<{ n: number }>(`SELECT reltuples AS n FROM pg_class WHERE oid = 'dify_provision.rows'::regclass`)).rows[0]!.n,
      );
    const rows = (tag: string) => [1, 2, 3].map((i) => ({ workspace_name: `${tag} ${i}`, owner_email: 'owner1@example.com' }));
    await provisioner.enqueue(rows('Few'), { batchId: 'few' });
    // Under the threshold (100,000 rows by default) the table is left to autovacuum: never analyzed yet.
    expect(await reltuples()).toBe(-1);
    await provisioner.enqueue(rows('Many'), { batchId: 'many', analyzeAfterRows: 3 });
    expect(await reltuples()).toBe(6);
  });

  it('retry succeeds after the missing owner is created', async () => {
    const batch = await provisioner.enqueue([{ workspace_name: 'Later', owner_email: 'late@example.com' }], { batchId: 'retry-me' });
    await withWorker(async () => {
      expect((await batch.done(100)).counts.failed).toBe(1);
      await env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Late', 'late@example.com', 'active')`);
      expect(await batch.retryFailed()).toBe(1);
      const after = await batch.done(100);
      expect(after).toMatchObject({ succeeded: true, counts: { created: 1, failed: 0 } });
    });
    const [row] = await batch.report();
    expect(row).toMatchObject({ outcome: 'created', attempts: 1, error: null });
    expect(await batch.retryFailed()).toBe(0);
  });

  it('a batch ingested without create-missing-owners: retry with it creates the missing owner (recorded with the batch); a plain retry does not', async () => {
    const batch = await provisioner.enqueue(
      [
        { workspace_name: 'Known', owner_email: 'owner1@example.com' },
        { workspace_name: 'Newcomer', owner_email: 'Newcomer@example.com' },
      ],
      { batchId: 'late-flag' },
    );
    await withWorker(async () => {
      expect((await batch.done(100)).counts).toMatchObject({ created: 1, failed: 1 });
      expect(await batch.retryFailed()).toBe(1);
      expect((await batch.done(100)).counts).toMatchObject({ created: 1, failed: 1 }); // still no account
      // The same rows again with the flag: the same batch, nothing queued, and the flag said not applied.
      const again = await provisioner.enqueue(
        [
          { workspace_name: 'Known', owner_email: 'owner1@example.com' },
          { workspace_name: 'Newcomer', owner_email: 'Newcomer@example.com' },
        ],
        { batchId: 'late-flag', createMissingOwners: true },
      );
      expect(again.summary).toMatchObject({ queued: 0, alreadyInBatch: 2, notApplied: ['createMissingOwners'] });
      // A retry that queues no row records nothing with the batch.
      expect(await batch.retryRows([99], { createMissingOwners: true, trustAccounts: ['nobody@example.com'] })).toEqual([]);
      expect((await batch.status())?.options).not.toHaveProperty('trustAccounts');
      expect((await batch.status())?.options).not.toHaveProperty('createMissingOwners');
      expect(await batch.retryFailed({ createMissingOwners: true })).toBe(1);
      expect(await batch.done(100)).toMatchObject({ succeeded: true, counts: { created: 2, failed: 0 } });
    });
    const report = await batch.report();
    expect(report.map((r) => [r.line, r.outcome, r.accountsCreated])).toEqual([
      [1, 'created', null],
      [2, 'created', ['newcomer@example.com']],
    ]);
    const { rows } = await env.db.query(`SELECT status FROM accounts WHERE lower(email) = 'newcomer@example.com'`);
    expect(rows).toEqual([{ status: 'pending' }]);
    // Recorded as asked; the created row's spec says it created missing accounts, the other row's is as it was.
    expect((await batch.status())?.options).toMatchObject({ createMissingOwners: true });
    const { rows: specs } = await env.db.query(
      `SELECT line, spec->'createMissingAccounts' AS c FROM dify_provision.rows WHERE batch_id = 'late-flag' ORDER BY line`,
    );
    expect(specs).toEqual([
      { line: 1, c: false },
      { line: 2, c: true },
    ]);
  });

  it('create-missing-owners creates a pending account once, even when two rows name the same new email', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => ({
      workspace_name: `New ${i}`,
      owner_email: i % 2 === 0 ? 'Fresh@Example.com' : 'fresh@example.com',
      members: i === 0 ? [{ email: 'newbie@example.com', role: 'editor' }] : [],
    }));
    const batch = await provisioner.enqueue(rows, { batchId: 'fresh', createMissingOwners: true });
    const final = await withWorker(() => batch.done(100));
    expect(final.counts.created).toBe(6);
    const { rows: accounts } = await env.db.query(
      `SELECT email, name, status, password, interface_language, interface_theme, timezone FROM accounts WHERE email IN ('fresh@example.com', 'newbie@example.com') ORDER BY email`,
    );
    expect(accounts).toEqual([
      {
        email: 'fresh@example.com',
        name: 'fresh',
        status: 'pending',
        password: null,
        interface_language: 'en-US',
        interface_theme: 'light',
        timezone: 'America/New_York',
      },
      {
        email: 'newbie@example.com',
        name: 'newbie',
        status: 'pending',
        password: null,
        interface_language: 'en-US',
        interface_theme: 'light',
        timezone: 'America/New_York',
      },
    ]);
    const created = (await batch.report()).flatMap((r) => r.accountsCreated ?? []);
    expect(created.sort()).toEqual(['fresh@example.com', 'newbie@example.com']);
    // As Dify's invite: the new member is switched into its workspace; a new owner is not.
    const { rows: current } = await env.db.query(
      `SELECT a.email, j.role, j.current, j.last_opened_at IS NOT NULL AS opened FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id
        WHERE a.email IN ('fresh@example.com', 'newbie@example.com') ORDER BY a.email, j.role`,
    );
    expect(current).toEqual([
      ...Array.from({ length: 6 }, () => ({ email: 'fresh@example.com', role: 'owner', current: false, opened: false })),
      { email: 'newbie@example.com', role: 'editor', current: true, opened: true },
    ]);
  });

  it('an email that matches two accounts is an error, never a guess, even with create-missing-owners', async () => {
    await env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Twin', 'OWNER1@example.com', 'active')`);
    const batch = await provisioner.enqueue([{ workspace_name: 'Twins', owner_email: 'owner1@example.com' }], {
      batchId: 'twins',
      createMissingOwners: true,
    });
    await withWorker(() => batch.done(100));
    expect((await batch.report())[0]).toMatchObject({
      outcome: 'failed',
      error: expect.stringContaining('more than one Dify account has the email'),
    });
  });

  it('cancel stops waiting jobs; nothing more is created and the report says cancelled', async () => {
    const rows = Array.from({ length: 8 }, (_, i) => ({ workspace_name: `C ${i}`, owner_email: `owner${i + 1}@example.com` }));
    const batch = await provisioner.enqueue(rows, { batchId: 'cancel-me' });
    expect(await batch.cancel()).toBe(8);
    const final = await withWorker(async () => {
      await new Promise((r) => setTimeout(r, 300));
      return batch.done(100);
    });
    expect(final.counts).toMatchObject({ cancelled: 8, created: 0 });
    expect((await env.db.query(`SELECT count(*)::int AS n FROM tenants`)).rows[0].n).toBe(0);
    expect((await provisioner.batches())[0]).toMatchObject({ batchId: 'cancel-me', state: 'cancelled', total: 8 });
    expect((await batch.report()).every((r) => r.outcome === 'cancelled')).toBe(true);
  });

  it('plans a dry run against the database: would create, existing, invalid, failing', async () => {
    const done = await provisioner.enqueue([{ workspace_name: 'Exists', owner_email: 'owner1@example.com' }], { batchId: 'p0' });
    await withWorker(() => done.done(100));
    await env.db.query(`INSERT INTO tenants (id, name) VALUES ('6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20', 'taken')`);
    const plan = await provisioner.plan(
      csv([
        { workspace_name: 'Exists', owner_email: 'owner1@example.com', workspace_id: '' },
        { workspace_name: 'New', owner_email: 'owner2@example.com', workspace_id: '' },
        { workspace_name: 'Nobody', owner_email: 'nobody@example.com', workspace_id: '' },
        { workspace_name: 'Taken', owner_email: 'owner3@example.com', workspace_id: '6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20' },
        { workspace_name: 'Bad', owner_email: 'bad', workspace_id: '' },
      ]),
    );
    expect(plan).toMatchObject({ total: 5, wouldCreate: 1, existing: 1, rejected: 1, wouldFail: 2 });
    expect(plan.problems.map((p) => `${p.line} ${p.field}`)).toEqual(['4 owner_email', '5 workspace_id', '6 owner_email']);
  });
});

describe('a worker when Redis stops answering on an open connection', () => {
  it('says so (no error comes: Redis paused or stuck), says when it answers again, and works on', async () => {
    // ioredis raises nothing while a connection stays open and nothing answers, and a worker's
    // commands never give up: the worker waited without a word. A PING with a deadline finds it.
    const proxy = await tcpProxy(Number(new URL(env.config.redisUrl).port));
    const said: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void said.push(String(JSON.parse(line).msg)) });
    const w = await runWorker(
      { ...env.config, redisUrl: `redis://127.0.0.1:${proxy.port}` },
      { concurrency: 2, logger, redisHeartbeat: { intervalMs: 100, answerMs: 500 } },
    );
    try {
      proxy.freeze();
      await waitFor(async () => said.some((m) => m.startsWith('Redis unreachable')), 'the worker to say Redis does not answer', 60_000);
      expect(said.find((m) => m.startsWith('Redis unreachable'))).toBe(
        `Redis unreachable at redis://127.0.0.1:${proxy.port}: no answer to a PING within 0.5 s on an open connection (Redis paused, stuck, or cut off without a reset) — check the Redis settings (REDIS_URL, or Dify's REDIS_*) and that Redis is running; retrying quietly with backoff (a line a minute while it lasts)`,
      );
      proxy.thaw();
      await waitFor(async () => said.some((m) => m.startsWith('Redis reachable again')), 'the worker to say Redis answers again', 60_000);
      const rows = [1, 2].map((i) => ({ workspace_name: `Thawed ${i}`, owner_email: `owner${i}@example.com` }));
      expect((await (await provisioner.enqueue(rows, { batchId: 'thawed' })).done(100)).counts.created).toBe(2);
    } finally {
      proxy.thaw();
      await w.close();
      await proxy.cut();
    }
  });
});

describe('ingest when Redis is down', () => {
  it('says so at once, naming the URL without its password', async () => {
    await expect(createProvisioner({ ...env.config, redisUrl: 'redis://user:s3cret@127.0.0.1:1' })).rejects.toThrow(
      /^cannot reach Redis at redis:\/\/user:\*\*\*@127\.0\.0\.1:1: .* — check the Redis settings \(REDIS_URL, or Dify's REDIS_\*\) and that Redis is running$/,
    );
  });

  it('mid-ingest: fails, keeps the rows it recorded, and a re-run of the same batch queues them', async () => {
    const rows = Array.from({ length: 5 }, (_, i) => ({ workspace_name: `Down ${i}`, owner_email: `owner${i + 1}@example.com` }));
    // Redis goes away for this provisioner only, after it connected: through a proxy that is cut.
    const proxy = await tcpProxy(Number(new URL(env.config.redisUrl).port));
    const own = await createProvisioner({ ...env.config, redisUrl: `redis://127.0.0.1:${proxy.port}` });
    await proxy.cut();
    await expect(own.enqueue(rows, { batchId: 'down' })).rejects.toThrow(
      /max retries per request|Connection is closed|ECONNRESET|ECONNREFUSED/,
    );
    await own.close().catch(() => {});
    const recorded = await env.db.query(
      `SELECT count(*)::int AS n FROM dify_provision.rows WHERE batch_id = 'down' AND outcome = 'queued'`,
    );
    expect(recorded.rows[0].n).toBe(5);

    const again = await provisioner.enqueue(rows, { batchId: 'down' });
    expect(again.summary).toMatchObject({ queued: 0, alreadyInBatch: 5 });
    const final = await withWorker(() => again.done(100));
    expect(final.counts.created).toBe(5);
  });

  it('mid-ingest, Redis paused (its connection stays open, nothing answers): fails instead of waiting for good, keeps the rows, and a re-run queues them', async () => {
    // No error and no reconnection, so ioredis' retries never start: the ingest waited forever,
    // its batch's transaction and lock held. A producer's command is now bounded.
    const rows = Array.from({ length: 5 }, (_, i) => ({ workspace_name: `Paused ${i}`, owner_email: `owner${i + 1}@example.com` }));
    const proxy = await tcpProxy(Number(new URL(env.config.redisUrl).port));
    const own = provisionerOn(
      await openQueueRuntime(ConfigSchema.parse({ ...env.config, redisUrl: `redis://127.0.0.1:${proxy.port}` }), {
        logger: pino({ level: 'silent' }),
        redisCommandTimeoutMs: 500,
      }),
    );
    proxy.freeze();
    try {
      await expect(own.enqueue(rows, { batchId: 'paused' })).rejects.toThrow(/Command timed out/);
      expect(await own.workers()).toBe('unreachable');
    } finally {
      await proxy.cut(); // what it held is dropped: nothing of this ingest reaches Redis later
      await own.close().catch(() => {});
    }
    const recorded = await env.db.query(
      `SELECT count(*)::int AS n FROM dify_provision.rows WHERE batch_id = 'paused' AND outcome = 'queued'`,
    );
    expect(recorded.rows[0].n).toBe(5);
    const again = await provisioner.enqueue(rows, { batchId: 'paused' });
    expect(again.summary).toMatchObject({ queued: 0, alreadyInBatch: 5 });
    expect((await withWorker(() => again.done(100))).counts.created).toBe(5);
  });
});
