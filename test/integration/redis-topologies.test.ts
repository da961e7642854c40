// Redis as Dify's operators run it: a 3-master Cluster (seeded by a node that does not own the
// queue's slot, with that owner restarted mid-batch), Sentinel with a failover mid-batch, and TLS
// with an ACL user. Every batch ends with each row answered once and each workspace created once.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/config.js';
import { workersServing } from '../../src/queue/connection.js';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { waitFor } from '../../src/services/local-services.js';
import { waitForBatch } from '../../src/store/batches.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { csvOf, ingestCsv } from '../helpers/batch.js';
import { keyPairWorks } from '../helpers/dify-checks.js';
import { startCluster, startSentinel, startTls, type TestCluster, type TestSentinel, type TestTls } from '../helpers/redis-topologies.js';
import { type TestEnv } from '../helpers/test-env.js';
import { freshEnvEachTest } from '../helpers/world.js';

let dir: string;
let env: TestEnv;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-redis-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
freshEnvEachTest((e) => (env = e), { accounts: 40 });

const rows = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ workspace_name: `Topo ${i}`, owner_email: `owner${(i % 40) + 1}@example.com` }));

/** Ingests n rows, runs a worker, calls `during` once a few rows are done, and checks the end state. */
async function batchThrough(config: Config, n: number, during: () => Promise<void>): Promise<void> {
  const cfg = {
    ...env.config,
    ...config,
    databaseUrl: env.config.databaseUrl,
    storageDir: env.config.storageDir,
    queuePrefix: '{dify-provision}',
  };
  await ingestCsv({ ...env, config: cfg }, csvOf(rows(n)), 'topo');
  // BullMQ's worker census (CLIENT LIST, every node of a Cluster) sees the worker come and go.
  const producer = await openQueueRuntime(cfg);
  const workers = (n: number) => waitFor(async () => (await workersServing(producer.queue)) === n, `${n} worker(s) listed`, 60_000);
  const worker = await runWorker(cfg, { concurrency: 4, logger: pino({ level: 'silent' }) });
  try {
    await workers(1);
    for (;;) {
      const { rows: done } = await env.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM dify_provision.rows WHERE outcome = 'created'`,
      );
      if (done[0]!.n >= 5) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await during();
    const status = await waitForBatch(env.db, 'topo', { intervalMs: 200 });
    expect(status.counts).toMatchObject({ created: n, failed: 0, queued: 0, active: 0 });
    await workers(1); // named again after a reconnect
    await worker.close();
    await workers(0);
  } finally {
    await worker.close();
    await producer.close();
  }
  const { rows: counts } = await env.db.query(
    `SELECT (SELECT count(*)::int FROM tenants) AS tenants, (SELECT count(*)::int FROM dify_provision.ledger) AS ledger`,
  );
  expect(counts).toEqual([{ tenants: n, ledger: n }]);
  const { rows: ids } = await env.db.query<{ id: string }>(`SELECT id FROM tenants LIMIT 3`);
  for (const { id } of ids) expect(await keyPairWorks(env, id)).toBe(true);
}

describe('Redis Cluster', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startCluster(join(dir, 'cluster'));
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("works from Dify's own variables seeded by a node that does not own the queue's slot, through a restart of the owner", async () => {
    const owner = await cluster.ownerOf('{dify-provision}');
    const seed = cluster.nodes.find((n) => n !== owner)!;
    const config = loadConfig({ REDIS_USE_CLUSTERS: 'true', REDIS_CLUSTERS: `127.0.0.1:${seed.port}` });
    expect(config.redis).toMatchObject({ kind: 'cluster', nodes: [{ host: '127.0.0.1', port: seed.port }] });
    await batchThrough(config, 40, async () => {
      await owner.stop();
      await new Promise((r) => setTimeout(r, 1500));
      await owner.start();
    });
  });
});

describe('Redis Sentinel', () => {
  let sentinel: TestSentinel;
  beforeAll(async () => {
    sentinel = await startSentinel(join(dir, 'sentinel'));
  }, 60_000);
  afterAll(async () => {
    await sentinel?.stop();
  });

  it("works from Dify's sentinel variables through a SENTINEL FAILOVER mid-batch", async () => {
    const config = loadConfig({
      REDIS_USE_SENTINEL: 'true',
      REDIS_SENTINELS: `127.0.0.1:${sentinel.sentinel.port}`,
      REDIS_SENTINEL_SERVICE_NAME: sentinel.name,
    });
    const before = await sentinel.masterPort();
    await batchThrough(config, 40, () => sentinel.failover());
    expect(await sentinel.masterPort()).not.toBe(before);
  });
});

describe('TLS and ACL users', () => {
  let tls: TestTls;
  beforeAll(async () => {
    tls = await startTls(join(dir, 'tls'), 'pr0v!s10n');
  }, 60_000);
  afterAll(async () => {
    await tls?.stop();
  });

  it('connects with rediss://user:password@ and the CA file named by REDIS_SSL_CA_CERTS', async () => {
    const config = loadConfig({
      REDIS_URL: `rediss://provisioner:${encodeURIComponent('pr0v!s10n')}@127.0.0.1:${tls.port}`,
      REDIS_SSL_CA_CERTS: tls.caFile,
    });
    await batchThrough(config, 10, async () => {});
  });

  it("also from Dify's REDIS_HOST/REDIS_USE_SSL variables, and refuses a wrong password clearly without printing it", async () => {
    const difyEnv = {
      REDIS_HOST: '127.0.0.1',
      REDIS_PORT: String(tls.port),
      REDIS_USERNAME: 'provisioner',
      REDIS_USE_SSL: 'true',
      REDIS_SSL_CA_CERTS: tls.caFile,
    };
    const good = loadConfig({ ...difyEnv, REDIS_PASSWORD: 'pr0v!s10n' });
    await batchThrough(good, 5, async () => {});
    const bad = loadConfig({ ...difyEnv, REDIS_PASSWORD: 'wrong-secret' });
    const err = await ingestCsv(
      { ...env, config: { ...env.config, ...bad, databaseUrl: env.config.databaseUrl } },
      csvOf(rows(1)),
      'bad',
    ).catch((e: Error) => e);
    expect(String(err)).toMatch(/cannot reach Redis at rediss:\/\/provisioner:\*\*\*@127\.0\.0\.1/);
    expect(String(err)).not.toContain('wrong-secret');
  });
});
