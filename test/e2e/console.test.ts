// The operator console and the HTTP API's Python client, end to end: the built CLI's dashboard and
// a worker as separate processes on real Redis and PostgreSQL, the console in headless Chromium,
// the sample in python3.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { projectFile } from '../../src/common/project-files.js';
import { IngestOptionsSchema } from '../../src/ingest/options.js';
import { csvOf, waitUntilDone } from '../helpers/batch.js';
import { runCli, runProgram, startCli, type Background } from '../helpers/cli.js';
import { launchChromium, startDashboard } from '../helpers/dashboard.js';
import { difyRedisLines, operatorKeyFiles } from '../helpers/dify-invitations.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const TOKEN = 'test-console-token-0123456789';
const READER = 'test-console-reader-0123456789';
let env: TestEnv;
const procs: Background[] = [];
let base: string;
let browser: Browser;

const DIFY_DB = 14;
let operator: { pub: string; key: string };

beforeAll(async () => {
  env = await createTestEnv({ accounts: 30 });
  // Dify's settings for invitations (its Redis, CONSOLE_WEB_URL): the dashboard's "Invite pending people".
  operator = await operatorKeyFiles(env.dir);
  const difyEnv = join(env.dir, 'dify.env');
  await writeFile(difyEnv, [...difyRedisLines(DIFY_DB, `console-${env.name}`), 'CONSOLE_WEB_URL=https://dify.example.com', ''].join('\n'));
  const started = await startDashboard({
    ...env.env,
    DASHBOARD_TOKEN: TOKEN,
    DASHBOARD_READ_TOKENS: READER,
    DIFY_ENV_FILE: difyEnv,
  });
  procs.push(started.dash);
  base = started.base;
  expect(started.dash.output()).toContain(`dashboard: ${base}/`);
  procs.push(startCli(['worker', '--concurrency', '4'], env.env));
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await env?.cleanup();
});

/** A page with a session, that records what the console logs as an error. */
async function consolePage(): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(120_000); // a backstop: the waits are for conditions, on a machine that may be busy
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/?token=${TOKEN}`);
  await page.getByRole('link', { name: 'New batch' }).click();
  await page.waitForURL(`${base}/new`);
  return { page, errors };
}

const text = (page: Page, selector: string) => page.locator(selector).textContent();
/** The plan's counts, as the page shows them. */
const planCounts = async (page: Page) =>
  Object.fromEntries(
    await Promise.all(
      ['would-create', 'existing', 'rejected', 'would-fail'].map(async (k) => [k, Number(await text(page, `#plan-${k} b`))]),
    ),
  );
/** The rows the plan lists, as line:verdict. */
const verdicts = (page: Page) =>
  page
    .locator('#plan-rows tr[data-line]')
    .evaluateAll((trs) => trs.map((tr) => `${tr.getAttribute('data-line')}:${tr.getAttribute('data-verdict')}`));
/** Sets a New batch option field as a person does (typed, then the field's change). */
async function setOption(page: Page, name: string, value: string): Promise<void> {
  await page.fill(`#opt-${name}`, value);
  await page.locator(`#opt-${name}`).dispatchEvent('change');
}
/** Chooses a file the plan refuses; its refusal, in the console's words (no CLI flag). */
async function refusedPlan(page: Page, file: { name: string; mimeType: string; buffer: Buffer }): Promise<string> {
  await page.setInputFiles('#file', file);
  await page.waitForSelector('#plan-error');
  const refused = (await page.textContent('#plan-error'))!;
  expect(refused).not.toContain('--');
  return refused;
}
const batches = async () => {
  const { rows } = await env.db.query(`SELECT to_regclass('dify_provision.batches') IS NOT NULL AS has`);
  return rows[0].has ? Number((await env.db.query(`SELECT count(*) AS n FROM dify_provision.batches`)).rows[0].n) : 0;
};

describe('the console: a new batch from the browser', () => {
  it('chosen file → its plan with the rows that would not be created → Provision → the live batch, done', async () => {
    const rows = [
      ...[1, 2, 3, 4].map((i) => ({ workspace_name: `Console ${i}`, owner_email: `owner${i}@example.com` })),
      { workspace_name: 'Nobody Inc', owner_email: 'nobody@example.com' }, // line 6: no such account, would fail
      { workspace_name: '', owner_email: 'owner5@example.com' }, // line 7: rejected, no name
    ];
    const file = { name: 'customers.csv', mimeType: 'text/csv', buffer: Buffer.from(csvOf(rows)) };
    const { page, errors } = await consolePage();
    await page.setInputFiles('#file', file);
    await page.waitForSelector('#plan-would-create');
    expect(await planCounts(page)).toEqual({ 'would-create': 4, existing: 0, rejected: 1, 'would-fail': 1 });
    const created = ['2', '3', '4', '5'].map((l) => `${l}:would_create`);
    expect(await verdicts(page)).toEqual([...created, '6:would_fail', '7:rejected']);
    expect(await text(page, '#plan-rows tr[data-line="6"]')).toMatch(
      /Nobody Incnobody@example\.comwould failowner_email: .*nobody@example\.com/,
    );
    expect(await text(page, '#plan-rows tr[data-line="7"]')).toContain('workspace_name: ');
    expect(await text(page, '#plan-rows tr[data-line="2"] td.err')).toBe('');
    expect(await batches()).toBe(0); // a plan writes nothing

    // An option plans again, and the batch is made with it: the missing owner gets an account.
    await page.check('#opt-create_missing_owners');
    await page.waitForFunction(() => document.querySelector('#plan-would-create b')?.textContent === '5');
    expect(await planCounts(page)).toEqual({ 'would-create': 5, existing: 0, rejected: 1, 'would-fail': 0 });
    expect(await verdicts(page)).toEqual([...created, '6:would_create', '7:rejected']);
    await page.click('#provision');
    await page.waitForURL(/\/batches\/customers-[0-9a-f]{10}$/);
    await page.waitForSelector('#state[data-state="done-with-failures"]', { timeout: 120_000 }); // the rejected row
    expect(await text(page, '#count-created b')).toBe('5');
    expect(await text(page, '#count-failed b')).toBe('0');
    expect(await text(page, '#count-rejected b')).toBe('1');
    expect(
      Number((await env.db.query(`SELECT count(*) AS n FROM tenants WHERE name LIKE 'Console %' OR name = 'Nobody Inc'`)).rows[0].n),
    ).toBe(5);
    expect((await env.db.query(`SELECT status FROM accounts WHERE email = 'nobody@example.com'`)).rows).toHaveLength(1);

    // The same file again: its rows exist now.
    await page.goto(`${base}/new`);
    await page.setInputFiles('#file', file);
    await page.waitForSelector('#plan-existing');
    expect(await planCounts(page)).toEqual({ 'would-create': 0, existing: 5, rejected: 1, 'would-fail': 0 });
    expect(await verdicts(page)).toEqual([...['2', '3', '4', '5', '6'].map((l) => `${l}:existing`), '7:rejected']);
    expect(errors).toEqual([]);
  });

  it('a dropped file with broken rows: each at its line; a file that cannot be read: its error at its line, nothing to provision', async () => {
    const { page, errors } = await consolePage();
    // Line 3 has a field more than the header; line 5 opens a quote it never closes (so line 6 is never read).
    const broken =
      'workspace_name,owner_email\nGood,owner1@example.com\nBad,owner2@example.com,extra\nFine,owner3@example.com\n"Open,owner4@example.com\nLost,owner5@example.com\n';
    const dropped = await page.evaluateHandle((csv) => {
      const data = new DataTransfer();
      data.items.add(new File([csv], 'broken.csv', { type: 'text/csv' }));
      return data;
    }, broken);
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: dropped });
    await page.waitForSelector('#plan-would-create');
    expect(await text(page, '#plan-title')).toBe('Plan for broken.csv');
    expect(await planCounts(page)).toEqual({ 'would-create': 2, existing: 0, rejected: 2, 'would-fail': 0 });
    expect(await verdicts(page)).toEqual(['2:would_create', '3:rejected', '4:would_create', '5:rejected']);
    expect(await text(page, '#plan-rows tr[data-line="3"]')).toContain('has 3 field(s) but the header has 2');
    expect(await text(page, '#plan-rows tr[data-line="5"]')).toContain('opens a quote that is never closed');

    // A header naming a column that does not exist: the file is refused (422), at its line, with no Provision.
    await page.setInputFiles('#file', {
      name: 'no-owner.csv',
      mimeType: 'text/csv',
      buffer: Buffer.from('workspace_name,owner\nA,owner1@example.com\n'),
    });
    await page.waitForSelector('#plan-error');
    expect(await text(page, '#plan-error')).toContain('line 1: unknown column(s) "owner"');
    expect(await text(page, '#problems tr[data-line="1"]')).toContain('the columns are workspace_name, owner_email');
    expect(await page.locator('#provision').count()).toBe(0);
    expect(await batches()).toBe(1); // only the first test's batch: planning wrote nothing
    expect(errors).toEqual([]);
  });
});

describe('a read-only session (DASHBOARD_READ_TOKENS)', () => {
  it('offers no New batch and no batch actions, where an admin session has them; /new says why', async () => {
    // A batch with a failed row: its page offers "Retry failed rows" to an admin.
    const made = await fetch(`${base}/api/v1/batches`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ batch_id: 'read-only-view', rows: [{ workspace_name: 'Ghost', owner_email: 'ghost@example.com' }] }),
    });
    expect(made.status, await made.clone().text()).toBe(201);
    const failed = async () =>
      Number(
        (await env.db.query(`SELECT count(*) AS n FROM dify_provision.rows WHERE batch_id = 'read-only-view' AND outcome = 'failed'`))
          .rows[0].n,
      );
    for (let i = 0; (await failed()) === 0; i++) {
      expect(i, 'the row to fail').toBeLessThan(1200);
      await new Promise((r) => setTimeout(r, 100));
    }
    const open = async (token: string) => {
      const page = await browser.newPage(); // a context of its own: its own session cookie
      page.setDefaultTimeout(120_000);
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`${base}/batches/read-only-view?token=${token}`);
      await page.waitForSelector('#progress');
      return { page, errors };
    };
    const admin = await open(TOKEN);
    await admin.page.waitForSelector('button#retry');
    expect(await admin.page.locator('#new-link').count()).toBe(1);
    const reader = await open(READER);
    expect(await reader.page.locator('#new-link').count()).toBe(0);
    expect(await reader.page.locator('button').allTextContents()).not.toContain('Retry failed rows');
    await reader.page.goto(`${base}/new`);
    await reader.page.waitForSelector('main p.err');
    expect(await text(reader.page, 'main p.err')).toContain('read-only');
    expect(await reader.page.locator('#file').count()).toBe(0);
    expect([...admin.errors, ...reader.errors]).toEqual([]);
    await admin.page.close();
    await reader.page.close();
  });
});

describe('samples/provision_client.py (Python standard library only)', () => {
  /** Writes `rows` as the CSV `name` and runs the sample on it. */
  const python = async (name: string, rows: Record<string, string>[], ...args: string[]) => {
    const file = join(env.dir, name);
    await writeFile(file, csvOf(rows));
    return runProgram('python3', [projectFile('samples', 'provision_client.py'), file, ...args], {
      PATH: process.env.PATH,
      DIFY_PROVISION_URL: base,
      DIFY_PROVISION_TOKEN: TOKEN,
    });
  };

  it('uploads a CSV, polls until done and prints the report', async () => {
    const ran = await python(
      'python.csv',
      [1, 2, 3].map((i) => ({ workspace_name: `Python ${i}`, owner_email: `owner${i + 10}@example.com` })),
    );
    expect(ran.code, ran.stderr).toBe(0);
    const lines = ran.stdout.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines.map((l) => l.split('\t').slice(0, 4))).toEqual(
      [1, 2, 3].map((i) => [String(i + 1), 'created', `Python ${i}`, `owner${i + 10}@example.com`]),
    );
    const tenants = await env.db.query(`SELECT id FROM tenants WHERE name LIKE 'Python %' ORDER BY name`);
    expect(lines.map((l) => l.split('\t')[4])).toEqual(tenants.rows.map((r) => r.id));
    // The file's name and content name the batch, as the CLI's and the console's do.
    const id = /^batch (python-[0-9a-f]{10}): 3 rows, 3 queued, 0 rejected$/m.exec(ran.stderr)?.[1];
    expect(id, ran.stderr).toBeDefined();
    expect(ran.stderr).toMatch(new RegExp(`^${id}: 3 created$`, 'm'));
    expect(ran.stderr).not.toContain(TOKEN);
  });

  it('a row that fails: exit 1, with why; a strict upload with invalid rows: exit 2, every invalid row by line', async () => {
    const ran = await python('python-fails.csv', [
      { workspace_name: 'Python ok', owner_email: 'owner20@example.com' },
      { workspace_name: 'Python ghost', owner_email: 'ghost@example.com' },
    ]);
    expect(ran.code, ran.stderr).toBe(1);
    expect(ran.stdout).toMatch(/^3\tfailed\tPython ghost\tghost@example.com\t.*ghost@example\.com/m);

    const refused = await python(
      'python-strict.csv',
      [
        { workspace_name: 'Strict ok', owner_email: 'owner21@example.com' },
        { workspace_name: 'Strict bad', owner_email: 'not-an-email' },
        { workspace_name: '', owner_email: 'owner22@example.com' },
      ],
      '--strict',
    );
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(/refused \(422 STRICT_REJECTED\)/);
    expect(refused.stderr).toMatch(/line 3, owner_email: /);
    expect(refused.stderr).toMatch(/line 4, workspace_name: /);
    expect(Number((await env.db.query(`SELECT count(*) AS n FROM tenants WHERE name LIKE 'Strict %'`)).rows[0].n)).toBe(0);
  });
});

describe('the console: rows (issue 32 item 5)', () => {
  it('retries one row, then a selection; finds rows by workspace, owner or external id; shows a row in full; times in one format', async () => {
    const rows = [
      { workspace_name: 'Rows ok', owner_email: 'owner20@example.com', external_id: 'r-ok' },
      ...[1, 2, 3, 4].map((i) => ({ workspace_name: `Rows late ${i}`, owner_email: `late${i}@example.com`, external_id: `r-late-${i}` })),
    ];
    const path = join(env.dir, 'rows.csv');
    await writeFile(path, csvOf(rows));
    expect((await runCli(['ingest', path, '--batch-id', 'rows'], env.env)).code).toBe(0);
    const outcomes = async () =>
      (await env.db.query(`SELECT line, outcome FROM dify_provision.rows WHERE batch_id = 'rows' ORDER BY line`)).rows.map(
        (r) => `${r.line}:${r.outcome}`,
      );
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(120_000);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/?token=${TOKEN}`);
    await page.goto(`${base}/batches/rows`);
    await page.waitForSelector('#state[data-state="done-with-failures"]');
    expect(await outcomes()).toEqual(['2:created', '3:failed', '4:failed', '5:failed', '6:failed']);
    // The people exist now: a retry will create their workspaces.
    await env.db.query(
      `INSERT INTO accounts (name, email, status) SELECT 'Late ' || i, 'late' || i || '@example.com', 'active' FROM generate_series(1, 4) AS i`,
    );
    expect(await page.locator('#retry-2').count()).toBe(0); // a created row has no retry

    // One row: that row only (the other failed rows stay failed).
    await page.click('#retry-3');
    await page.waitForSelector('#rows tr[data-line="3"][data-outcome="created"]');
    expect(await page.textContent('#notice')).toBe('1 row(s) queued again');
    expect(await outcomes()).toEqual(['2:created', '3:created', '4:failed', '5:failed', '6:failed']);
    // A selection: the rows selected, not every failed row (line 6 is left out).
    await page.check('#select-4');
    await page.check('#select-5');
    await page.waitForFunction(() => document.querySelector('#retry-selected')?.textContent === 'Retry selected (2)');
    await page.click('#retry-selected');
    await page.waitForSelector('#rows tr[data-line="5"][data-outcome="created"]');
    await page.waitForSelector('#rows tr[data-line="4"][data-outcome="created"]');
    expect(await page.textContent('#notice')).toBe('2 row(s) queued again');
    expect(await outcomes()).toEqual(['2:created', '3:created', '4:created', '5:created', '6:failed']);
    expect(await page.locator('#retry-6').count()).toBe(1);

    // Search by external id, owner (any case) and workspace name.
    const lines = () => page.locator('#rows tr[data-line]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-line')));
    for (const [typed, line] of [
      ['r-late-2', '4'],
      ['LATE3@', '5'],
      ['rows ok', '2'],
    ] as const) {
      await page.fill('#search', typed);
      await page.waitForFunction(
        (l) => [...document.querySelectorAll('#rows tr[data-line]')].map((tr) => tr.getAttribute('data-line')).join() === l,
        line,
      );
      expect(await lines()).toEqual([line]);
    }
    await page.fill('#search', '');
    await page.waitForFunction(() => document.querySelectorAll('#rows tr[data-line]').length === 5);

    // A row in full: attempts and round, times, the workspace it wrote.
    await page.click('#line-3');
    await page.waitForSelector('#row-detail[data-line="3"]');
    expect(await page.textContent('#detail-attempts')).toBe('1 (round 2)');
    const tenant = (await env.db.query(`SELECT tenant_id FROM dify_provision.rows WHERE batch_id = 'rows' AND line = 3`)).rows[0].tenant_id;
    expect(await page.textContent('#detail-tenant')).toBe(tenant);
    expect(await page.textContent('#detail-error')).toBe('—');
    // One format for times: ISO 8601 in UTC, to the second, here and on the list.
    const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
    expect(await page.textContent('#detail-finished')).toMatch(iso);
    await page.click('#detail-close');
    await page.waitForSelector('#row-detail', { state: 'detached' });
    await page.goto(`${base}/`);
    // The list is drawn once its first answer arrives: wait for it, then read every time.
    await page.locator('td.when').first().waitFor();
    const created = await page.locator('td.when').allTextContents();
    expect(created.length).toBeGreaterThan(0);
    for (const t of created) expect(t).toMatch(iso);
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('the console: "Invite pending people" (issue 32 item 9)', () => {
  it("issues invitations for the pending people a batch made without invite: tokens in Dify's Redis, links sealed to the key pasted", async () => {
    const path = join(env.dir, 'pending.csv');
    await writeFile(
      path,
      csvOf([{ workspace_name: 'Pending Co', owner_email: 'ann@pending.example', members: 'bob@pending.example:admin' }]),
    );
    expect((await runCli(['ingest', path, '--create-missing-owners', '--batch-id', 'pending'], env.env)).code).toBe(0);
    await waitUntilDone(env, ['pending']);
    const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    try {
      const tokens = () => dify.keys(`console-${env.name}:member_invite:token:*`);
      expect(await tokens()).toEqual([]);
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      page.setDefaultTimeout(120_000);
      await page.goto(`${base}/?token=${TOKEN}`);
      await page.goto(`${base}/batches/pending`);
      await page.waitForSelector('#invite-panel');
      await page.fill('#invite-seal', await readFile(operator.pub, 'utf8'));
      await page.click('#invite');
      await page.waitForFunction(() => /pending person/.test(document.querySelector('#invite-notice')?.textContent ?? ''));
      expect(await page.textContent('#invite-notice')).toMatch(/^2 pending person\(s\) got an invitation/);
      expect(await tokens()).toHaveLength(2);
      // The links, sealed to the key pasted, revealed once with the private half.
      const out = join(env.dir, 'pending-links.csv');
      const revealed = await runCli(['secrets', 'pending', '--invites', '--key', operator.key, '--out', out], env.env);
      expect(revealed.code, revealed.stderr).toBe(0);
      const links = await readFile(out, 'utf8');
      expect(links).toContain(',Pending Co,ann@pending.example,owner,https://dify.example.com/activate?email=ann%40pending.example&token=');
      expect(links).toContain(',Pending Co,bob@pending.example,admin,https://dify.example.com/activate?email=bob%40pending.example&token=');
      // Again: nobody new to invite.
      await page.click('#invite');
      await page.waitForFunction(() => /^0 pending person/.test(document.querySelector('#invite-notice')?.textContent ?? ''));
      expect(await tokens()).toHaveLength(2);
      await page.close();
    } finally {
      dify.disconnect();
    }
  });
});

describe("the console's advice names its own controls (issue 32)", () => {
  it("a row whose error says to `retry` names the row's retry button, not the CLI", async () => {
    const path = join(env.dir, 'gone.csv');
    await writeFile(path, csvOf([{ workspace_name: 'Gone', owner_email: 'owner24@example.com', external_id: 'gone-1' }]));
    expect((await runCli(['ingest', path, '--batch-id', 'gone'], env.env)).code).toBe(0);
    await waitUntilDone(env, ['gone']);
    // Its workspace deleted in Dify: the same row again fails, saying how to create it again and `retry`.
    const { tenant_id: tenant } = (await env.db.query(`SELECT tenant_id FROM dify_provision.rows WHERE batch_id = 'gone'`)).rows[0];
    await env.db.query(`DELETE FROM tenant_account_joins WHERE tenant_id = $1`, [tenant]);
    await env.db.query(`DELETE FROM tenants WHERE id = $1`, [tenant]);
    expect((await runCli(['ingest', path, '--batch-id', 'gone-again'], env.env)).code).toBe(0);
    await waitUntilDone(env, ['gone-again']);
    const error = (await env.db.query(`SELECT error FROM dify_provision.rows WHERE batch_id = 'gone-again'`)).rows[0].error;
    expect(error).toContain('`retry`');
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(120_000);
    await page.goto(`${base}/?token=${TOKEN}`);
    await page.goto(`${base}/batches/gone-again`);
    await page.waitForSelector('#rows tr[data-line="2"]');
    const shown = (await page.textContent('#rows tr[data-line="2"] td.err'))!;
    expect(shown).toContain('and "retry" (the row\'s button, or "Retry failed rows")');
    expect(shown).not.toContain('`');
    await page.click('#line-2');
    await page.waitForSelector('#row-detail[data-line="2"]');
    expect(await page.textContent('#detail-error')).toBe(shown);
    await page.close();
  });
});

/** A POST to the API, as the admin unless `headers` say otherwise. */
const post = (path: string, body: unknown, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }) =>
  fetch(`${base}/api/v1${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

/** B's batch creates `person` (a member of its workspace); its invitation link is sealed for B's operator; the account is activated through it. */
async function preclaimedByB(batchId: string, person: string): Promise<void> {
  const b = await post('/batches', {
    batch_id: batchId,
    rows: [{ workspace_name: `${batchId} workspace`, owner_email: `owner-of-${batchId}@claim.example`, members: `${person}:normal` }],
    options: { create_missing_owners: true },
  });
  expect(b.status, await b.clone().text()).toBe(201);
  await waitUntilDone(env, [batchId]);
  const invited = await post(`/batches/${batchId}/invite`, { seal_to: await readFile(operator.pub, 'utf8') });
  expect(invited.status, await invited.clone().text()).toBe(200);
  await env.db.query(`UPDATE accounts SET status = 'active', initialized_at = now() WHERE email = $1`, [person]);
}

describe('the console: a row refused by the pre-claim guard (docs/security.md)', () => {
  it('its retry offers to trust the address its error names, saying what that means; confirmed, the workspace is created; a row failed otherwise, a read-only session or another site: no trust', async () => {
    const CEO = "o'neil+ceo@claim.example";
    const NAME = '<img src=x id=injected> Claim A';
    await preclaimedByB('claim-b', CEO);
    // A's batch: line 1 names the address (refused by the guard), line 2 an owner with no account (failed otherwise).
    const a = await post('/batches', {
      batch_id: 'claim-a',
      rows: [
        { workspace_name: NAME, owner_email: CEO },
        { workspace_name: 'Claim Ghost', owner_email: 'ghost@claim.example' },
      ],
    });
    expect(a.status, await a.clone().text()).toBe(201);
    await waitUntilDone(env, ['claim-a']);
    const rows = async () =>
      (await env.db.query(`SELECT line, outcome, round FROM dify_provision.rows WHERE batch_id = 'claim-a' ORDER BY line`)).rows.map(
        (r) => `${r.line}:${r.outcome}:${r.round}`,
      );
    expect(await rows()).toEqual(['1:failed:1', '2:failed:1']);
    const trusted = async () =>
      (await (await fetch(`${base}/api/v1/batches/claim-a`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()).options
        .trust_accounts;

    // A read-only session: no retry, so no trust; its token is refused one.
    const reader = await browser.newPage();
    reader.setDefaultTimeout(120_000);
    await reader.goto(`${base}/batches/claim-a?token=${READER}`);
    await reader.waitForSelector('#rows tr[data-line="1"][data-outcome="failed"]');
    expect(await reader.locator('#retry-1, #trust-panel').count()).toBe(0);
    await reader.close();
    const asReader = await post(
      '/batches/claim-a/rows/retry',
      { lines: [1], trust_accounts: [CEO] },
      { authorization: `Bearer ${READER}` },
    );
    expect(asReader.status).toBe(403);

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(120_000);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/?token=${TOKEN}`);
    await page.goto(`${base}/batches/claim-a`);
    await page.waitForSelector('#rows tr[data-line="1"][data-outcome="failed"]');
    // The error names the row's retry, not the CLI's flag.
    const shown = (await page.textContent('#rows tr[data-line="1"] td.err'))!;
    expect(shown).toContain(`${CEO}: this account was created or invited by another batch`);
    expect(shown).toContain('confirm it is the person (the row\'s "retry" offers to trust it) or use another address');
    expect(shown).not.toContain('--trust-account');

    // The row failed for another reason: its retry queues it at once and offers no trust.
    expect(await page.textContent('#retry-2')).toBe('retry');
    await page.click('#retry-2');
    await page.waitForFunction(
      () => document.querySelector('#trust-panel') !== null || document.querySelector('#notice')?.textContent !== '',
    );
    expect(await page.locator('#trust-panel').count()).toBe(0);
    expect(await page.textContent('#notice')).toBe('1 row(s) queued again');
    await waitUntilDone(env, ['claim-a']);
    expect(await rows()).toEqual(['1:failed:1', '2:failed:2']);

    // The pre-claimed row's retry asks first: the address, what trusting it means; nothing is sent yet.
    await page.reload();
    await page.waitForSelector('#rows tr[data-line="1"][data-outcome="failed"]');
    expect(await page.textContent('#retry-1')).toBe('retry…');
    await page.click('#retry-1');
    await page.waitForFunction(
      () => document.querySelector('#trust-panel') !== null || document.querySelector('#notice')?.textContent !== '',
    );
    expect(await page.getAttribute('#trust-panel', 'data-line')).toBe('1');
    expect(await page.textContent('#trust-title')).toBe(`Line 1 (${NAME}): refused by the pre-claim guard`);
    expect(await page.locator('#trust-panel img, #injected').count()).toBe(0); // the name is text, never HTML
    const what = (await page.textContent('#trust-what'))!;
    expect(what).toContain(`Another batch's operator was given the invitation link of ${CEO} and the account is active`);
    expect(what).toContain(`Trusting ${CEO} lets this row join that account to its workspace`);
    expect(what).toContain('trust it only if you have confirmed it is the person');
    expect(await page.textContent('#trust-retry')).toBe(`Trust ${CEO} and retry line 1`);
    expect(await page.textContent('#notice')).toBe('');
    await page.click('#trust-cancel');
    await page.waitForSelector('#trust-panel', { state: 'detached' });
    expect(await rows()).toEqual(['1:failed:1', '2:failed:2']);

    // From another site, with the admin's session: refused, nothing trusted.
    const cookie = (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
    const forged = await post(
      '/batches/claim-a/rows/retry',
      { lines: [1], trust_accounts: [CEO] },
      {
        cookie,
        'x-requested-with': 'dify-provision',
        origin: 'http://127.0.0.1:9999',
      },
    );
    expect(forged.status).toBe(403);
    expect(await rows()).toEqual(['1:failed:1', '2:failed:2']);
    expect(await trusted()).toBeUndefined();

    // Confirmed: the row is queued trusting the address, and its workspace is created with that owner.
    await page.click('#retry-1');
    await page.waitForSelector('#trust-panel');
    await page.click('#trust-retry');
    await page.waitForFunction(() => document.querySelector('#notice')?.textContent !== '');
    expect(await page.textContent('#notice')).toBe(`1 row(s) queued again (the batch trusts ${CEO} now)`);
    expect(await page.locator('#trust-panel').count()).toBe(0);
    await waitUntilDone(env, ['claim-a']);
    expect(await rows()).toEqual(['1:created:2', '2:failed:2']);
    await page.waitForSelector('#rows tr[data-line="1"][data-outcome="created"]');
    const owner = await env.db.query(
      `SELECT a.email FROM tenant_account_joins j JOIN tenants t ON t.id = j.tenant_id JOIN accounts a ON a.id = j.account_id
        WHERE t.name = $1 AND j.role = 'owner'`,
      [NAME],
    );
    expect(owner.rows).toEqual([{ email: CEO }]);
    expect(await trusted()).toEqual([CEO]);
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('the console: a row whose workspace exists already, refused by the pre-claim guard', () => {
  it('its retry offers the trust its error promises, saying what it means there; confirmed, the row is answered existing', async () => {
    const PERSON = 'copied-owner@claim.example';
    // B's file copies A's row (the same external_id, name and owner): B's batch makes the workspace
    // and its owner, and B's operator is given the owner's link. A's batch then finds the workspace made.
    const row = { workspace_name: 'Copied Co', owner_email: PERSON, external_id: 'copied-1' };
    const b = await post('/batches', { batch_id: 'copy-b', rows: [row], options: { create_missing_owners: true } });
    expect(b.status, await b.clone().text()).toBe(201);
    await waitUntilDone(env, ['copy-b']);
    const invited = await post('/batches/copy-b/invite', { seal_to: await readFile(operator.pub, 'utf8') });
    expect(invited.status, await invited.clone().text()).toBe(200);
    const a = await post('/batches', { batch_id: 'copy-a', rows: [row] });
    expect(a.status, await a.clone().text()).toBe(201);
    await waitUntilDone(env, ['copy-a']);
    const outcome = async () =>
      (await env.db.query(`SELECT outcome, round FROM dify_provision.rows WHERE batch_id = 'copy-a'`)).rows.map(
        (r) => `${r.outcome}:${r.round}`,
      );
    expect(await outcome()).toEqual(['failed:1']);

    const { page, errors } = await consolePage();
    await page.goto(`${base}/batches/copy-a`);
    await page.waitForSelector('#rows tr[data-line="1"][data-outcome="failed"]');
    // The error says the row's retry offers the trust: it does.
    const shown = (await page.textContent('#rows tr[data-line="1"] td.err'))!;
    expect(shown).toContain(`${PERSON}: this row's workspace exists already`);
    expect(shown).toContain('confirm it is the person (the row\'s "retry" offers to trust it)');
    expect(await page.textContent('#retry-1')).toBe('retry…');
    await page.click('#retry-1');
    await page.waitForSelector('#trust-panel');
    const what = (await page.textContent('#trust-what'))!;
    expect(what).toContain(`This row's workspace exists already, and another batch's operator was given the invitation link of ${PERSON}`);
    expect(what).toContain(`Trusting ${PERSON} lets this row call that workspace its own (answered existing)`);
    expect(await outcome()).toEqual(['failed:1']); // nothing sent before the confirmation
    await page.click('#trust-retry');
    await page.waitForFunction(() => document.querySelector('#notice')?.textContent !== '');
    expect(await page.textContent('#notice')).toBe(`1 row(s) queued again (the batch trusts ${PERSON} now)`);
    await waitUntilDone(env, ['copy-a']);
    expect(await outcome()).toEqual(['existing:2']);
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe("the console: a pre-claim refusal of a row writing another form of the account's address (Dify's normalised email)", () => {
  it("names the row's address and the Dify account; its retry offers to trust the row's address, and confirmed, the workspace is created", async () => {
    const ACCOUNT = 'c.l.a.i.m@gmail.com';
    const WRITTEN = 'claim+a@gmail.com';
    await preclaimedByB('form-b', ACCOUNT);
    // A's row writes another form of the address: Dify's normalised email makes it that account.
    const a = await post('/batches', { batch_id: 'form-a', rows: [{ workspace_name: 'Form A', owner_email: WRITTEN }] });
    expect(a.status, await a.clone().text()).toBe(201);
    await waitUntilDone(env, ['form-a']);

    const { page, errors } = await consolePage();
    await page.goto(`${base}/batches/form-a`);
    await page.waitForSelector('#rows tr[data-line="1"][data-outcome="failed"]');
    const shown = (await page.textContent('#rows tr[data-line="1"] td.err'))!;
    expect(shown).toContain(`${WRITTEN} (Dify account ${ACCOUNT}): this account was created or invited by another batch`);
    await page.click('#retry-1');
    await page.waitForSelector('#trust-panel');
    expect(await page.textContent('#trust-retry')).toBe(`Trust ${WRITTEN} and retry line 1`);
    await page.click('#trust-retry');
    await page.waitForFunction(() => document.querySelector('#notice')?.textContent !== '');
    expect(await page.textContent('#notice')).toBe(`1 row(s) queued again (the batch trusts ${WRITTEN} now)`);
    await waitUntilDone(env, ['form-a']);
    const owner = await env.db.query(
      `SELECT a.email FROM tenants t JOIN tenant_account_joins j ON j.tenant_id = t.id AND j.role = 'owner' JOIN accounts a ON a.id = j.account_id
        WHERE t.name = 'Form A'`,
    );
    expect(owner.rows).toEqual([{ email: ACCOUNT }]);
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('the console: every option the API takes (issue 32 item 4)', () => {
  it('offers each ingest option; a Windows-1252 file is provisioned from the browser; the batch page shows what it was made with', async () => {
    const { page, errors } = await consolePage();
    await page.waitForSelector('#options[data-ready="true"]');
    const offered = await page
      .locator('#options [id^="opt-"]')
      .evaluateAll((els) => els.map((e) => e.id.slice(4)).filter((id) => !id.endsWith('-file')));
    expect(offered).toEqual(Object.keys(IngestOptionsSchema.shape));
    // Named here too: an option gone from the schema and the page alike is missed.
    for (const name of ['encoding', 'delimiter', 'sheet', 'header_row', 'column_map', 'invite', 'send_invites', 'seal_to', 'strict'])
      expect(offered).toContain(name);

    // Saved by Excel on Windows: Windows-1252 (’ is 0x92 there, not in Latin-1), ';' between cells.
    const csvText = 'workspace_name;owner_email\nO’Neil Café;owner21@example.com\nSmørrebrød ApS;owner22@example.com\n';
    const bytes = Buffer.from([...csvText].map((c) => (c === '’' ? 0x92 : c.charCodeAt(0))));
    // Options chosen before the file (no plan yet), then the one the refusal asks for.
    await page.selectOption('#opt-delimiter', ';');
    await setOption(page, 'attempts', '2');
    const refused = await refusedPlan(page, { name: 'excel-1252.csv', mimeType: 'text/csv', buffer: bytes });
    expect(refused).toContain('this looks like Windows-1252');
    expect(refused).toContain('set "encoding" to windows-1252 (options above)');
    await setOption(page, 'encoding', 'windows-1252');
    await page.waitForFunction(() => document.querySelector('#plan-would-create b')?.textContent === '2');
    expect(await text(page, '#input')).toBe('CSV · windows-1252 · delimiter ";"');
    await page.click('#provision');
    // A refusal is said on the page: fail with it rather than wait.
    await page.waitForFunction(() => /\/batches\//.test(location.pathname) || document.querySelector('#provision-error') !== null);
    const refusal = await page.evaluate(() => document.querySelector('#provision-error')?.textContent ?? '');
    expect(refusal).toBe('');
    await page.waitForURL(/\/batches\/excel-1252-[0-9a-f]{10}$/);
    await page.waitForSelector('#state[data-state="done"]', { timeout: 120_000 });
    const made = (await page.textContent('#batch-options'))!;
    expect(made).toContain('encoding: windows-1252');
    expect(made).toContain('delimiter: ;');
    expect(made).toContain('"attempts":2');
    expect(made).toContain('read as format: csv · encoding: windows-1252 · delimiter: ;');
    const names = (await env.db.query(`SELECT name FROM tenants WHERE name IN ('O’Neil Café', 'Smørrebrød ApS') ORDER BY name`)).rows;
    expect(names.map((r) => r.name)).toEqual(['O’Neil Café', 'Smørrebrød ApS']);
    // The API says the same.
    const id = decodeURIComponent(page.url().split('/batches/')[1]!);
    const status = await (await fetch(`${base}/api/v1/batches/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
    expect(status.options).toMatchObject({ encoding: 'windows-1252', delimiter: ';', retry: { attempts: 2 } });
    expect(status.input).toMatchObject({ format: 'csv', encoding: 'windows-1252', delimiter: ';' });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('a file with a title above its header and a heading of its own: header row and column map from the browser, recorded with the batch', async () => {
    const { page, errors } = await consolePage();
    await page.waitForSelector('#options[data-ready="true"]');
    // Eleven lines of notes (past the 10 searched for a header), and "Owner Contact", which no alias reads.
    const notes = Array.from({ length: 11 }, (_, i) => `Note ${i + 1},`).join('\n');
    const file = `${notes}\nCompany,Owner Contact\nTitled Co,owner23@example.com\n`;
    const refused = await refusedPlan(page, { name: 'titled.csv', mimeType: 'text/csv', buffer: Buffer.from(file) });
    expect(refused).toContain('set "header row" to N (options above)');
    expect(refused).toContain('a line Heading=column in "column map" (options above)');
    await setOption(page, 'header_row', '12');
    await page.waitForFunction(() => /Owner Contact/.test(document.querySelector('#plan-error')?.textContent ?? ''));
    await setOption(page, 'column_map', 'Owner Contact=owner_email');
    await page.waitForFunction(() => document.querySelector('#plan-would-create b')?.textContent === '1');
    await page.click('#provision');
    await page.waitForFunction(() => /\/batches\//.test(location.pathname) || document.querySelector('#provision-error') !== null);
    expect(await page.evaluate(() => document.querySelector('#provision-error')?.textContent ?? '')).toBe('');
    await page.waitForSelector('#state[data-state="done"]', { timeout: 120_000 });
    const made = (await page.textContent('#batch-options'))!;
    expect(made).toContain('header_row: 12');
    expect(made).toContain('column_map: Owner Contact=owner_email');
    expect((await env.db.query(`SELECT count(*)::int AS n FROM tenants WHERE name = 'Titled Co'`)).rows[0].n).toBe(1);
    expect(errors).toEqual([]);
    await page.close();
  });
});
