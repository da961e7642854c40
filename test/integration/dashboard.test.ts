// The dashboard's HTTP surface against real PostgreSQL and Redis (fastify's inject: no socket):
// read-only queue view, CSRF, security headers, download names, health, cookies, metrics.
import { readFile } from 'node:fs/promises';
import type { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { attachment, buildDashboard } from '../../src/dashboard/server.js';
import { createPool } from '../../src/db/pool.js';
import { freePort } from '../../src/services/local-services.js';
import { projectFile } from '../../src/project-files.js';
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

describe('every route, without the token, with a wrong one, and cross-origin', () => {
  type Route = { method: 'GET' | 'POST' | 'PUT'; url: string; route: string; ok: number; open?: boolean };
  // Every route of src/dashboard/server.ts (checked below against its source) and bull-board's
  // under /queues; `ok`: the status with the right token, from our own page.
  const table = (queueName: string): Route[] => [
    { method: 'GET', route: '/', url: '/', ok: 200 },
    { method: 'GET', route: '/batches/:id', url: '/batches/guarded', ok: 200 },
    { method: 'GET', route: '/favicon.svg', url: '/favicon.svg', ok: 200, open: true },
    { method: 'GET', route: '/favicon.ico', url: '/favicon.ico', ok: 200, open: true },
    { method: 'GET', route: '/healthz', url: '/healthz', ok: 200, open: true },
    { method: 'GET', route: '/metrics', url: '/metrics', ok: 200 },
    { method: 'GET', route: '/api/info', url: '/api/info', ok: 200 },
    { method: 'GET', route: '/api/batches', url: '/api/batches', ok: 200 },
    { method: 'GET', route: '/api/batches/:id', url: '/api/batches/guarded', ok: 200 },
    { method: 'GET', route: '/api/batches/:id/rows', url: '/api/batches/guarded/rows?limit=5', ok: 200 },
    { method: 'GET', route: '/api/batches/:id/report.json', url: '/api/batches/guarded/report.json', ok: 200 },
    { method: 'GET', route: '/api/batches/:id/report.csv', url: '/api/batches/guarded/report.csv', ok: 200 },
    { method: 'POST', route: '/api/batches/:id/cancel', url: '/api/batches/guarded/cancel', ok: 200 },
    { method: 'POST', route: '/api/batches/:id/resume', url: '/api/batches/guarded/resume', ok: 200 },
    { method: 'POST', route: '/api/batches/:id/retry', url: '/api/batches/guarded/retry', ok: 200 },
    { method: 'GET', route: '/queues', url: '/queues', ok: 200 },
    { method: 'GET', route: '/queues/api/queues', url: '/queues/api/queues', ok: 200 },
    { method: 'PUT', route: '/queues/api/queues/:name/pause', url: `/queues/api/queues/${queueName}/pause`, ok: 405 },
    { method: 'PUT', route: '/queues/api/queues/:name/retry/failed', url: `/queues/api/queues/${queueName}/retry/failed`, ok: 405 },
  ];

  it('lists every route the server defines', async () => {
    const source = await readFile(projectFile('src', 'dashboard', 'server.ts'), 'utf8');
    const defined = [...source.matchAll(/\bapp\.(get|post|put|patch|delete)\s*(?:<[^>]*>)?\(\s*'([^']+)'/g)].map(
      ([, m, path]) => `${m!.toUpperCase()} ${path}`,
    );
    expect(defined.length).toBeGreaterThan(10);
    const listed = table(queue.name).map((r) => `${r.method} ${r.route}`);
    expect(
      defined.filter((d) => !listed.includes(d)),
      'routes of server.ts missing from the table',
    ).toEqual([]);
    for (const r of table(queue.name).filter((r) => !r.route.startsWith('/queues/api/queues/'))) {
      expect(app.hasRoute({ method: r.method, url: r.route }), `${r.method} ${r.route} is not a route any more`).toBe(true);
    }
  });

  it('answers 401 without the right token, 403 to a state change from another origin, and only our own page gets through', async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Guarded', owner_email: 'owner1@example.com' }]), 'guarded');
    const session = await app.inject({ method: 'GET', url: `/?token=${TOKEN}` });
    const jar = String(session.headers['set-cookie']).split(';')[0]!;
    const forged = `${jar.split('=')[0]}=${'A'.repeat(Math.max(8, jar.length - jar.indexOf('=') - 1))}`;
    const wrong = `wrong-${TOKEN.slice(6)}`;
    const own = {
      host: '127.0.0.1:3000',
      origin: 'http://127.0.0.1:3000',
      'sec-fetch-site': 'same-origin',
      'x-requested-with': 'dify-provision',
    };
    const send = (r: Route, headers: Record<string, string>, url = r.url) =>
      app.inject({ method: r.method, url, headers, ...(r.method === 'GET' ? {} : { payload: {} }) });
    const routes = table(queue.name);
    const seen: string[] = [];
    const expectStatus = async (what: string, r: Route, res: Promise<{ statusCode: number }>, want: number) => {
      const got = (await res).statusCode;
      if (got !== want) seen.push(`${r.method} ${r.url} ${what}: ${got}, want ${want}`);
    };

    for (const r of routes) {
      const shut = r.open ? r.ok : 401;
      await expectStatus('with no token', r, send(r, {}), shut);
      await expectStatus('with a wrong bearer token', r, send(r, { ...own, authorization: `Bearer ${wrong}` }), shut);
      await expectStatus('with a wrong X-Dashboard-Token', r, send(r, { ...own, 'x-dashboard-token': wrong }), shut);
      await expectStatus('with a forged cookie', r, send(r, { ...own, cookie: forged }), shut);
      const withQuery = `${r.url}${r.url.includes('?') ? '&' : '?'}token=${wrong}`;
      await expectStatus('with a wrong ?token=', r, send(r, own, withQuery), shut);
      if (r.method === 'GET') continue;
      // A state change with a good session from anywhere but our page: each rule on its own.
      await expectStatus('from another origin', r, send(r, { ...own, cookie: jar, origin: 'http://127.0.0.1:9999' }), 403);
      await expectStatus('from another site', r, send(r, { ...own, cookie: jar, 'sec-fetch-site': 'cross-site' }), 403);
      await expectStatus('from the same site, another origin', r, send(r, { ...own, cookie: jar, 'sec-fetch-site': 'same-site' }), 403);
      const { 'x-requested-with': _, ...noHeader } = own;
      await expectStatus('without X-Requested-With', r, send(r, { ...noHeader, cookie: jar }), 403);
      await expectStatus(
        'with a bearer token from another origin',
        r,
        send(r, { ...own, authorization: `Bearer ${TOKEN}`, origin: 'http://evil.example' }),
        403,
      );
    }
    expect(seen, 'requests that got through, or were refused the wrong way').toEqual([]);
    // Nothing refused changed anything.
    expect((await env.db.query(`SELECT outcome FROM dify_provision.rows WHERE batch_id = 'guarded'`)).rows).toEqual([
      { outcome: 'queued' },
    ]);
    expect(await queue.isPaused()).toBe(false);

    // Reads from another origin get no CORS grant (a browser keeps the answer from that page).
    for (const r of routes.filter((r) => r.method === 'GET')) {
      const res = await send(r, { cookie: jar, origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' });
      expect(res.headers['access-control-allow-origin'], `${r.url}`).toBeUndefined();
      expect(res.headers['access-control-allow-credentials'], `${r.url}`).toBeUndefined();
    }

    // The right token from our own page: by bearer and by the session cookie.
    for (const r of routes) {
      await expectStatus('with the bearer token', r, send(r, { ...own, authorization: `Bearer ${TOKEN}` }), r.ok);
      await expectStatus('with the session cookie', r, send(r, { ...own, cookie: jar }), r.ok);
    }
    expect(seen, 'requests refused with the right token').toEqual([]);
  });
});
