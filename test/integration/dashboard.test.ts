// The dashboard's HTTP surface against real PostgreSQL and Redis (fastify's inject: no socket):
// read-only queue view, CSRF, security headers, download names, health, cookies, metrics.
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SESSION_COOKIE } from '../../src/dashboard/auth.js';
import { attachment, buildDashboard } from '../../src/dashboard/server.js';
import { createPool } from '../../src/db/pool.js';
import { freePort } from '../../src/services/local-services.js';
import { projectFile } from '../../src/common/project-files.js';
import { csvOf, envQueue, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { tcpProxy } from '../helpers/tcp-proxy.js';
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
    expect(set).not.toContain(TOKEN);
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

describe('browser sessions (cookies go to every port of the host)', () => {
  const exchange = async (dash: FastifyInstance, url = `/?token=${TOKEN}`) => {
    const res = await dash.inject({ method: 'GET', url });
    expect(res.statusCode, url).toBe(302);
    return res;
  };
  const sessionOf = (res: { headers: Record<string, unknown> }) => {
    const set = String(res.headers['set-cookie']);
    const m = new RegExp(`^${SESSION_COOKIE}=([A-Za-z0-9_-]{43}); HttpOnly; SameSite=Strict; Path=/; Max-Age=(\\d+)$`).exec(set);
    expect(m, set).not.toBeNull();
    return { value: m![1]!, maxAge: Number(m![2]) };
  };
  const status = async (dash: FastifyInstance, headers: Record<string, string>, url = '/api/batches') =>
    (await dash.inject({ method: 'GET', url, headers })).statusCode;

  it('the token never goes into a cookie; the session works only as the cookie, only on the dashboard that made it', async () => {
    const res = await exchange(app);
    expect(String(res.headers['set-cookie'])).not.toContain(TOKEN);
    const { value, maxAge } = sessionOf(res);
    expect(maxAge).toBe(3600);
    expect(await status(app, { cookie: `${SESSION_COOKIE}=${value}` })).toBe(200);
    // Read by a listener on another port, the value is not the token anywhere else.
    expect(await status(app, { authorization: `Bearer ${value}` })).toBe(401);
    expect(await status(app, { 'x-dashboard-token': value })).toBe(401);
    expect(await status(app, {}, `/api/batches?token=${value}`)).toBe(401);
    // Each visit makes a new session; a value the dashboard did not make is refused (no fixation).
    expect(sessionOf(await exchange(app)).value).not.toBe(value);
    expect(await status(app, { cookie: `${SESSION_COOKIE}=${'A'.repeat(43)}` })).toBe(401);
    expect(await status(app, { cookie: `dify_provision_token=${TOKEN}` })).toBe(401);
    // Another dashboard process with the same token does not know this session.
    const other = await buildDashboard({ db: env.db, queue, redis: env.redis, token: TOKEN });
    try {
      const refused = await other.inject({ method: 'GET', url: '/api/batches', headers: { cookie: `${SESSION_COOKIE}=${value}` } });
      expect(refused.statusCode).toBe(401);
      expect(refused.body).toMatch(/session has ended/);
    } finally {
      await other.close();
    }
  });

  it('a session ends after its lifetime', async () => {
    const short = await buildDashboard({ db: env.db, queue, redis: env.redis, token: TOKEN, sessionTtlMs: 300 });
    try {
      const { value, maxAge } = sessionOf(await exchange(short));
      expect(maxAge).toBe(1);
      const cookie = { cookie: `${SESSION_COOKIE}=${value}` };
      // It worked, and stops working once its time is up (waited for, however slow the machine).
      let last = await status(short, cookie);
      for (let i = 0; i < 600 && last === 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        last = await status(short, cookie);
      }
      expect(last).toBe(401);
      expect(await status(short, { authorization: `Bearer ${TOKEN}` })).toBe(200);
    } finally {
      await short.close();
    }
  });

  it('the token exchange redirects only to a path of the dashboard itself (raw paths, over a real socket)', async () => {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as AddressInfo;
    // node:http sends the path as given (fetch and inject would resolve the dot segments first).
    const raw = (path: string) =>
      new Promise<{ status: number | undefined; location: string | undefined }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
          res.resume();
          resolve({ status: res.statusCode, location: res.headers.location });
        });
        req.on('error', reject);
        req.end();
      });
    for (const path of [
      '/x/..//evil.example/',
      '//evil.example/',
      '/\\evil.example/',
      '/%2F%2Fevil.example/',
      '///evil.example/x',
      '/./\\/evil.example',
    ]) {
      const { status, location } = await raw(`${path}?token=${TOKEN}&a=1`);
      expect(status, path).toBe(302);
      expect(location, path).toMatch(/^\/(?![/\\])/);
      expect(new URL(location!, `http://127.0.0.1:${port}/`).origin, path).toBe(`http://127.0.0.1:${port}`);
      expect(location).not.toContain('token');
      expect(location).toMatch(/\?a=1$/);
    }
    expect((await raw(`/batches/b1?token=${TOKEN}`)).location).toBe('/batches/b1');
  });
});

describe('headers and names', () => {
  it('sends a content security policy and friends, and drops the public font CDN from the queue view', async () => {
    for (const url of ['/', '/queues', '/api/batches']) {
      const res = await app.inject({ method: 'GET', url, headers: auth });
      expect(res.headers['content-security-policy'], url).toMatch(/^default-src 'self'; script-src 'self'; /); // no inline script at all
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['referrer-policy']).toBe('no-referrer');
    }
    const board = await app.inject({ method: 'GET', url: '/queues', headers: auth });
    expect(board.body).toContain('<div id="root">');
    expect(board.body).not.toContain('fonts.googleapis.com');
  });

  it("serves the console's own files: no inline script, every module it imports, nothing else", async () => {
    const page = await app.inject({ method: 'GET', url: '/', headers: auth });
    expect(page.body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // every script is a file of this origin
    const seen = new Set<string>();
    const pending = [...page.body.matchAll(/(?:src|href)="\/assets\/([^"]+)"/g)].map((m) => m[1]!);
    expect(pending).toEqual(['console.css', 'main.js']);
    while (pending.length) {
      const name = pending.pop()!;
      if (seen.has(name)) continue;
      seen.add(name);
      const res = await app.inject({ method: 'GET', url: `/assets/${name}`, headers: auth });
      expect(res.statusCode, name).toBe(200);
      expect(res.headers['content-type'], name).toMatch(name.endsWith('.js') ? /^text\/javascript/ : /^text\/css/);
      for (const m of res.body.matchAll(/\bfrom '\.\/([^']+)'/g)) pending.push(m[1]!);
    }
    expect(seen.size).toBeGreaterThan(3);
    for (const url of ['/assets/..%2Fpackage.json', '/assets/..%2F..%2Fpackage.json', '/assets/index.html', '/assets/main.ts'])
      expect((await app.inject({ method: 'GET', url, headers: auth })).statusCode, url).toBe(404);
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

describe('health under a stalled PostgreSQL or Redis, and a flood', () => {
  it('answers within its time box, starts no second check behind a stalled one, and serves a flood from one check a second', async () => {
    const pgUrl = new URL(env.config.databaseUrl);
    const pgProxy = await tcpProxy(Number(pgUrl.port), pgUrl.hostname, { record: true });
    const redisProxy = await tcpProxy(Number(new URL(env.config.redisUrl).port), '127.0.0.1', { record: true });
    pgUrl.port = String(pgProxy.port);
    const db = createPool(pgUrl.toString(), 4);
    const redis = new Redis({ port: redisProxy.port, host: '127.0.0.1', maxRetriesPerRequest: null });
    redis.on('error', () => {});
    const dash = await buildDashboard({ db, queue, redis, token: TOKEN });
    const health = async () => {
      const res = await dash.inject({ method: 'GET', url: '/healthz' });
      return { code: res.statusCode, body: res.json() };
    };
    const until = async (want: object) => {
      for (let i = 0; i < 300; i++) {
        const h = await health();
        if (JSON.stringify(h.body) === JSON.stringify(want)) return h;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`/healthz never answered ${JSON.stringify(want)}`);
    };
    // Checks sent, and connections opened (a check behind a stalled one would need a new one).
    const checks = () => ({ pg: pgProxy.sent('SELECT 1\0'), pgConnections: pgProxy.connections(), redis: redisProxy.sent('ping') });
    try {
      expect((await until({ ok: true, postgres: true, redis: true })).code).toBe(200);

      // A flood, in waves: every answer comes from a check at most a second old.
      const before = checks();
      const started = Date.now();
      const flood = [];
      for (let wave = 0; wave < 30; wave++) flood.push(...(await Promise.all(Array.from({ length: 10 }, () => health()))));
      const windows = Math.ceil((Date.now() - started) / 1000) + 1;
      expect(flood.every((h) => h.code === 200)).toBe(true);
      expect(checks().pg - before.pg).toBeLessThanOrEqual(windows);
      expect(checks().redis - before.redis).toBeLessThanOrEqual(windows);

      // PostgreSQL stalls (connections open, nothing answered): 503 naming it, not a hang.
      pgProxy.freeze();
      const stalled = await until({ ok: false, postgres: false, redis: true });
      expect(stalled.code).toBe(503);
      const pgOnly = () => ({ sent: checks().pg, connections: checks().pgConnections });
      const during = pgOnly();
      for (let round = 0; round < 3; round++) {
        await new Promise((r) => setTimeout(r, 1100)); // past the cached answer: a new check each round
        const answers = await Promise.all(Array.from({ length: 20 }, () => health()));
        expect(answers.every((h) => h.code === 503 && !h.body.postgres)).toBe(true);
      }
      expect(pgOnly()).toEqual(during); // the stalled check is still out: no second one behind it
      pgProxy.thaw();
      await until({ ok: true, postgres: true, redis: true });

      // Redis stalls the same way.
      redisProxy.freeze();
      expect((await until({ ok: false, postgres: true, redis: false })).code).toBe(503);
      redisProxy.thaw();
      await until({ ok: true, postgres: true, redis: true });
    } finally {
      pgProxy.thaw();
      redisProxy.thaw();
      await dash.close();
      redis.disconnect();
      await db.end();
      await Promise.all([pgProxy.cut(), redisProxy.cut()]);
    }
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
    { method: 'GET', route: '/new', url: '/new', ok: 200 },
    { method: 'GET', route: '/assets/:name', url: '/assets/main.js', ok: 200 },
    { method: 'GET', route: '/favicon.svg', url: '/favicon.svg', ok: 200, open: true },
    { method: 'GET', route: '/favicon.ico', url: '/favicon.ico', ok: 200, open: true },
    { method: 'GET', route: '/healthz', url: '/healthz', ok: 200, open: true },
    { method: 'GET', route: '/metrics', url: '/metrics', ok: 200 },
    { method: 'GET', route: '/api/info', url: '/api/info', ok: 200 },
    { method: 'GET', route: '/api/ingest-options', url: '/api/ingest-options', ok: 200 },
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
