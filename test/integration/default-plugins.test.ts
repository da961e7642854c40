// Dify 1.16+'s default plugins: with NEW_USER_DEFAULT_PLUGIN_IDS set, every workspace we create
// gets the Celery task Dify's tenant_was_created handler queues, on Dify's broker, exactly once.
// A real Celery worker (Debian's python3-celery) registers a task of that name on the `plugin`
// queue, under Dify's global_keyprefix, and records each call it runs.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { celeryMessage, queueKey } from '../../src/dify/celery.js';
import { projectFile } from '../../src/common/project-files.js';
import { freePort } from '../../src/services/local-services.js';
import { allReportRows } from '../../src/store/report.js';
import { DifyTasks, INSTALL_DEFAULT_PLUGINS } from '../../src/worker/dify-tasks.js';
import { redisConnection } from '../../src/queue/connection.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const PLUGINS = ['langgenius/openai', 'langgenius/ollama'];
const BROKER_DB = 1; // Dify's default CELERY_BROKER_URL database

interface Call {
  id: string;
  args: [string, string[]];
  kwargs: Record<string, unknown>;
  argsrepr: string;
  queue: string;
}

let env: TestEnv;
let celery: ChildProcess | undefined;
let celeryLog = '';
let recordFile: string;
let difySettings: NodeJS.ProcessEnv;

beforeEach(async () => {
  env = await createTestEnv();
  recordFile = join(env.dir, 'calls.jsonl');
  // Dify's own settings, as its .env has them: the prefix is this test's, so the queue is too.
  difySettings = {
    NEW_USER_DEFAULT_PLUGIN_IDS: ` ${PLUGINS[0]}, ,${PLUGINS[1]} ,`,
    CELERY_BROKER_URL: `${inject('redisUrl')}/${BROKER_DB}`,
    REDIS_KEY_PREFIX: ` ${env.name} `,
  };
});
afterEach(async () => {
  if (celery && celery.exitCode === null) {
    celery.kill('SIGTERM');
    await new Promise((r) => celery!.once('exit', r));
  }
  celery = undefined;
  const broker = redisConnection({ kind: 'single', url: `${inject('redisUrl')}/${BROKER_DB}`, tls: undefined }, 'producer');
  const keys = await broker.keys(`${env.name}:*`);
  if (keys.length > 0) await broker.del(...keys);
  broker.disconnect();
  await env.cleanup();
});

function startCelery(): void {
  celeryLog = '';
  celery = spawn(
    '/usr/bin/python3',
    [
      '-m',
      'celery',
      '-A',
      'recorder',
      'worker',
      '-Q',
      'plugin',
      '--pool',
      'solo',
      '--without-heartbeat',
      '--without-gossip',
      '--without-mingle',
      '-l',
      'warning',
    ],
    {
      cwd: projectFile('test', 'helpers', 'celery'),
      env: {
        ...process.env,
        ...difySettings,
        REDIS_KEY_PREFIX: difySettings.REDIS_KEY_PREFIX!,
        RECORD_FILE: recordFile,
        PYTHONDONTWRITEBYTECODE: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  for (const s of [celery.stdout!, celery.stderr!]) s.on('data', (c) => (celeryLog += String(c)));
}

async function calls(): Promise<Call[]> {
  const text = await readFile(recordFile, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Call);
}

/**
 * Queues a marker task through our own code and waits until the worker has run it: the worker
 * takes one queue in order (LPUSH, BRPOP), so every message queued before it has been run too.
 * Waits as long as the worker is alive; fails if it dies.
 */
async function drain(tasks: DifyTasks): Promise<Call[]> {
  const marker = '00000000-0000-4000-8000-000000000000';
  const id = randomUUID();
  const broker = redisConnection({ kind: 'single', url: `${inject('redisUrl')}/${BROKER_DB}`, tls: undefined }, 'producer');
  try {
    await broker.lpush(
      queueKey(tasks.settings.keyPrefix, 'plugin'),
      celeryMessage({ id, name: INSTALL_DEFAULT_PLUGINS, args: [marker, []], queue: 'plugin' }),
    );
  } finally {
    broker.disconnect();
  }
  for (;;) {
    const all = await calls();
    if (all.some((c) => c.id === id)) return all.filter((c) => c.args[0] !== marker);
    if (celery?.exitCode !== null) throw new Error(`the Celery worker exited: ${celeryLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const configWith = (settings: NodeJS.ProcessEnv) => {
  const loaded = loadConfig(settings);
  return { ...env.config, defaultPlugins: loaded.defaultPlugins, defaultPluginsProblem: loaded.defaultPluginsProblem };
};

describe("Dify's default-plugin task after each workspace we create", () => {
  it('one message per created workspace with its tenant id and the plugin ids; none for existing or failed rows, none on a re-run', async () => {
    startCelery();
    const config = configWith(difySettings);
    const world = { ...env, config };
    const rows = [1, 2, 3].map((i) => ({ workspace_name: `Plug ${i}`, owner_email: `owner${i}@example.com` }));
    await ingestCsv(world, csvOf([...rows, { workspace_name: 'No owner', owner_email: 'nobody@example.com' }]), 'plug', { attempts: 1 });
    const [status] = await runUntilDone(world, ['plug']);
    expect(status!.counts).toMatchObject({ created: 3, failed: 1 });
    // The same rows again: existing, nothing queued.
    await ingestCsv(world, csvOf(rows), 'plug-again');
    const [again] = await runUntilDone(world, ['plug-again']);
    expect(again!.counts).toMatchObject({ existing: 3, created: 0 });

    const tasks = new DifyTasks(redisConnection(config.defaultPlugins!.broker, 'producer'), config.defaultPlugins!);
    try {
      const got = await drain(tasks);
      const { rows: tenants } = await env.db.query<{ id: string }>(`SELECT id FROM tenants ORDER BY id`);
      expect(tenants).toHaveLength(3);
      expect(got.map((c) => c.args[0]).sort()).toEqual(tenants.map((t) => t.id));
      for (const c of got) {
        expect(c.args[1]).toEqual(PLUGINS);
        expect(c.kwargs).toEqual({});
        expect(c.queue).toBe('plugin');
        expect(c.argsrepr).toBe(`('${c.args[0]}', ['${PLUGINS[0]}', '${PLUGINS[1]}'])`);
      }
      // The report says so, per row.
      const report = [];
      for await (const r of allReportRows(env.db, 'plug')) report.push([r.outcome, r.difyTasks]);
      expect(report).toEqual([
        ['created', 'install_default_plugins_task: queued'],
        ['created', 'install_default_plugins_task: queued'],
        ['created', 'install_default_plugins_task: queued'],
        ['failed', null],
      ]);
    } finally {
      tasks.close();
    }
  });

  it('a broker down at COMMIT: workspaces created, the task recorded; the sweep queues it once, and a repeat after a lost mark queues nothing', async () => {
    // The worker's broker refuses connections: each workspace commits, its task stays recorded.
    const dead = configWith({ ...difySettings, CELERY_BROKER_URL: `redis://127.0.0.1:${await freePort()}/${BROKER_DB}` });
    const world = { ...env, config: dead };
    await ingestCsv(world, csvOf([1, 2].map((i) => ({ workspace_name: `Late ${i}`, owner_email: `owner${i}@example.com` }))), 'late');
    const [status] = await runUntilDone(world, ['late']);
    expect(status!.counts).toMatchObject({ created: 2 });
    const waiting = async () =>
      (await env.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM dify_provision.dify_tasks WHERE queued_at IS NULL`)).rows[0]!.n;
    expect(await waiting()).toBe(2);
    const report = [];
    for await (const r of allReportRows(env.db, 'late')) report.push(r.difyTasks);
    expect(report).toEqual(['install_default_plugins_task: not queued yet', 'install_default_plugins_task: not queued yet']);

    startCelery();
    const config = configWith(difySettings);
    const tasks = new DifyTasks(
      redisConnection(config.defaultPlugins!.broker, 'producer'),
      config.defaultPlugins!,
      pino({ level: 'silent' }),
    );
    try {
      expect(await tasks.completePending(env.db, { idleSeconds: 0 })).toBe(2);
      expect(await waiting()).toBe(0);
      // A crash after the LPUSH and before the mark: the records look unqueued again.
      await env.db.query(`UPDATE dify_provision.dify_tasks SET queued_at = NULL`);
      expect(await tasks.completePending(env.db, { idleSeconds: 0 })).toBe(0);
      expect(await waiting()).toBe(0);
      const got = await drain(tasks);
      const { rows: tenants } = await env.db.query<{ id: string }>(`SELECT id FROM tenants ORDER BY id`);
      expect(got.map((c) => c.args[0]).sort()).toEqual(tenants.map((t) => t.id));
    } finally {
      tasks.close();
    }
  });

  it('nothing on a release without the task (1.13), or with NEW_USER_DEFAULT_PLUGIN_IDS empty', async () => {
    const old = await createTestEnv({ schema: '1.13' });
    try {
      const config = { ...old.config, defaultPlugins: configWith(difySettings).defaultPlugins };
      await ingestCsv({ ...old, config }, csvOf([{ workspace_name: 'Old', owner_email: 'owner1@example.com' }]), 'old');
      const [status] = await runUntilDone({ ...old, config }, ['old']);
      expect(status!.counts).toMatchObject({ created: 1 });
      expect((await old.db.query(`SELECT count(*)::int AS n FROM dify_provision.dify_tasks`)).rows[0].n).toBe(0);
    } finally {
      await old.cleanup();
    }
    expect(configWith({ ...difySettings, NEW_USER_DEFAULT_PLUGIN_IDS: ' , ' }).defaultPlugins).toBeUndefined();
    const world = { ...env, config: configWith({ ...difySettings, NEW_USER_DEFAULT_PLUGIN_IDS: '' }) };
    await ingestCsv(world, csvOf([{ workspace_name: 'None', owner_email: 'owner1@example.com' }]), 'none');
    await runUntilDone(world, ['none']);
    expect((await env.db.query(`SELECT count(*)::int AS n FROM dify_provision.dify_tasks`)).rows[0].n).toBe(0);
  });

  it("Dify's broker settings: Sentinel, a non-Redis broker refused by name", () => {
    const sentinel = loadConfig({
      ...difySettings,
      CELERY_USE_SENTINEL: 'true',
      CELERY_BROKER_URL: 'sentinel://:masterpw@s1:26379/1;sentinel://s2:26380/1',
      CELERY_SENTINEL_MASTER_NAME: 'mymaster',
      CELERY_SENTINEL_PASSWORD: 'sentinelpw',
    }).defaultPlugins;
    expect(sentinel).toMatchObject({
      broker: {
        kind: 'sentinel',
        name: 'mymaster',
        sentinels: [
          { host: 's1', port: 26379 },
          { host: 's2', port: 26380 },
        ],
        password: 'masterpw',
        sentinelPassword: 'sentinelpw',
        db: 1,
      },
      keyPrefix: `${env.name}:`,
    });
    expect(sentinel!.shown).not.toContain('pw');
    expect(loadConfig({ ...difySettings, CELERY_BROKER_URL: 'amqp://guest:guest@rabbit//' }).defaultPluginsProblem).toMatch(
      /CELERY_BROKER_URL: a amqp:\/\/ broker; dify-provision queues Dify's tasks on a Redis broker only/,
    );
  });
});
