// The dashboard's doors, attacked over real sockets against real PostgreSQL and Redis: a read-only
// token flooding the session store, percent-encoded paths past the queue view's read-only rule,
// and the token in the address of an API request.
import { request } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_SESSIONS_PER_TOKEN, SESSION_COOKIE } from '../../src/dashboard/auth.js';
import { listeningDashboard } from '../helpers/dashboard.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const ADMIN = 'doors-admin-token-0123456789';
const READER = 'doors-read-only-token-0123456789';
const OTHER_READER = 'doors-other-read-token-0123456789';
let env: TestEnv;
let dashboard: Awaited<ReturnType<typeof listeningDashboard>>;

beforeEach(async () => {
  env = await createTestEnv();
  dashboard = await listeningDashboard(env, { token: ADMIN, readTokens: [READER, OTHER_READER] });
});
afterEach(async () => {
  await dashboard.close();
  await env.cleanup();
});

/** A request with its path sent byte for byte as given (fetch would normalise it first). */
function raw(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: dashboard.port, path, method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: text, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A page visit with ?token=: the session cookie it is traded for. */
async function visit(token: string): Promise<string> {
  const res = await raw('GET', `/?token=${token}`);
  expect(res.status).toBe(302);
  return String(res.headers['set-cookie']).split(';')[0]!;
}

const withCookie = (cookie: string) => raw('GET', '/api/batches', { cookie });

describe('sessions: one token cannot push out another', () => {
  it("a flood of read-only visits leaves the admin's session (and another read token's) working", { timeout: 120_000 }, async () => {
    const admin = await visit(ADMIN);
    const otherReader = await visit(OTHER_READER);
    const firstRead = await visit(READER);
    expect((await withCookie(admin)).status).toBe(200);
    // One more session than the store keeps per token, all from the read-only token.
    for (let i = 0; i < MAX_SESSIONS_PER_TOKEN; i++) await visit(READER);
    expect((await withCookie(admin)).status, "the admin's session was evicted by read-only visits").toBe(200);
    expect((await withCookie(otherReader)).status, "another read token's session was evicted").toBe(200);
    // The flooding token's own oldest session is the one that went.
    expect((await withCookie(firstRead)).status).toBe(401);
    // The admin session is still the admin's: it may change things.
    const cancel = await raw(
      'POST',
      '/api/batches/none/cancel',
      {
        cookie: admin,
        'x-requested-with': 'dify-provision',
        'content-type': 'application/json',
      },
      '{}',
    );
    expect(cancel.status, cancel.body).not.toBe(401);
    expect(cancel.status, cancel.body).not.toBe(403);
  });
});

describe('the queue view is read-only whatever the spelling of its path', () => {
  it('refuses a percent-encoded PUT that the router serves as /queues/…, with the admin token', async () => {
    const name = dashboard.queue.name;
    const auth = { authorization: `Bearer ${ADMIN}` };
    for (const path of [
      `/%71ueues/api/queues/${name}/pause`,
      `/queue%73/api/queues/${name}/pause`,
      `/%71%75%65%75%65%73/api/queues/pause`,
      `/%71ueues/api/queues/${name}/obliterate`,
      `/%71ueues/api/queues/${name}/empty`,
    ]) {
      const res = await raw('PUT', path, auth);
      // Refused by our own rule (not only by bull-board's read-only mode, which says otherwise).
      expect(res.status, path).toBe(405);
      expect(res.body, path).toContain('the queue view is read-only');
    }
    const add = await raw('POST', `/%71ueues/api/queues/${name}/add`, { ...auth, 'content-type': 'application/json' }, '{"name":"x"}');
    expect(add.status).toBe(405);
    expect(add.body).toContain('the queue view is read-only');
    expect(await dashboard.queue.isPaused()).toBe(false);
    expect(await dashboard.queue.count()).toBe(0);
    // Reading it is still allowed.
    expect((await raw('GET', '/%71ueues/api/queues', auth)).status).toBe(200);
  });
});

describe('the API takes its token as a header only', () => {
  it('refuses ?token= on /api/v1 (any method, any spelling) and on the console API; a page visit still trades it', async () => {
    const csv = 'workspace_name,owner_email\nAcme,owner1@example.com\n';
    const attempts: [string, string, string | undefined][] = [
      ['GET', `/api/v1/batches?token=${ADMIN}`, undefined],
      ['GET', `/api/v1/batches?token=${READER}`, undefined],
      ['POST', `/api/v1/batches?batch_id=in-address&token=${ADMIN}`, csv],
      ['POST', `/api/v1/plans?token=${ADMIN}`, csv],
      ['GET', `/%61pi/v1/batches?token=${ADMIN}`, undefined],
      ['GET', `/api/batches?token=${ADMIN}`, undefined],
      ['GET', `/queues/api/queues?token=${ADMIN}`, undefined],
      ['POST', `/api/batches/none/cancel?token=${ADMIN}`, '{}'],
      // A scraper's address is not a page either: no session for it.
      ['GET', `/metrics?token=${ADMIN}`, undefined],
      ['GET', `/metrics?token=${READER}`, undefined],
      ['GET', `/%6detrics?token=${ADMIN}`, undefined],
      ['GET', `/./metrics?token=${ADMIN}`, undefined],
    ];
    for (const [method, path, body] of attempts) {
      const res = await raw(
        method,
        path,
        { 'x-requested-with': 'dify-provision', 'content-type': body === '{}' ? 'application/json' : 'text/csv' },
        body,
      );
      expect(res.status, `${method} ${path}: ${res.body}`).toBe(401);
      expect(res.headers['set-cookie'], `${method} ${path}`).toBeUndefined();
      expect(res.body, `${method} ${path}`).toContain('Authorization: Bearer');
    }
    // The versioned API says so in its own error body.
    const v1 = await raw('GET', `/api/v1/batches?token=${ADMIN}`);
    expect(JSON.parse(v1.body).error.code).toBe('TOKEN_IN_ADDRESS');
    expect((await env.db.query(`SELECT id FROM dify_provision.batches`)).rows).toEqual([]);
    // Not even beside a good header: the request is refused, not served on the header.
    expect((await raw('GET', `/api/v1/batches?token=${ADMIN}`, { authorization: `Bearer ${ADMIN}` })).status).toBe(401);
    // The header works; a browser's page visit still trades ?token= for a session.
    expect((await raw('GET', '/api/v1/batches', { authorization: `Bearer ${ADMIN}` })).status).toBe(200);
    const cookie = await visit(ADMIN);
    expect(cookie).toMatch(new RegExp(`^${SESSION_COOKIE}=`));
    expect((await raw('GET', '/api/v1/batches', { cookie })).status).toBe(200);
  });
});

describe('?token= on a path that leads to the API by another spelling', () => {
  it('gets no session for dot segments, a doubled slash or escaped dots that the exchange would redirect to the API', async () => {
    for (const path of [
      '/./api/v1/batches',
      '/x/../api/v1/batches',
      '/%2e/api/v1/batches',
      '/x/%2e%2e/api/v1/batches',
      '/x/..//api/v1/batches',
      '//api/v1/batches',
      '/./api/batches',
      '/./queues/api/queues',
      '//queues/api/queues',
      '/x/../%61pi/v1/batches',
    ]) {
      for (const token of [ADMIN, READER]) {
        const res = await raw('GET', `${path}?token=${token}`);
        expect(res.headers['set-cookie'], `${path}: ${res.status} to ${String(res.headers.location)}`).toBeUndefined();
        expect(res.status, path).toBe(401);
        expect(res.body, path).toContain('Authorization: Bearer');
      }
    }
    // A page reached the same ways still trades the token, and lands on the page.
    for (const [path, to] of [
      ['/./batches/b1', '/batches/b1'],
      ['/x/../new', '/new'],
      ['//batches/b1', '/batches/b1'],
    ]) {
      const res = await raw('GET', `${path}?token=${ADMIN}`);
      expect(res.status, path).toBe(302);
      expect(res.headers.location, path).toBe(to);
      expect(String(res.headers['set-cookie']), path).toMatch(new RegExp(`^${SESSION_COOKIE}=`));
    }
  });
});

describe('a session cookie planted by a page on another port of this host (cookies ignore ports)', () => {
  // Such a page can set `dify_provision_session=…; Path=/api` for this host: the browser then
  // sends it first (the longer path) on every API request, beside the admin's own session.
  it("neither logs the admin out nor puts a read-only session in front of the admin's", async () => {
    const admin = await visit(ADMIN);
    const reader = await visit(READER);
    const planted = `${SESSION_COOKIE}=planted-by-another-port`;
    const both = (first: string) => `${first}; ${admin}`;
    expect((await raw('GET', '/api/batches', { cookie: both(planted) })).status).toBe(200);
    expect((await raw('GET', '/api/v1/batches', { cookie: both(planted) })).status).toBe(200);
    for (const first of [planted, reader]) {
      const cancel = await raw(
        'POST',
        '/api/batches/none/cancel',
        { cookie: both(first), 'x-requested-with': 'dify-provision', 'content-type': 'application/json' },
        '{}',
      );
      expect(cancel.status, cancel.body).toBe(404); // the admin's request, answered: no such batch
    }
    // Alone, a planted value is still nobody, and a read-only session still only reads.
    expect((await raw('GET', '/api/batches', { cookie: planted })).status).toBe(401);
    const readOnly = await raw(
      'POST',
      '/api/batches/none/cancel',
      { cookie: `${planted}; ${reader}`, 'x-requested-with': 'dify-provision', 'content-type': 'application/json' },
      '{}',
    );
    expect(readOnly.status, readOnly.body).toBe(403);
  });
});
