// Redis stopped under a running dashboard (issue 32 item 7): the counts live in PostgreSQL, so
// every view answers from there and says that Redis is unreachable and no worker can take rows,
// instead of "running, ETA …" (or failing, for the CLI's status, batches and report).
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_UNREACHABLE } from '../../src/store/batches.js';
import { csvOf } from '../helpers/batch.js';
import { runCli, startCli, type Background } from '../helpers/cli.js';
import { until } from '../helpers/cli-world.js';
import { launchChromium, startDashboard } from '../helpers/dashboard.js';
import { startRedisNode, type Node } from '../helpers/redis-topologies.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const TOKEN = 'test-redis-down-token-0123456789';
let env: TestEnv;
let redis: Node & { url: string };
let cliEnv: NodeJS.ProcessEnv;
let dash: Background | undefined;
let base: string;
let browser: Browser;

beforeAll(async () => {
  env = await createTestEnv();
  const dir = await mkdtemp(join(tmpdir(), 'redis-down-'));
  redis = await startRedisNode(dir);
  cliEnv = { ...env.env, REDIS_URL: redis.url };
  const started = await startDashboard({ ...cliEnv, DASHBOARD_TOKEN: TOKEN });
  dash = started.dash;
  base = started.base;
  expect(dash.output()).toContain(`dashboard: ${base}/`);
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await dash?.stop('SIGKILL');
  await redis?.stop();
  await env?.cleanup();
});

const auth = { authorization: `Bearer ${TOKEN}` };
const get = async (path: string) => {
  const r = await fetch(base + path, { headers: auth });
  return { status: r.status, body: (await r.json()) as any };
};

describe('Redis down', () => {
  it('status, batches, report, the API and the console answer from PostgreSQL and say Redis is unreachable', async () => {
    const file = join(env.dir, 'three.csv');
    await writeFile(file, csvOf([1, 2, 3].map((i) => ({ workspace_name: `Down ${i}`, owner_email: `owner${i}@example.com` }))));
    expect((await runCli(['ingest', file, '--batch-id', 'down'], cliEnv)).code).toBe(0);
    // Redis up, no worker: stalled for want of a worker (the other advice).
    expect((await get('/api/v1/batches/down')).body).toMatchObject({ state: 'stalled', redis_unreachable: false });

    await redis.stop();
    expect((await fetch(`${base}/healthz`)).status).toBe(503);

    // The API: the rows are PostgreSQL's, the state and advice say why nothing moves.
    const one = await get('/api/v1/batches/down');
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({
      state: 'stalled',
      redis_unreachable: true,
      workers: null,
      advice: REDIS_UNREACHABLE,
      counts: { queued: 3 },
      throughput: { eta_seconds: null },
    });
    const list = await get('/api/v1/batches');
    expect(list.body.batches[0]).toMatchObject({ batch_id: 'down', state: 'stalled', redis_unreachable: true });
    expect((await get('/api/v1/batches/down/rows')).body.rows).toHaveLength(3);

    // The CLI: status, batches and report from PostgreSQL, saying so.
    const status = await runCli(['status', 'down'], cliEnv);
    expect(status.stderr).toBe('');
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('batch down (stalled): 0/3 rows finished (0%): queued 3');
    expect(status.stdout).toContain(REDIS_UNREACHABLE);
    const json = JSON.parse((await runCli(['status', 'down', '--json'], cliEnv)).stdout);
    expect(json).toMatchObject({ state: 'stalled', redisUnreachable: true, advice: REDIS_UNREACHABLE });
    const batches = await runCli(['batches'], cliEnv);
    expect(batches.code).toBe(0);
    expect(batches.stdout).toMatch(/^down +stalled +ingest +3 /m);
    expect(batches.stdout).toContain(REDIS_UNREACHABLE);
    const report = await runCli(['report', 'down'], cliEnv);
    expect(report.code).toBe(0);
    expect(report.stdout.trim().split('\r\n')).toHaveLength(4);
    // A command that needs Redis still says what is wrong.
    const retry = await runCli(['retry', 'down'], cliEnv);
    expect(retry.code).not.toBe(0);
    expect(retry.stderr).toContain('cannot reach Redis');

    // The console: every page says it; the batch page shows no rate nor ETA.
    const page = await browser.newPage();
    page.setDefaultTimeout(60_000);
    await page.goto(`${base}/?token=${TOKEN}`);
    await page.waitForSelector('#redis-down:not([hidden])');
    expect(await page.textContent('#redis-down')).toBe(REDIS_UNREACHABLE);
    expect(await page.textContent('#serves')).toContain(REDIS_UNREACHABLE);
    await page.click('a[href="/batches/down"]');
    await page.waitForSelector('#state[data-state="stalled"]');
    expect(await page.textContent('#advice')).toBe(REDIS_UNREACHABLE);
    expect(await page.isVisible('#redis-down')).toBe(true);
    expect(await page.locator('#eta').count()).toBe(0);

    // Redis back: the banner goes, and the advice is the missing worker again.
    await redis.start();
    await page.waitForSelector('#redis-down', { state: 'hidden' });
    await page.waitForFunction(() => document.querySelector('#advice')?.textContent?.startsWith('no worker is running'));
    await page.close();
  });

  it('a row active when Redis stops waits for Redis (not running) in every view; wait keeps waiting from PostgreSQL and ends with the row', async () => {
    // Redis is up again (the test above started it). One row, its job held by a worker: the
    // workspace's INSERT waits on tenants, locked here, so the row is active for as long as we like.
    const file = join(env.dir, 'held.csv');
    await writeFile(file, csvOf([{ workspace_name: 'Held', owner_email: 'owner1@example.com' }]));
    expect((await runCli(['cancel', 'down'], cliEnv)).code).toBe(0); // the worker takes this batch's row only
    expect((await runCli(['ingest', file, '--batch-id', 'held'], cliEnv)).code).toBe(0);
    const blocker = await env.db.connect();
    const procs: Background[] = [];
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE tenants IN EXCLUSIVE MODE');
      procs.push(startCli(['worker', '--concurrency', '1'], cliEnv));
      await until(async () => {
        const { rows } = await env.db.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%create_workspace_v1%'`,
        );
        return rows[0].n > 0;
      }, 'the worker waiting on the tenants table');
      const before = startCli(['wait', 'held', '--report-dir', join(env.dir, 'before')], cliEnv);
      procs.push(before);
      await until(async () => before.output().includes('progress held: 0/1'), 'wait to follow the batch');

      await redis.stop();
      // The API: the active row is not running, it waits for Redis.
      const status = (await get('/api/v1/batches/held')).body;
      expect(status).toMatchObject({ state: 'stalled', redis_unreachable: true, waiting_for_redis: 1, counts: { active: 1 } });
      const rows = (await get('/api/v1/batches/held/rows')).body;
      expect(rows).toMatchObject({ redis_unreachable: true, rows: [{ line: 2, outcome: 'active', waiting_for_redis: true }] });
      expect((await get('/api/v1/batches/held/rows/2')).body).toMatchObject({ outcome: 'active', waiting_for_redis: true });
      // The CLI's status.
      const said = await runCli(['status', 'held'], cliEnv);
      expect(said.stdout).toContain('active 1 (waiting for Redis)');
      expect(said.stdout).toContain(REDIS_UNREACHABLE);
      // wait: the one following keeps waiting, saying so; one started now follows from PostgreSQL.
      const after = startCli(['wait', 'held', '--report-dir', join(env.dir, 'after')], cliEnv);
      procs.push(after);
      let ended = false;
      void Promise.race([before.exited, after.exited]).then(() => (ended = true));
      const waiting = `stalled: ${REDIS_UNREACHABLE}; still waiting`;
      await until(async () => before.output().includes(waiting), 'the running wait to say Redis is unreachable');
      await until(async () => after.output().includes(waiting), 'a wait started with Redis down to follow the batch');
      expect(after.output()).not.toContain('cannot reach Redis');
      // The console: the row and the count say it waits for Redis.
      const page = await browser.newPage();
      page.setDefaultTimeout(60_000);
      await page.goto(`${base}/?token=${TOKEN}`);
      await page.goto(`${base}/batches/held`);
      await page.waitForSelector('#rows tr[data-line="2"] [data-waiting="redis"]');
      expect(await page.textContent('#rows tr[data-line="2"] .pill')).toBe('waiting for Redis');
      expect(await page.textContent('#count-active')).toBe('1active: waiting for Redis');
      await page.close();
      expect(ended).toBe(false);

      // The held job goes on: its answer lands in PostgreSQL, and both waits end with it.
      await blocker.query('ROLLBACK');
      expect(await before.exited).toBe(0);
      expect(await after.exited).toBe(0);
      expect(after.output()).toContain('batch held done');
      expect(await readFile(join(env.dir, 'after', 'held-report.csv'), 'utf8')).toContain(',created,');
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      blocker.release();
      await Promise.all(procs.map((p) => p.stop('SIGKILL')));
      await redis.start().catch(() => undefined);
    }
  });
});
