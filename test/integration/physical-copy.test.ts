// A physical copy of a Dify database (pg_basebackup, as staging is made from production) carries
// its identity, so its queue too. The copy's workers must create nothing of the original's rows
// and hold, saying what happened and what to run on the copy, while production's keep creating
// every row production owns; the command must give the copy its own queue. A restart of the real
// server must not strand its rows. Each of the two guards (the worker's per-job lineage check,
// startAttempt's) is pinned down on its own. On a PostgreSQL of this test's own (it is copied,
// restarted and crashed), with a real pg_basebackup.
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
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
import { registryKey } from '../../src/queue/server-watch.js';
import { startAttempt } from '../../src/store/rows.js';
import { observeServer } from '../../src/store/server.js';
import type { JobData } from '../../src/queue/contract.js';
import { randomUUID } from 'node:crypto';
import { runWorker, type RunningWorker } from '../../src/worker/run-worker.js';
import { runCli, startCli } from '../helpers/cli.js';
import { tcpProxy } from '../helpers/tcp-proxy.js';

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

/** Each server's newest entry in the queue's registry, as the servers wrote it (no judgement involved). */
async function registry(prefix: string, queueName: string): Promise<{ lineage: string; started: bigint; seen: bigint }[]> {
  const redis = new Redis(services.redisUrl, { lazyConnect: true });
  try {
    const raw = Object.values(await redis.hgetall(registryKey(prefix, queueName)));
    return raw
      .map((r) => JSON.parse(r) as { lineage: string; started: string; seen: string })
      .map((e) => ({
        lineage: e.lineage,
        started: BigInt(e.started),
        seen: BigInt(e.seen),
      }));
  } finally {
    redis.disconnect();
  }
}

describe('a physical copy of the Dify database', () => {
  it("holds the copy's workers, saying so and what to run there, while production's create every row it owns; the command gives the copy its own queue", async () => {
    const prod = await difyDatabase('dify_prod', '{dp-copy}');
    const ingest = await provisioner(prod);
    const ingested = await ingest.enqueue(rows('Prod', 8), { batchId: 'wave', retry: { attempts: 3, backoffMs: 50 } });
    expect(ingested.summary.queued).toBe(8);
    await ingest.close(); // nothing of ours stays connected to production

    const copy = await services.copyPostgres();
    closers.push(() => copy.stop());
    const staging = await side('staging', urlOf(copy.databaseUrl, 'dify_prod'), '{dp-copy}');
    // The threat is real: the copy has production's identity, queue and queued rows.
    const queueName = (await difyIdentity(prod.db)).queueName;
    expect((await difyIdentity(staging.db)).queueName).toBe(queueName);
    expect((await getBatchStatus(staging.db, 'wave'))!.counts.queued).toBe(8);

    // Staging's worker alone (nothing of ours runs on production): it sees every job and leaves it.
    let stagingMoved = false;
    const stagingWorker = await worker(staging, () => (stagingMoved = true));
    // Each job is either left for another server or run here (what the attack achieves without the guards).
    const left = () => stagingWorker.log.filter((l) => l.outcome === 'left' && /another PostgreSQL/.test(String(l.msg)));
    const handled = () =>
      new Set([
        ...left().map((l) => l.jobId),
        ...stagingWorker.log.flatMap((l) => (l.line !== undefined && l.outcome ? [`line ${l.line}`] : [])),
      ]).size;
    await waitFor(async () => handled() >= 8, "staging's worker to see each of production's 8 jobs", LONG);
    expect(await tenantNames(staging)).toEqual([]);
    expect((await getBatchStatus(staging.db, 'wave'))!.counts).toMatchObject({ queued: 8, active: 0, created: 0 });
    // The worker's own per-job check left each one, from its cached lineages (no statement on the
    // row): startAttempt's check (which says "row wave:N was …") never had to answer.
    expect(new Set(left().map((l) => l.msg))).toEqual(new Set(['queued on another PostgreSQL server']));
    const stagingSide = await provisioner(staging);
    const stagingStatus = await stagingSide.serverStatus('wave');
    expect(stagingStatus.otherServers).toEqual([{ lineage: expect.any(String), rows: 8 }]);

    // Production's worker: two live servers claim one identity. Once each server's entry says it
    // answered after the other started (what the servers wrote, whatever anyone judged), each
    // side's judgement is read at once: the copy holds, production runs.
    const prodWorker = await worker(prod);
    const prodSide = await provisioner(prod);
    const [prodLineage, stagingLineage] = [(await prodSide.serverStatus()).lineage, stagingStatus.lineage];
    await waitFor(
      async () => {
        const entries = await registry('{dp-copy}', queueName);
        const p = entries.filter((e) => e.lineage === prodLineage);
        const c = entries.filter((e) => e.lineage === stagingLineage);
        return p.some((pe) => c.some((ce) => pe.seen > ce.started && ce.seen > pe.started));
      },
      'production and staging each to answer after the other started',
      LONG,
    );
    const copyView = await stagingSide.serverStatus('wave');
    expect(copyView.gate).toBe('conflict');
    expect(copyView.message).toMatch(
      new RegExp(`^physical copy: this PostgreSQL server \\(lineage ${stagingLineage} .*lineage ${prodLineage} `),
    );
    expect(copyView.message).toContain('On this server (the copy), not on the original, run `dify-provision identity --new`');
    const originalView = await prodSide.serverStatus('wave');
    expect(originalView).toMatchObject({ gate: 'open', otherServers: [] });
    expect(originalView.message).toMatch(new RegExp(`^a physical copy of this database shares queue .*lineage ${stagingLineage} `));

    // Production creates every row it owns while the copy's worker holds (paused, saying why).
    expect((await waitForBatch(prod.db, 'wave', { intervalMs: 200 })).counts).toMatchObject({ created: 8, failed: 0 });
    expect(await tenantNames(prod)).toEqual(rows('Prod', 8).map((r) => r.workspace_name));
    await waitFor(async () => said(stagingWorker.log, /^physical copy: /), "staging's worker to say it holds", LONG);
    expect(stagingWorker.w.worker.isPaused()).toBe(true);
    expect(said(prodWorker.log, /^a physical copy of this database shares queue/)).toBe(true);
    expect(prodWorker.w.worker.isPaused()).toBe(false);
    expect(await tenantNames(staging)).toEqual([]);
    expect((await getBatchStatus(staging.db, 'wave'))!.counts).toMatchObject({ queued: 8, created: 0 });
    const status = await runCli(['status', 'wave'], staging.env);
    expect(status.stdout).toContain('warning: physical copy:');
    expect(status.stdout).toContain('dify-provision identity --new');
    expect((await runCli(['status', 'wave'], prod.env)).stdout).toContain('warning: a physical copy of this database shares queue');

    // The command, on the copy: its workers stop; production goes on as it did.
    const ran = await runCli(['identity', '--new'], staging.env);
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    expect(ran.stdout).toContain('8 row(s) still open here were cancelled');
    await waitFor(async () => stagingMoved, "staging's worker to stop on its changed identity", LONG);
    expect(await tenantNames(staging)).toEqual([]);
    expect((await getBatchStatus(staging.db, 'wave'))!.counts).toMatchObject({ cancelled: 8, created: 0 });
    await prodSide.enqueue(rows('Later', 2), { batchId: 'later' });
    expect((await waitForBatch(prod.db, 'later', { intervalMs: 200 })).counts.created).toBe(2);

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

  it("a restart while a workspace's transaction waits between statements (its key file being written) kills nothing: the worker retries the row, and it is created once", async () => {
    // PostgreSQL's shutdown tells every connection it ends ("terminating connection due to
    // administrator command"); a connection checked out of the pool, between two statements, gets
    // that as an 'error' event, which took the whole process down when nobody listened for it.
    const mid = await difyDatabase('dify_midtx', '{dp-midtx}');
    await (await provisioner(mid)).enqueue(rows('Mid', 2), { batchId: 'midtx', retry: { attempts: 5, backoffMs: 100 } });
    let entered!: () => void;
    const inDeploy = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const w = await runWorker(mid.config, {
      concurrency: 1,
      logger: pino({ level: 'silent' }),
      watch: WATCH,
      leaveMs: 500,
      wrapStorage: (real) => ({
        ...real,
        async deploy(tenantId, keys) {
          entered();
          await released;
          return real.deploy(tenantId, keys);
        },
      }),
    });
    closers.push(() => w.close());
    await inDeploy;
    await services.restartPostgres();
    release();
    const done = await waitForBatch(mid.db, 'midtx', { intervalMs: 200 });
    expect(done.counts).toMatchObject({ created: 2, failed: 0 });
    const { rows: tenants } = await mid.db.query<{ id: string }>(`SELECT id FROM tenants`);
    expect(tenants).toHaveLength(2);
    expect((await mid.db.query(`SELECT max(attempts)::int AS n FROM dify_provision.rows`)).rows[0].n).toBeGreaterThan(1);
    // The key file written for the attempt that lost its transaction is gone; each tenant has its own.
    expect((await readdir(join(mid.config.storageDir, 'privkeys'))).sort()).toEqual(tenants.map((t) => t.id).sort());
    await w.close();
  }, 120_000);

  it("following a batch (the library's done(), `wait`) goes on through a PostgreSQL restart, saying what it waits for, and ends with the batch", async () => {
    // Each poll PostgreSQL does not answer (shutting down, refused, starting up) used to end the
    // wait with that error: `ingest --wait` on a long batch died with every restart or failover.
    const follow = await difyDatabase('dify_follow', '{dp-follow}');
    const p = await provisioner(follow);
    await p.enqueue(rows('Follow', 3), { batchId: 'follow' });
    const heard: string[] = [];
    const following = p
      .batch('follow')
      .done(50, (why) => heard.push(why))
      .then(
        (status) => ({ status }),
        (error: unknown) => ({ error }),
      );
    const reports = join(dir, 'follow-reports');
    const cli = startCli(['wait', 'follow', '--report-dir', reports], follow.env);
    closers.push(() => cli.stop('SIGKILL'));
    const cliEnded = cli.exited.then((code) => `exited ${code}: ${cli.output()}`);
    await waitFor(async () => cli.output().includes('progress follow: 0/3'), '`wait` to follow the batch', LONG);
    // A restart is over in about a second; a poll a second lands in it, at the latest after a few.
    for (let i = 0; i < 10 && !(heard.length > 0 && cli.output().includes('waiting: PostgreSQL does not answer')); i++)
      await services.restartPostgres();
    // Neither stopped following.
    expect(await Promise.race([following, 'following'])).toBe('following');
    expect(await Promise.race([cliEnded, 'following'])).toBe('following');
    expect(heard[0]).toMatch(/^PostgreSQL does not answer \(.+\): no row can move until it does; still waiting$/);
    expect(cli.output()).toMatch(/^waiting: PostgreSQL does not answer \(.+\): no row can move until it does; still waiting$/m);
    await worker(follow);
    const followed = await following;
    expect(followed).toMatchObject({ status: { done: true, counts: { created: 3 } } });
    expect(await cli.exited).toBe(0);
    expect(cli.output()).toContain('batch follow done');
  }, 300_000);

  it("a worker's connections to PostgreSQL and Redis are probed by TCP keepalive: a server gone without a word (its host lost in a failover) fails them instead of leaving a statement waiting forever", async () => {
    // A statement already sent to a server that vanished (no FIN, no RST) is never answered: without
    // keepalive pg waited for good, the row stayed active and its job's lock was renewed forever.
    // The kernel's keepalive timer on each connection (tr 02 in /proc/net/tcp) is what ends that
    // wait; it fires after our idle delay, not the system's two hours.
    const ka = await difyDatabase('dify_keepalive', '{dp-keepalive}');
    await (await provisioner(ka)).enqueue(rows('Alive', 1), { batchId: 'alive' });
    const { w } = await worker(ka);
    expect((await waitForBatch(ka.db, 'alive', { intervalMs: 100 })).counts.created).toBe(1);
    const pgPort = Number(new URL(services.databaseUrl).port);
    const redisPort = Number(new URL(services.redisUrl).port);
    // Every connection of this process to either server, by the server's port: [our port, timer, ticks to it].
    const connections = async (serverPort: number) => {
      const lines = (await readFile('/proc/net/tcp', 'utf8')).trim().split('\n').slice(1);
      return lines.flatMap((l) => {
        const [, local, remote, state, , timer] = l.trim().split(/\s+/);
        const [tr, when] = timer!.split(':');
        // 01: established.
        return state === '01' && parseInt(remote!.split(':')[1]!, 16) === serverPort
          ? [{ port: parseInt(local!.split(':')[1]!, 16), tr, ticks: parseInt(when!, 16) }]
          : [];
      });
    };
    const { rows: pids } = await ka.db.query<{ port: number }>(
      `SELECT client_port AS port FROM pg_stat_activity WHERE datname = 'dify_keepalive' AND application_name = 'dify-provision'`,
    );
    const workerPg = (await connections(pgPort)).filter((c) => pids.some((p) => p.port === c.port));
    expect(workerPg.length).toBeGreaterThan(0);
    // Keepalive timer pending, due within our 30 s (USER_HZ ticks, 100 a second), on each.
    for (const c of workerPg) expect(c).toMatchObject({ tr: '02', ticks: expect.any(Number) });
    expect(Math.max(...workerPg.map((c) => c.ticks))).toBeLessThanOrEqual(3000);
    // Redis: ioredis' own keepalive (30 s), on every connection of this process (the worker's, BullMQ's blocking one).
    const toRedis = await connections(redisPort);
    expect(toRedis.length).toBeGreaterThan(0);
    for (const c of toRedis) expect(c.tr).toBe('02');
    await w.close();
  }, 120_000);

  it('a failover to a standby that was up long before keeps a worker connected across it running: the server it left is its predecessor, not a live original it is a copy of', async () => {
    // The old server answered last after the standby started (the standby was up all along), so
    // "seen before this one started" did not hold: the worker paused and said to run
    // `identity --new` on production, the very command that cancels its open rows.
    await difyDatabase('dify_failover', '{dp-failover}');
    const proxy = await tcpProxy(Number(new URL(services.databaseUrl).port));
    closers.push(() => proxy.cut());
    const prod = await side('failover', urlOf(`postgres://postgres@127.0.0.1:${proxy.port}/postgres`, 'dify_failover'), '{dp-failover}');
    const p = await provisioner(prod);
    const { queueName } = await difyIdentity(prod.db);
    const { w, log } = await worker(prod);
    const lineage = (await p.serverStatus()).lineage;
    const standby = await services.copyPostgres();
    closers.push(() => standby.stop());
    const standbyDb = createPool(urlOf(standby.databaseUrl, 'dify_failover'), 1);
    closers.push(() => standbyDb.end());
    const { rows: up } = await standbyDb.query<{ t: string }>(
      `SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text AS t`,
    );
    await waitFor(
      async () => (await registry('{dp-failover}', queueName)).some((e) => e.lineage === lineage && e.seen > BigInt(up[0]!.t)),
      'the old server to answer after the standby started',
      LONG,
    );
    proxy.failover(Number(new URL(standby.databaseUrl).port));
    await waitFor(async () => said(log, /^PostgreSQL restarted after a crash or failed over/), 'the worker to see the failover', LONG);
    // A worker started now, while the old server's entry is still live, never saw the old server:
    // the database's own record (its predecessor) says what it is, and it waits for it to age out.
    const late = await worker(prod);
    await p.enqueue(rows('Failover', 3), { batchId: 'failover' });
    expect((await waitForBatch(prod.db, 'failover', { intervalMs: 100 })).counts).toMatchObject({ created: 3, failed: 0 });
    for (const l of [log, late.log])
      expect(l.filter((m) => /^physical copy: |^identity conflict/.test(String(m.msg))).map((m) => m.msg)).toEqual([]);
    await waitFor(async () => !late.w.worker.isPaused(), 'the late worker to take jobs', LONG);
    expect(w.worker.isPaused()).toBe(false);
    await Promise.all([w.close(), late.w.close()]);
  }, 300_000);

  it("a PostgreSQL outage longer than a row's retries fails no row: its jobs go back to the queue, the attempts not counted, and run once the server answers", async () => {
    const direct = await difyDatabase('dify_outage', '{dp-outage}');
    const proxy = await tcpProxy(Number(new URL(services.databaseUrl).port));
    closers.push(() => proxy.cut());
    const through = await side('outage', urlOf(`postgres://postgres@127.0.0.1:${proxy.port}/postgres`, 'dify_outage'), '{dp-outage}');
    const { w, log } = await worker(through);
    await waitFor(async () => !w.worker.isPaused(), 'the worker to take jobs', LONG);
    const { queueName } = await difyIdentity(direct.db);
    const redis = new Redis(services.redisUrl);
    closers.push(async () => redis.disconnect());
    const failedJobs = () => redis.zcard(`{dp-outage}:${queueName}:failed`);
    // The worker's server goes away; two rows with two attempts each are queued meanwhile.
    proxy.outage();
    await (await provisioner(direct)).enqueue(rows('Outage', 2), { batchId: 'outage', retry: { attempts: 2, backoffMs: 50 } });
    const away = () => log.filter((l) => /PostgreSQL does not answer/.test(String(l.msg))).length;
    await waitFor(async () => away() >= 6 || (await failedJobs()) > 0, 'the worker to try each row more times than its attempts', LONG);
    expect(await failedJobs()).toBe(0);
    proxy.restore();
    expect((await waitForBatch(direct.db, 'outage', { intervalMs: 200 })).counts).toMatchObject({ created: 2, failed: 0 });
    expect((await direct.db.query(`SELECT max(attempts)::int AS n FROM dify_provision.rows WHERE batch_id = 'outage'`)).rows[0].n).toBe(1);
    expect(await failedJobs()).toBe(0);
    await w.close();
  }, 300_000);

  it("startAttempt, on its own, starts a row only if its lineage is in the worker's chain and the server still has the lineage that chain was read for", async () => {
    // The worker's per-job check reads the same cached chain; here the row's first statement is
    // asked directly, as a worker whose cache is wrong or stale would ask it.
    const guard = await difyDatabase('dify_guard', '{dp-guard}');
    await (await provisioner(guard)).enqueue(rows('Guard', 1), { batchId: 'guard' });
    const { lineage, chain } = await observeServer(guard.db);
    const row = async () =>
      (
        await guard.db.query<{ spec: JobData; outcome: string; attempts: number }>(
          `SELECT spec, outcome, attempts FROM dify_provision.rows WHERE batch_id = 'guard'`,
        )
      ).rows[0]!;
    const start = async (spec: JobData, own: { lineage: string; chain: string[] }) =>
      (await startAttempt(guard.db, spec, 1, 1, [spec.ownerEmail], { normalized: false }, own)).ours;
    const queued = await row();
    expect(queued.spec.lineage).toBe(lineage);

    // A row queued under a lineage this server does not descend from (the server it was copied from).
    const foreign = { ...queued.spec, lineage: randomUUID() };
    await guard.db.query(`UPDATE dify_provision.rows SET spec = $1 WHERE batch_id = 'guard'`, [JSON.stringify(foreign)]);
    expect(await start(foreign, { lineage, chain })).toBe(false);
    expect(await row()).toMatchObject({ outcome: 'queued', attempts: 0 });
    await guard.db.query(`UPDATE dify_provision.rows SET spec = $1 WHERE batch_id = 'guard'`, [JSON.stringify(queued.spec)]);

    // A chain read for a lineage the server no longer has (the cache of a worker now answered by another server).
    expect(await start(queued.spec, { lineage: randomUUID(), chain: [...chain] })).toBe(false);
    expect(await row()).toMatchObject({ outcome: 'queued', attempts: 0 });

    // The server's own lineage and chain: started.
    expect(await start(queued.spec, { lineage, chain })).toBe(true);
    expect(await row()).toMatchObject({ outcome: 'active', attempts: 1 });
  }, 120_000);
});
