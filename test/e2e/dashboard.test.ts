import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectFile } from '../../src/common/project-files.js';
import { freePort } from '../../src/services/local-services.js';
import { NO_WORKER } from '../../src/store/batches.js';
import { queueNameFor } from '../../src/store/instance.js';
import { csvOf } from '../helpers/batch.js';
import { runCli, startCli, type Background } from '../helpers/cli.js';
import { launchChromium, startDashboard } from '../helpers/dashboard.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const TOKEN = 'test-dashboard-token-0123456789';
let env: TestEnv;
let procs: Background[] = [];
let base: string;
let browser: Browser;

beforeAll(async () => {
  env = await createTestEnv({ accounts: 60 });
  const started = await startDashboard({ ...env.env, DASHBOARD_TOKEN: TOKEN });
  procs.push(started.dash);
  base = started.base;
  expect(started.dash.output()).toContain(`dashboard: ${base}/ (token: DASHBOARD_TOKEN)`);
  browser = await launchChromium();
});
/** The action buttons the batch page offers. */
const buttons = (page: Page) => page.locator('button:not(#prev):not(#next):not(#rows button):not(#retry-selected)').allTextContents();

afterAll(async () => {
  await browser?.close();
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.cleanup();
});

describe('the dashboard, in headless Chromium, while a batch runs', () => {
  it('shows progress to 100%, filters failed rows, retries them, and refuses requests without the token', async () => {
    // Without the token: refused, whatever the route.
    for (const path of ['/', '/api/batches', '/queues', '/metrics', '/api/batches/x/report.csv']) {
      expect((await fetch(base + path)).status, path).toBe(401);
      expect((await fetch(base + path, { headers: { authorization: 'Bearer wrong' } })).status, path).toBe(401);
    }
    expect((await fetch(`${base}/healthz`)).status).toBe(200);

    const rows = Array.from({ length: 40 }, (_, i) => ({
      workspace_name: `Dash ${i}`,
      owner_email: i % 10 === 9 ? 'late@example.com' : `owner${i + 1}@example.com`,
    }));
    const file = join(await mkdtemp(join(tmpdir(), 'dash-')), 'dash.csv');
    await writeFile(file, csvOf(rows));
    expect((await runCli(['ingest', file, '--batch-id', 'dash'], env.env)).code).toBe(0);

    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const missing: string[] = [];
    page.on('response', (r) => {
      if (r.status() === 404) missing.push(r.url());
    });
    // The console's files load under the page's CSP: nothing blocked, nothing thrown.
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/?token=${TOKEN}`);
    expect(page.url()).toBe(`${base}/`); // the token was traded for a session, out of the address bar
    await page.getByRole('link', { name: 'dash' }).click();
    await page.waitForURL(`${base}/batches/dash`);
    // The workers start only now, so the bar is seen moving; until then the batch says it has none.
    expect(Number(await page.locator('#progress').getAttribute('aria-valuenow'))).toBeLessThan(100);
    await page.waitForSelector('#state[data-state="stalled"]');
    expect(await page.locator('#advice').textContent()).toBe(NO_WORKER);
    expect(await page.locator('#rate').count()).toBe(0); // no rate, no ETA without a worker
    const queueName = queueNameFor((await env.db.query(`SELECT id FROM dify_provision.instance`)).rows[0].id);
    expect(await page.locator('#serves').textContent()).toBe(`Dify database "${env.name}" · queue ${queueName} · 0 workers`);
    expect(await page.locator('#shown').textContent()).toBe('lines 2–41');
    expect(await page.locator('#board-note').textContent()).toContain('count BullMQ jobs of every batch of this Dify, not the rows');
    expect(await buttons(page)).toEqual(['Cancel waiting rows']);
    procs.push(startCli(['worker', '--concurrency', '4'], env.env));
    await page.waitForSelector('#serves:text("· 1 worker")');
    await page.waitForSelector('#progress[aria-valuenow="100"]', { timeout: 60_000 });
    await page.waitForSelector('#state[data-state="done-with-failures"]:text("done with failures")');
    expect(await page.locator('#count-created b').textContent()).toBe('36');
    expect(await page.locator('#count-failed b').textContent()).toBe('4');
    expect(await page.locator('#advice').count()).toBe(0);
    expect(await buttons(page)).toEqual(['Retry failed rows']);
    await page.screenshot({ path: join(tmpdir(), 'dify-provision-dashboard.png'), fullPage: false });
    if (process.env.SAVE_SCREENSHOT) await copyFile(join(tmpdir(), 'dify-provision-dashboard.png'), projectFile('docs', 'dashboard.png'));

    await page.selectOption('#filter', 'failed');
    await page.waitForFunction(
      () =>
        document.querySelectorAll('#rows tr[data-outcome]').length === 4 &&
        [...document.querySelectorAll('#rows tr[data-outcome]')].every((r) => r.getAttribute('data-outcome') === 'failed'),
    );
    expect(await page.locator('#rows').textContent()).toContain('no Dify account has the email "late@example.com"');

    await env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Late', 'late@example.com', 'active')`);
    await page.click('#retry');
    await page.waitForSelector('#notice:text("4 failed row(s) queued again")');
    await page.waitForFunction(() => document.querySelector('#count-created b')?.textContent === '40', undefined, { timeout: 60_000 });
    await page.selectOption('#filter', '');
    await page.waitForSelector('#progress[aria-valuenow="100"]');
    await page.waitForSelector('#state[data-state="done"]');
    expect(await buttons(page)).toEqual([]); // a clean, finished batch offers no retry, cancel or resume
    await page.goto(`${base}/`);
    await page.waitForSelector('tr:has(a:text("dash")) .state[data-state="done"]');
    expect((await fetch(`${base}/favicon.ico`)).headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect(missing).toEqual([]); // no favicon 404, nothing else missing
    expect(errors).toEqual([]);

    const csv = await page.evaluate(async () => (await fetch('/api/batches/dash/report.csv')).text());
    expect(csv.split('\r\n').filter((l) => l.includes(',created,'))).toHaveLength(40);
    const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    expect(metrics).toMatch(/dify_provision_rows\{outcome="created"\} 40/);
    expect(metrics).toMatch(/^dify_provision_job_duration_seconds_count 40$/m);
    expect(metrics).toMatch(/^dify_provision_rows_finished_total\{outcome="created"\} 40$/m);
    expect(metrics).toMatch(/^dify_provision_workers 1$/m);
    const board = await fetch(`${base}/queues/api/queues`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(board.status).toBe(200);
    expect(await board.text()).toContain('not the rows of one batch'); // bull-board's own page explains its counts

    // With no worker running, a new batch waits: a page on another port of this host (same
    // site) auto-submits a form to cancel it, in the same browser that holds the cookie.
    await procs.pop()!.stop('SIGTERM');
    const later = join(await mkdtemp(join(tmpdir(), 'dash-')), 'later.csv');
    await writeFile(later, csvOf([1, 2, 3].map((i) => ({ workspace_name: `Later ${i}`, owner_email: `owner${i}@example.com` }))));
    expect((await runCli(['ingest', later, '--batch-id', 'later'], env.env)).code).toBe(0);
    const evilPort = await freePort();
    const evil = createServer((_req, res) =>
      res
        .setHeader('content-type', 'text/html')
        .end(
          `<form id="f" method="POST" action="${base}/api/batches/later/cancel"></form><script>document.getElementById('f').submit()</script>`,
        ),
    );
    await new Promise<void>((r) => evil.listen(evilPort, '127.0.0.1', r));
    try {
      const attacked = page.waitForResponse((r) => r.url().endsWith('/api/batches/later/cancel'));
      await page.goto(`http://127.0.0.1:${evilPort}/`);
      expect((await attacked).status()).toBe(403);
    } finally {
      evil.close();
    }
    const outcomes = async () =>
      (await env.db.query(`SELECT outcome FROM dify_provision.rows WHERE batch_id = 'later'`)).rows.map((r) => r.outcome);
    expect(await outcomes()).toEqual(['queued', 'queued', 'queued']);

    // The page's own buttons: cancel the waiting rows, then queue them again.
    await page.goto(`${base}/batches/later`);
    await page.waitForSelector('#state[data-state="stalled"]'); // its only worker was stopped
    expect(await page.locator('#rate').count()).toBe(0);
    await page.click('#cancel');
    await page.waitForSelector('#notice:text("3 waiting row(s) cancelled")');
    await page.waitForFunction(() => document.querySelector('#count-cancelled b')?.textContent === '3');
    await page.waitForSelector('#state[data-state="cancelled"]');
    expect(await buttons(page)).toEqual(['Queue cancelled rows again']);
    await page.click('#resume');
    await page.waitForSelector('#notice:text("3 cancelled row(s) queued again")');
    procs.push(startCli(['worker', '--concurrency', '4'], env.env));
    await page.waitForFunction(() => document.querySelector('#count-created b')?.textContent === '3', undefined, { timeout: 60_000 });
  });

  it('a listener on another port of the host reads the cookie: it gets a session, never the token, and no Bearer token', async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/?token=${TOKEN}`);
    await page.waitForSelector('h2');
    // Cookies ignore ports: the browser sends the dashboard's cookie to any local port it visits.
    const evilPort = await freePort();
    let seen: string | undefined;
    const evil = createServer((req, res) => {
      seen = req.headers.cookie;
      res.setHeader('content-type', 'text/html').end('<p>thanks</p>');
    });
    await new Promise<void>((r) => evil.listen(evilPort, '127.0.0.1', r));
    try {
      await page.goto(`http://127.0.0.1:${evilPort}/`);
    } finally {
      evil.close();
      await page.close();
    }
    expect(seen).toMatch(/dify_provision_session=[A-Za-z0-9_-]{43}/);
    expect(seen).not.toContain(TOKEN);
    expect(seen).not.toContain(encodeURIComponent(TOKEN));
    const session = /dify_provision_session=([A-Za-z0-9_-]{43})/.exec(seen!)![1]!;
    for (const headers of [{ authorization: `Bearer ${session}` }, { 'x-dashboard-token': session }] as Record<string, string>[])
      expect((await fetch(`${base}/api/batches`, { headers })).status).toBe(401);
    expect((await fetch(`${base}/api/batches?token=${session}`)).status).toBe(401);
    // As the cookie it is the browser's session until it ends (an hour): see docs/security.md.
    expect((await fetch(`${base}/api/batches`, { headers: { cookie: `dify_provision_session=${session}` } })).status).toBe(200);
  });

  it('generates a token when DASHBOARD_TOKEN is unset, into a 0600 file whose path it prints (never the token)', async () => {
    const { DASHBOARD_TOKEN: _unset, ...rest } = env.env;
    const { dash, port } = await startDashboard(rest);
    procs.push(dash);
    const m = /dashboard: http:\/\/127\.0\.0\.1:\d+\/\n\(token generated for this run, in (\S+) \(0600\)/.exec(dash.output());
    expect(m, dash.output()).not.toBeNull();
    const token = (await readFile(m![1]!, 'utf8')).trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(dash.output()).not.toContain(token);
    expect((await fetch(`http://127.0.0.1:${port}/api/batches`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/api/batches`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(401);
  });

  it('pages a 10,000-row batch on the server', async () => {
    await env.db.query(`INSERT INTO dify_provision.batches (id, ingest_finished_at) VALUES ('big', now())`);
    await env.db.query(
      `INSERT INTO dify_provision.rows (batch_id, line, workspace_name, owner_email, outcome, finished_at)
       SELECT 'big', i + 1, 'Big ' || i, 'owner1@example.com', CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'created' END, now() FROM generate_series(1, 10000) i`,
    );
    const get = async (path: string): Promise<any> => (await fetch(base + path, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
    const first = await get('/api/batches/big/rows?limit=50');
    expect(first.rows).toHaveLength(50);
    expect(first.more).toBe(true);
    expect(first.rows[0].line).toBe(2);
    const deep = await get('/api/batches/big/rows?limit=50&after=9990');
    expect(deep.rows.map((r: { line: number }) => r.line)).toEqual(Array.from({ length: 11 }, (_, i) => 9991 + i));
    expect(deep.more).toBe(false);
    const failed = await get('/api/batches/big/rows?outcome=failed&limit=200');
    expect(failed.rows).toHaveLength(100);
    expect((await get('/api/batches/big/rows?limit=100000')).rows).toHaveLength(200);
    const status = await get('/api/batches/big');
    expect(status).toMatchObject({ total: 10000, counts: { created: 9900, failed: 100 }, done: true });
  });
});
