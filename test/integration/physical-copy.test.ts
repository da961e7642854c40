// A physical copy of a Dify database (pg_basebackup, as staging is made from production) carries
// its identity, so its queue too. The copy's workers must create nothing of the original's rows,
// both servers' workers must stop and say what to run, and the command must give the copy its own
// queue. A restart of the real server must not strand its rows. On a PostgreSQL of this test's
// own (it is copied, restarted and crashed), with a real pg_basebackup.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema, type Config } from '../../src/config/config.js';
import { createPool, type Db } from '../../src/db/pool.js';
import { provisionerOn, type Provisioner } from '../../src/provisioner.js';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { createDifyDatabase } from '../../src/services/dify-database.js';
import { startLocalServices, waitFor, type LocalServices } from '../../src/services/local-services.js';
import { getBatchStatus, waitForBatch } from '../../src/store/batches.js';
import { difyIdentity } from '../../src/store/instance.js';
import { runWorker, type RunningWorker } from '../../src/worker/run-worker.js';
import { runCli } from '../helpers/cli.js';

const WATCH = { intervalMs: 300, liveMs: 10_000 };
const LONG = 120_000;

let services: LocalServices;
let dir: string;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-copy-'));
  services = await startLocalServices({});
}, LONG);
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => {});
  await services?.stop();
  await rm(dir, { recursive: true, force: true });
}, LONG);

interface Side {
  name: string;
  config: Config & { redisUrl: string; databaseUrl: string; storageDir: string };
  db: Db;
  env: NodeJS.ProcessEnv;
}

const urlOf = (serverUrl: string, database: string) => Object.assign(new URL(serverUrl), { pathname: `/${database}` }).toString();

async function side(name: string, databaseUrl: string, prefix: string): Promise<Side> {
  const storageDir = join(dir, `storage-${name}`);
  await mkdir(storageDir, { recursive: true });
  const config = {
    ...ConfigSchema.parse({ queuePrefix: prefix, trialCredits: 200, logLevel: 'silent' }),
    redisUrl: services.redisUrl,
    databaseUrl,
    storageDir,
  };
  const db = createPool(databaseUrl, 3, 'dify-provision-test');
  closers.push(() => db.end());
  const env = {
    ...process.env,
    REDIS_URL: services.redisUrl,
    DATABASE_URL: databaseUrl,
    DIFY_STORAGE_DIR: storageDir,
    DIFY_PROVISION_QUEUE_PREFIX: prefix,
    LOG_LEVEL: 'silent',
  };
  return { name, config, db, env };
}

async function difyDatabase(name: string, prefix: string): Promise<Side> {
  const seed = `INSERT INTO accounts (name, email, status)
                SELECT 'Owner ' || i, 'owner' || i || '@example.com', 'active' FROM generate_series(1, 5) AS i`;
  return side(name, await createDifyDatabase(services.databaseUrl, name, { seedSql: seed }), prefix);
}

async function provisioner(s: Side): Promise<Provisioner> {
  const p = provisionerOn(await openQueueRuntime(s.config, { logger: pino({ level: 'silent' }), watch: WATCH }));
  closers.push(() => p.close());
  return p;
}

const rows = (tag: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({ workspace_name: `${tag} ${i}`, owner_email: `owner${(i % 5) + 1}@example.com` }));

/** A worker whose log lines are kept, to wait on what it did. */
async function worker(s: Side, onIdentityMoved?: () => void): Promise<{ w: RunningWorker; log: Record<string, unknown>[] }> {
  const log: Record<string, unknown>[] = [];
  const logger: Logger = pino({ level: 'debug' }, { write: (line: string) => void log.push(JSON.parse(line)) });
  const w = await runWorker(s.config, {
    concurrency: 2,
    logger,
    watch: WATCH,
    leaveMs: 500,
    ...(onIdentityMoved ? { onIdentityMoved } : {}),
  });
  closers.push(() => w.close());
  return { w, log };
}

const tenantNames = async (s: Side) => (await s.db.query(`SELECT name FROM tenants ORDER BY name`)).rows.map((r) => r.name as string);
const said = (log: Record<string, unknown>[], pattern: RegExp) => log.some((l) => pattern.test(String(l.msg)));

describe('a physical copy of the Dify database', () => {
  it("creates none of the original's rows, stops both sides' workers with the command to run, and gets its own queue from it", async () => {
    const prod = await difyDatabase('dify_prod', '{dp-copy}');
    const ingest = await provisioner(prod);
    const ingested = await ingest.enqueue(rows('Prod', 8), { batchId: 'wave', retry: { attempts: 3, backoffMs: 50 } });
    expect(ingested.summary.queued).toBe(8);
    await ingest.close(); // nothing of ours stays connected to production

    const copy = await services.copyPostgres();
    closers.push(() => copy.stop());
    const staging = await side('staging', urlOf(copy.databaseUrl, 'dify_prod'), '{dp-copy}');
    // The threat is real: the copy has production's identity, queue and queued rows.
    expect((await difyIdentity(staging.db)).queueName).toBe((await difyIdentity(prod.db)).queueName);
    expect((await getBatchStatus(staging.db, 'wave'))!.counts.queued).toBe(8);

    // Staging's worker alone (nothing of ours runs on production): it sees every job and leaves it.
    let stagingMoved = false;
    const stagingWorker = await worker(staging, () => (stagingMoved = true));
    // Each job is either left (the defence) or run here (what the attack achieves without it).
    const handled = () =>
      new Set(
        stagingWorker.log.flatMap((l) =>
          l.outcome === 'left' && /another PostgreSQL/.test(String(l.msg))
            ? [l.jobId]
            : l.line !== undefined && l.outcome
              ? [`line ${l.line}`]
              : [],
        ),
      ).size;
    await waitFor(async () => handled() >= 8, "staging's worker to see each of production's 8 jobs", LONG);
    expect(await tenantNames(staging)).toEqual([]);
    expect((await getBatchStatus(staging.db, 'wave'))!.counts).toMatchObject({ queued: 8, active: 0, created: 0 });
    const stagingStatus = await (await provisioner(staging)).serverStatus('wave');
    expect(stagingStatus.otherServers).toEqual([{ lineage: expect.any(String), rows: 8 }]);

    // Production's worker: two live servers claim one identity, so both stop, saying what to run.
    const prodWorker = await worker(prod);
    await waitFor(
      async () => said(prodWorker.log, /identity conflict/) && said(stagingWorker.log, /identity conflict/),
      'both workers to report the conflict',
      LONG,
    );
    const message = String(prodWorker.log.find((l) => /identity conflict/.test(String(l.msg)))!.msg);
    expect(message).toContain('`dify-provision identity --new`');
    expect(message).toContain('that one is most likely the copy');
    expect((await getBatchStatus(prod.db, 'wave'))!.counts).toMatchObject({ queued: 8, created: 0 }); // production's worker stopped too
    const status = await runCli(['status', 'wave'], staging.env);
    expect(status.stdout).toContain('identity conflict');
    expect(status.stdout).toContain('dify-provision identity --new');
    expect(await tenantNames(staging)).toEqual([]);

    // The command, on the copy: its workers stop, production's take every row.
    const ran = await runCli(['identity', '--new'], staging.env);
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    expect(ran.stdout).toContain('8 row(s) still open here were cancelled');
    await waitFor(async () => stagingMoved, "staging's worker to stop on its changed identity", LONG);
    expect((await waitForBatch(prod.db, 'wave', { intervalMs: 200 })).counts).toMatchObject({ created: 8, failed: 0 });
    expect(await tenantNames(prod)).toEqual(rows('Prod', 8).map((r) => r.workspace_name));
    expect(await tenantNames(staging)).toEqual([]);
    expect((await getBatchStatus(staging.db, 'wave'))!.counts).toMatchObject({ cancelled: 8, created: 0 });

    // The copy has its own queue now: its own rows run there, and only there.
    expect((await difyIdentity(staging.db)).queueName).not.toBe((await difyIdentity(prod.db)).queueName);
    await (await provisioner(staging)).enqueue(rows('Staging', 3), { batchId: 'stage' });
    await worker(staging);
    expect((await waitForBatch(staging.db, 'stage', { intervalMs: 200 })).counts.created).toBe(3);
    expect(await tenantNames(staging)).toEqual(['Staging 0', 'Staging 1', 'Staging 2']);
    expect(await getBatchStatus(prod.db, 'stage')).toBeUndefined();
  }, 600_000);

  it('a restart of the real server strands nothing: a clean restart keeps its lineage; a crash is followed by a process that saw it, or adopted on request', async () => {
    const prod = await difyDatabase('dify_restart', '{dp-restart}');
    const p = await provisioner(prod);
    await p.enqueue(rows('Clean', 3), { batchId: 'clean' });
    await services.restartPostgres();
    const w = await worker(prod);
    expect((await waitForBatch(prod.db, 'clean', { intervalMs: 200 })).counts.created).toBe(3);
    await w.w.close();

    // A crash (immediate shutdown: crash recovery empties the lineage) with a process connected
    // across it (this provisioner): it records the new lineage as the old one's successor.
    await p.enqueue(rows('Crash', 3), { batchId: 'crash' });
    const before = (await p.serverStatus()).lineage;
    await services.restartPostgres({ crash: true });
    await waitFor(async () => (await p.serverStatus()).lineage !== before, 'the provisioner to see the new lineage', LONG);
    expect((await p.serverStatus('crash')).otherServers).toEqual([]);
    const w2 = await worker(prod);
    expect((await waitForBatch(prod.db, 'crash', { intervalMs: 200 })).counts.created).toBe(3);
    await w2.w.close();
    await p.close();

    // A crash no process of ours saw: the rows wait (nothing else can tell it from a copy);
    // status says so and names the lineage to adopt; after `identity --adopt` they run.
    const q = provisionerOn(await openQueueRuntime(prod.config, { logger: pino({ level: 'silent' }), watch: WATCH }));
    await q.enqueue(rows('Unseen', 2), { batchId: 'unseen' });
    const old = (await q.serverStatus()).lineage;
    await q.close();
    await services.restartPostgres({ crash: true });
    const w3 = await worker(prod);
    const status = await runCli(['status', 'unseen'], prod.env);
    expect(status.stdout).toContain(`2 row(s) wait for another PostgreSQL server (lineage ${old})`);
    expect(status.stdout).toContain(`dify-provision identity --adopt ${old}`);
    expect((await getBatchStatus(prod.db, 'unseen'))!.counts).toMatchObject({ queued: 2, created: 0 });
    const adopted = await runCli(['identity', '--adopt', old], prod.env);
    expect(adopted.code).toBe(0);
    expect((await waitForBatch(prod.db, 'unseen', { intervalMs: 200 })).counts.created).toBe(2);
    await w3.w.close();
  }, 600_000);
});
