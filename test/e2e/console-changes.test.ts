// A change batch in the operator console: the built CLI's dashboard and a worker as separate
// processes on real Redis and PostgreSQL, the console in headless Chromium. The change batch is
// listed beside the ingest batch that made its workspaces, tagged as changes, with its own
// outcomes; its page counts applied, unchanged, failed and rejected rows and shows each row's
// action, workspace, person, role or new name, outcome and detail.
import { randomUUID } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitUntilDone } from '../helpers/batch.js';
import { startCli, type Background } from '../helpers/cli.js';
import { launchChromium, startDashboard } from '../helpers/dashboard.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const TOKEN = 'test-console-token-0123456789';
let env: TestEnv;
const procs: Background[] = [];
let base: string;
let browser: Browser;

beforeAll(async () => {
  env = await createTestEnv({ accounts: 10 });
  const started = await startDashboard({ ...env.env, DASHBOARD_TOKEN: TOKEN });
  procs.push(started.dash);
  base = started.base;
  procs.push(startCli(['worker', '--concurrency', '4'], env.env));
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.cleanup();
});

const post = async (path: string, body: unknown) => {
  const res = await fetch(`${base}/api/v1${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return res.json();
};
const text = (page: Page, selector: string) => page.locator(selector).textContent();
/** The cells of a row of the batch's table, by line (without the select box and retry button around them). */
const cells = (page: Page, line: number) =>
  page.locator(`#rows tr[data-line="${line}"] td`).evaluateAll((tds) => tds.slice(1, -1).map((td) => td.textContent));

describe('the console shows a change batch', () => {
  it('beside the ingest batch, with its outcomes, counts and each row as a change', async () => {
    const one = randomUUID();
    await post('/batches', {
      rows: [{ workspace_name: 'One', owner_email: 'owner1@example.com', members: 'owner2@example.com:admin', workspace_id: one }],
      batch_id: 'world',
    });
    await waitUntilDone(env, ['world']);
    await post('/changes', {
      batch_id: 'staff',
      rows: [
        { action: 'add_member', workspace_id: one, email: 'owner3@example.com', role: 'editor' },
        { action: 'set_role', workspace_id: one, email: 'owner2@example.com', role: 'admin' }, // already admin: unchanged
        { action: 'rename', workspace_id: one, name: 'One, renamed' },
        { action: 'set_role', workspace_id: one, email: 'owner1@example.com', role: 'normal' }, // the owner: refused, failed
        { action: 'promote', workspace_id: one }, // rejected
      ],
      options: { attempts: 1 },
    });
    await waitUntilDone(env, ['staff']);

    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(120_000); // a backstop: the waits are for conditions, on a machine that may be busy
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/?token=${TOKEN}`);
    await page.waitForSelector('tr[data-batch="staff"]');
    expect(await text(page, 'tr[data-batch="staff"] [data-kind]')).toBe('changes');
    expect(await text(page, 'tr[data-batch="world"] [data-kind]')).toBe('new workspaces');
    expect(await text(page, 'tr[data-batch="staff"]')).toContain('2 applied, 1 unchanged, 1 failed, 1 rejected');
    expect(await text(page, 'tr[data-batch="world"]')).toContain('1 created, 0 existing, 0 failed, 0 rejected');

    await page.click('a[href="/batches/staff"]');
    await page.waitForSelector('#state[data-state="done-with-failures"]');
    expect(await text(page, 'h2')).toMatch(/^Change batch staff/);
    const counts = await page.locator('.counts > div').evaluateAll((ds) => ds.map((d) => `${d.id}=${d.querySelector('b')?.textContent}`));
    expect(counts).toEqual([
      'count-queued=0',
      'count-active=0',
      'count-applied=2',
      'count-unchanged=1',
      'count-rejected=1',
      'count-failed=1',
      'count-cancelled=0',
    ]);
    expect((await page.locator('#rows th').allTextContents()).slice(1, -1)).toEqual([
      'line',
      'action',
      'workspace',
      'person',
      'role / name',
      'outcome',
      'attempts',
      'detail',
    ]);
    expect(await cells(page, 1)).toEqual(['1', 'add_member', one, 'owner3@example.com', 'editor', 'applied', '1', '']);
    expect(await cells(page, 2)).toEqual(['2', 'set_role', one, 'owner2@example.com', 'admin', 'unchanged', '1', 'already admin']);
    expect(await cells(page, 3)).toEqual(['3', 'rename', one, '', 'One, renamed', 'applied', '1', '']);
    const refused = await cells(page, 4);
    expect(refused.slice(0, 6)).toEqual(['4', 'set_role', one, 'owner1@example.com', 'normal', 'failed']);
    expect(refused[7]).toMatch(/^email: owner1@example.com is the workspace's owner/);
    const rejected = await cells(page, 5);
    expect(rejected[5]).toBe('rejected');
    expect(rejected[7]).toMatch(/^action: "promote" is not an action/);
    // The failed row can be retried from the page; the filter offers the change outcomes.
    expect(await page.locator('#retry').count()).toBe(1);
    expect(await page.locator('#filter option').allTextContents()).toEqual([
      'all outcomes',
      'queued',
      'active',
      'applied',
      'unchanged',
      'rejected',
      'failed',
      'cancelled',
    ]);
    await page.selectOption('#filter', 'applied');
    await page.waitForFunction(() => document.querySelectorAll('#rows tr[data-line]').length === 2);
    expect(await page.locator('#rows tr[data-line]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-line')))).toEqual([
      '1',
      '3',
    ]);
    expect(errors).toEqual([]);
  });
});
