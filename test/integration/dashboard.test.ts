// The dashboard's HTTP surface against real PostgreSQL and Redis (fastify's inject: no socket):
// read-only queue view, CSRF, security headers, download names, health, cookies, metrics.
import type { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { attachment, buildDashboard } from '../../src/dashboard/server.js';
import { createPool } from '../../src/db/pool.js';
import { freePort } from '../../src/services/local-services.js';
import { csvOf, envQueue, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const TOKEN = 'integration-dashboard-token-0123';
const auth = { authorization: `Bearer ${TOKEN}` };
let env: TestEnv;
let queue: Queue;
let app: FastifyInstance;
beforeEach(async () => {
  env = await createTestEnv();
  queue = await envQueue(env); // migrates, as the dashboard command's runtime does
  app = await buildDashboard({ db: env.db, queue, redis: env.redis, token: TOKEN });
});
afterEach(async () => {
  await app.close();
  await queue.close();
  await env.cleanup();
});

describe('the queue view is read-only', () => {
  it("refuses bull-board's add, retry, clean, pause and obliterate, even with the token", async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Waiting', owner_email: 'owner1@example.com' }]), 'ro');
    const attempts = [
      ['POST', `/queues/api/queues/${queue.name}/add`, { name: 'workspace', data: { batchId: 'ro', line: 9 } }],
      ['PUT', `/queues/api/queues/${queue.name}/retry/failed`, undefined],
      ['PUT', `/queues/api/queues/${queue.name}/clean/waiting`, undefined],
      ['PUT', `/queues/api/queues/${queue.name}/pause`, undefined],
      ['PUT', '/queues/api/queues/pause', undefined],
      ['DELETE', `/queues/api/queues/${queue.name}/obliterate`, undefined],
    ] as const;
    for (const [method, url, payload] of attempts) {
      const res = await app.inject({
        method,
        url,
        headers: { ...auth, 'x-requested-with': 'dify-provision' },
        ...(payload ? { payload } : {}),
      });
      expect(res.statusCode, `${method} ${url}`).toBe(405);
    }
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 1 });
    expect(await queue.isPaused()).toBe(false);
    // Reading still works.
    expect((await app.inject({ method: 'GET', url: '/queues/api/queues', headers: auth })).statusCode).toBe(200);
  });
});

describe('cross-site requests', () => {
  async function cookie(): Promise<string> {
    const res = await app.inject({ method: 'GET', url: `/?token=${TOKEN}` });
    expect(res.statusCode).toBe(302);
    const set = String(res.headers['set-cookie']);
    expect(set).toMatch(/HttpOnly/);
    expect(set).toMatch(/SameSite=Strict/);
    return set.split(';')[0]!;
  }

  it('a form posted from another port of the same host cannot cancel a batch', async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Victim', owner_email: 'owner1@example.com' }]), 'victim');
    const jar = await cookie();
    // What a browser sends for an auto-submitted form on http://127.0.0.1:9999 (same site, other origin).
    const forged = await app.inject({
      method: 'POST',
      url: '/api/batches/victim/cancel',
      headers: {
        cookie: jar,
        host: '127.0.0.1:3000',
        origin: 'http://127.0.0.1:9999',
        'sec-fetch-site': 'same-site',
        'content-type': 'application/x-www-form-urlencoded',
      },
      payload: '',
    });
    expect(forged.statusCode).toBe(403);
    // An older browser without Origin/Sec-Fetch-*: a form can't add X-Requested-With.
    const bare = await app.inject({ method: 'POST', url: '/api/batches/victim/cancel', headers: { cookie: jar } });
    expect(bare.statusCode).toBe(403);
    expect((await env.db.query(`SELECT outcome FROM dify_provision.rows WHERE batch_id = 'victim'`)).rows).toEqual([{ outcome: 'queued' }]);

    // The page itself (same origin, with the header) can, and can undo it.
    const own = {
      cookie: jar,
      host: '127.0.0.1:3000',
      origin: 'http://127.0.0.1:3000',
      'sec-fetch-site': 'same-origin',
      'x-requested-with': 'dify-provision',
    };
    const cancel = await app.inject({ method: 'POST', url: '/api/batches/victim/cancel', headers: own });
    expect(cancel.json()).toMatchObject({ cancelled: 1 });
    const resume = await app.inject({ method: 'POST', url: '/api/batches/victim/resume', headers: own });
    expect(resume.json()).toMatchObject({ resumed: 1 });
    const [status] = await runUntilDone(env, ['victim']);
    expect(status!.counts.created).toBe(1);
  });
});

describe('headers and names', () => {
  it('sends a content security policy and friends, and drops the public font CDN from the queue view', async () => {
    for (const url of ['/', '/queues', '/api/batches']) {
      const res = await app.inject({ method: 'GET', url, headers: auth });
      expect(res.headers['content-security-policy'], url).toMatch(/default-src 'self'; script-src 'self' 'sha256-[A-Za-z0-9+/=]+'/);
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['referrer-policy']).toBe('no-referrer');
    }
    const board = await app.inject({ method: 'GET', url: '/queues', headers: auth });
    expect(board.body).toContain('<div id="root">');
    expect(board.body).not.toContain('fonts.googleapis.com');
  });

  it('a batch id with quotes cannot add parameters to Content-Disposition', async () => {
    const res = await app.inject({
      method: 'GET',
      url: `/api/batches/${encodeURIComponent('x"; filename=evil.exe; a="')}/report.csv`,
      headers: auth,
    });
    expect(res.statusCode).toBe(404); // no such batch: no download at all
    expect(res.headers['content-disposition']).toBeUndefined();
    const cd = attachment('x"; filename=evil.exe; a="-report.csv');
    expect(cd).toBe(
      `attachment; filename="x___filename_evil.exe__a__-report.csv"; filename*=UTF-8''x%22%3B%20filename%3Devil.exe%3B%20a%3D%22-report.csv`,
    );
    await ingestCsv(env, csvOf([{ workspace_name: 'R', owner_email: 'owner1@example.com' }]), 'r.1_x-y');
    const ok = await app.inject({ method: 'GET', url: '/api/batches/r.1_x-y/report.csv', headers: auth });
    expect(ok.headers['content-disposition']).toBe(`attachment; filename="r.1_x-y-report.csv"; filename*=UTF-8''r.1_x-y-report.csv`);
  });
});

describe('health', () => {
  it('/healthz answers 503 naming the dependency that is down, and says nothing else', async () => {
    const dead = await freePort();
    const deadRedis = new Redis({
      port: dead,
      host: '127.0.0.1',
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    deadRedis.on('error', () => {});
    const deadDb = createPool(`postgres://postgres@127.0.0.1:${dead}/none`, 1);
    const sick = await buildDashboard({ db: deadDb, queue, redis: deadRedis, token: TOKEN });
    try {
      const res = await sick.inject({ method: 'GET', url: '/healthz' });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toEqual({ ok: false, postgres: false, redis: false });
      const half = await buildDashboard({ db: env.db, queue, redis: deadRedis, token: TOKEN });
      expect((await half.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ ok: false, postgres: true, redis: false });
      await half.close();
    } finally {
      await sick.close();
      deadRedis.disconnect();
      await deadDb.end();
    }
    expect((await app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ ok: true, postgres: true, redis: true });
  });
});

describe('metrics', () => {
  it('counts queue jobs by state, rows finished by outcome, and their durations', async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Queued', owner_email: 'owner1@example.com' }]), 'm1');
    const before = (await app.inject({ method: 'GET', url: '/metrics', headers: auth })).body;
    expect(before).toMatch(/^dify_provision_queue_jobs\{state="waiting"\} 1$/m);
    expect(before).toMatch(/^dify_provision_job_duration_seconds_count 0$/m);

    await ingestCsv(env, csvOf([{ workspace_name: 'Ghost', owner_email: 'ghost@example.com' }]), 'm2');
    await runUntilDone(env, ['m1', 'm2']);
    const after = (await app.inject({ method: 'GET', url: '/metrics', headers: auth })).body;
    expect(after).toMatch(/^dify_provision_queue_jobs\{state="waiting"\} 0$/m);
    expect(after).toMatch(/^dify_provision_rows_finished_total\{outcome="created"\} 1$/m);
    expect(after).toMatch(/^dify_provision_rows_finished_total\{outcome="failed"\} 1$/m);
    expect(after).toMatch(/^dify_provision_job_duration_seconds_count 2$/m);
    expect(after).toMatch(/^dify_provision_rows\{outcome="created"\} 1$/m);
  });
});
