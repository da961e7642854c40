// Change batches over the HTTP API (/api/v1), against real PostgreSQL and Redis and a real
// worker: POST /changes (JSON rows, a CSV body, a multipart .xlsx; strict 422 by line and field;
// Idempotency-Key), POST /changes/plans (a dry run that writes nothing), and the batch routes
// (list, status, rows, report, retry, cancel, resume) showing change batches beside ingest
// batches, each row with its action and outcome.
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import ExcelJS from 'exceljs';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as S from '../../src/dashboard/api/schemas.js';
import { provisionerOn, type Provisioner } from '../../src/provisioner.js';
import { CHANGE_COLUMNS } from '../../src/changes/change-row.js';
import { CHANGE_REPORT_COLUMNS } from '../../src/report/format.js';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { runWorker, type RunningWorker } from '../../src/worker/run-worker.js';
import { csvOf, ingestCsv, runUntilDone, waitUntilDone } from '../helpers/batch.js';
import { answer, csvBody, errorOf, json } from '../helpers/api-calls.js';
import { listeningDashboard } from '../helpers/dashboard.js';
import { difyInvitationSettings } from '../helpers/dify-invitations.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const ADMIN = 'api-admin-token-0123456789';
const W1 = randomUUID();
const W2 = randomUUID();
let env: TestEnv;
let config: TestEnv['config'];
let provisioner: Provisioner;
let dashboard: Awaited<ReturnType<typeof listeningDashboard>>;
let base: string;
let worker: RunningWorker | undefined;

beforeEach(async () => {
  env = await createTestEnv();
  // The worker deletes a removed person's invitation tokens from Dify's Redis: it needs Dify's settings.
  config = { ...env.config, invitations: difyInvitationSettings(8, `dify-${env.name}`) };
  await ingestCsv(
    env,
    csvOf([
      {
        workspace_name: 'One',
        owner_email: 'owner1@example.com',
        members: 'owner2@example.com:admin',
        workspace_id: W1,
        external_id: 'cust-1',
      },
      { workspace_name: 'Two', owner_email: 'owner4@example.com', members: 'owner3@example.com:normal', workspace_id: W2, external_id: '' },
    ]),
    'world',
  );
  const [world] = await runUntilDone(env, ['world'], { config });
  expect(world!.counts.created).toBe(2);
  provisioner = provisionerOn(await openQueueRuntime(config, { logger: pino({ level: 'silent' }) }));
  dashboard = await listeningDashboard(env, { token: ADMIN, provisioner, maxBytes: 1 << 20 });
  base = dashboard.base;
});
afterEach(async () => {
  await worker?.close();
  worker = undefined;
  await dashboard.close();
  await provisioner.close();
  await env.cleanup();
});

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${base}/api/v1${path}`, { ...init, headers: { authorization: `Bearer ${ADMIN}`, ...(init.headers as Record<string, string>) } });
const batchCount = async () => Number((await env.db.query(`SELECT count(*) AS n FROM dify_provision.batches`)).rows[0].n);
const joins = async (tenantId: string) => {
  const { rows } = await env.db.query<{ email: string; role: string }>(
    `SELECT a.email, j.role FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.tenant_id = $1 ORDER BY a.email`,
    [tenantId],
  );
  return Object.fromEntries(rows.map((r) => [r.email, r.role]));
};

/** A changes file with every column (csvOf takes its columns from the first row). */
const changesCsv = (rows: Record<string, string | undefined>[]) =>
  csvOf(rows.map((r) => Object.fromEntries(CHANGE_COLUMNS.map((c) => [c, r[c] ?? '']))));

const CHANGES = [
  { action: 'add_member', workspace_id: W1, email: 'owner3@example.com', role: 'editor' },
  { action: 'set_role', workspace_id: W1, email: 'owner2@example.com', role: 'normal' },
  { action: 'rename', external_id: 'cust-1', name: 'One, renamed' },
  { action: 'remove_member', workspace_id: W2, email: 'owner3@example.com' },
  { action: 'set_role', workspace_id: W2, email: 'owner4@example.com', role: 'admin' },
  { action: 'add_member', workspace_id: W2, email: 'late@example.com', role: 'normal' },
];

describe('POST /api/v1/changes/plans: a dry run of changes, writing nothing', () => {
  it('plans JSON rows, a CSV body and a multipart upload alike: counts by change kind, problems by line and field', async () => {
    const rows = [...CHANGES, { action: 'set_role', workspace_id: W1, email: 'owner1@example.com', role: 'owner' }];
    const fromJson = await answer(await api('/changes/plans', json({ rows })), 200, S.ChangePlanResponseSchema);
    expect(fromJson).toMatchObject({
      total: 7,
      would_apply: { add: 1, remove: 1, 're-role': 1, rename: 1, transfer: 0 },
      unchanged: 0,
      refused: 2,
      rejected: 1,
      summary: 'would add 1, remove 1, re-role 1, rename 1; 3 refused',
    });
    expect(fromJson.problems.map((p) => [p.line, p.field])).toEqual([
      [5, 'email'],
      [6, 'email'],
      [7, 'role'],
    ]);
    expect(fromJson.problems[0]!.message).toMatch(/owner4@example.com is the workspace's owner/);
    expect(fromJson.rows!.map((r) => r.verdict)).toEqual(['add', 're-role', 'rename', 'remove', 'refused', 'refused', 'rejected']);
    // A file: lines count the header; --create-missing-owners lets add_member create the person.
    const raw = await answer(
      await api('/changes/plans?create_missing_owners=true', csvBody(changesCsv(rows))),
      200,
      S.ChangePlanResponseSchema,
    );
    expect(raw).toMatchObject({ total: 7, would_apply: { add: 2 }, refused: 1, rejected: 1, input: { format: 'csv' } });
    expect(raw.problems.map((p) => p.line)).toEqual([6, 8]);
    const form = new FormData();
    form.set('file', new Blob([changesCsv(rows)], { type: 'text/csv' }), 'changes.csv');
    const multi = await answer(await api('/changes/plans', { method: 'POST', body: form }), 200, S.ChangePlanResponseSchema);
    expect(multi.problems).toEqual(fromJson.problems.map((p) => ({ ...p, line: p.line + 1 })));
    expect(multi).toMatchObject({ total: 7, refused: 2, rejected: 1 });
    expect(await batchCount()).toBe(1); // the world's ingest batch only
    expect(await joins(W2)).toEqual({ 'owner3@example.com': 'normal', 'owner4@example.com': 'owner' });
    expect(await readdir(dashboard.uploads)).toEqual([]);
  });
});

describe('POST /api/v1/changes/plans: one workspace named by external_id and by workspace_id', () => {
  it('is one workspace for the rules across rows: the second rename is refused naming the first, as JSON rows and as a CSV body', async () => {
    const rows = [
      { action: 'rename', external_id: 'cust-1', name: 'One Inc' },
      { action: 'rename', workspace_id: W1, name: 'One LLC' },
    ];
    const fromJson = await answer(await api('/changes/plans', json({ rows })), 200, S.ChangePlanResponseSchema);
    expect(fromJson).toMatchObject({ total: 2, rejected: 1, summary: 'would rename 1; 1 refused' });
    expect(fromJson.problems).toEqual([
      { line: 2, field: 'action', message: 'line 1 renames this workspace already (the same workspace, named there by its external_id)' },
    ]);
    const file = await answer(await api('/changes/plans', csvBody(changesCsv(rows))), 200, S.ChangePlanResponseSchema);
    expect(file.problems).toEqual([
      { line: 3, field: 'action', message: 'line 2 renames this workspace already (the same workspace, named there by its external_id)' },
    ]);
  });
});

describe('a changes file with a title above its header and headings of its own (issue 32)', () => {
  it('header_row and column_map read it, as apply --header-row and --map do; the change batch records them; a bad entry is named', async () => {
    const file = `Leavers – March,,\nWhat,Customer,Person\nremove_member,cust-1,owner2@example.com\n`;
    const map = 'What=action\nCustomer=external_id\nPerson=email';
    expect((await errorOf(await api('/changes/plans', csvBody(file)), 422)).code).toBe('CSV_FORMAT');
    const query = `header_row=2&column_map=${encodeURIComponent(map)}`;
    const plan = await answer(await api(`/changes/plans?${query}`, csvBody(file)), 200, S.ChangePlanResponseSchema);
    expect(plan).toMatchObject({ total: 1, would_apply: { remove: 1 }, rejected: 0, refused: 0 });
    const made = await answer(await api(`/changes?${query}&batch_id=leavers`, csvBody(file)), 201, S.ApplyResponseSchema);
    expect(made).toMatchObject({ queued: 1, rejected: 0 });
    const status = await answer(await api('/batches/leavers'), 200, S.BatchStatusSchema);
    expect(status.options).toMatchObject({ header_row: 2, column_map: { What: 'action', Customer: 'external_id', Person: 'email' } });
    // The changes file's columns, not a workspaces file's.
    const bad = await errorOf(await api(`/changes/plans?column_map=${encodeURIComponent('Person=owner_email')}`, csvBody(file)), 400);
    expect(bad.details).toEqual([{ field: 'query.column_map.Person', message: expect.stringContaining('"owner_email" is not a column') }]);
  });
});

describe('POST /api/v1/changes, run by a worker; the batch routes show change batches beside ingest batches', () => {
  it('applies JSON rows; lists, pages, reports, retries, cancels and resumes a change batch', async () => {
    const created = await answer(
      await api('/changes', json({ rows: CHANGES, batch_id: 'staff', options: { attempts: 1, backoff_ms: 10 } })),
      201,
      S.ApplyResponseSchema,
    );
    expect(created).toEqual({ batch_id: 'staff', total: 6, queued: 6, rejected: 0, already_in_batch: 0, rejected_rows: [] });
    worker = await runWorker(config, { concurrency: 4, logger: pino({ level: 'silent' }) });
    await waitUntilDone(env, ['staff']);
    expect(await joins(W1)).toEqual({ 'owner1@example.com': 'owner', 'owner2@example.com': 'normal', 'owner3@example.com': 'editor' });
    expect(await joins(W2)).toEqual({ 'owner4@example.com': 'owner' });

    const list = await answer(await api('/batches'), 200, S.BatchListResponseSchema);
    expect(list.batches.map((b) => [b.batch_id, b.kind, b.state])).toEqual([
      ['staff', 'changes', 'done-with-failures'],
      ['world', 'provision', 'done'],
    ]);
    expect(list.batches[0]!.counts).toMatchObject({ applied: 4, unchanged: 0, failed: 2, rejected: 0, created: 0 });
    const status = await answer(await api('/batches/staff'), 200, S.BatchStatusSchema);
    expect(status).toMatchObject({ kind: 'changes', total: 6, done: true, succeeded: false, counts: { applied: 4, failed: 2 } });

    const page = await answer(await api('/batches/staff/rows?limit=4'), 200, S.RowsPageSchema);
    expect(page.rows.map((r) => ['action' in r ? r.action : '-', r.outcome])).toEqual([
      ['add_member', 'applied'],
      ['set_role', 'applied'],
      ['rename', 'applied'],
      ['remove_member', 'applied'],
    ]);
    expect(page.next_after).toBe(4);
    const failed = await answer(await api('/batches/staff/rows?outcome=failed'), 200, S.RowsPageSchema);
    expect(failed.rows.map((r) => [r.line, 'detail' in r ? r.detail : null])).toEqual([
      [5, expect.stringMatching(/^email: owner4@example.com is the workspace's owner/)],
      [6, expect.stringMatching(/^email: no Dify account has the email "late@example.com"/)],
    ]);

    const report = await answer(await api('/batches/staff/report'), 200, S.ChangeReportSchema);
    expect(report.map((r) => `${r.line} ${r.action} ${r.outcome}`)).toEqual([
      '1 add_member applied',
      '2 set_role applied',
      '3 rename applied',
      '4 remove_member applied',
      '5 set_role failed',
      '6 add_member failed',
    ]);
    expect(report[2]).toMatchObject({ workspace_id: W1, external_id: 'cust-1', name: 'One, renamed' });
    const csv = await (await api('/batches/staff/report', { headers: { accept: 'text/csv' } })).text();
    expect(csv.split('\r\n')[0]).toBe(CHANGE_REPORT_COLUMNS.join(','));
    expect(csv).toContain(`2,set_role,${W1},,owner2@example.com,normal,,applied`);
    // The console's own report links too.
    const consoleCsv = await (
      await fetch(`${base}/api/batches/staff/report.csv`, { headers: { authorization: `Bearer ${ADMIN}` } })
    ).text();
    expect(consoleCsv.split('\r\n')[0]).toBe(CHANGE_REPORT_COLUMNS.join(','));
    const consoleJson = (await (
      await fetch(`${base}/api/batches/staff/report.json`, { headers: { authorization: `Bearer ${ADMIN}` } })
    ).json()) as { action: string; outcome: string }[];
    expect(consoleJson[0]).toMatchObject({ action: 'add_member', outcome: 'applied' });

    // Retry: the person now has an account; the new round applies that row, the owner's stays refused.
    await env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Late', 'late@example.com', 'active')`);
    expect(await answer(await api('/batches/staff/retry', { method: 'POST' }), 200, S.ControlResponseSchema)).toMatchObject({ rows: 2 });
    await waitUntilDone(env, ['staff']);
    const again = await answer(await api('/batches/staff'), 200, S.BatchStatusSchema);
    expect(again.counts).toMatchObject({ applied: 5, failed: 1 });
    expect((await joins(W2))['late@example.com']).toBe('normal');

    // Cancel what waits (no worker), then resume it: the rows run and re-asserting them changes nothing.
    await worker.close();
    worker = undefined;
    await answer(await api('/changes', json({ rows: CHANGES.slice(0, 3), batch_id: 'later' })), 201, S.ApplyResponseSchema);
    expect((await answer(await api('/batches/later'), 200, S.BatchStatusSchema)).state).toBe('stalled');
    expect(await answer(await api('/batches/later/cancel', { method: 'POST' }), 200, S.ControlResponseSchema)).toMatchObject({ rows: 3 });
    expect((await answer(await api('/batches/later'), 200, S.BatchStatusSchema)).state).toBe('cancelled');
    expect(await answer(await api('/batches/later/resume', { method: 'POST' }), 200, S.ControlResponseSchema)).toMatchObject({ rows: 3 });
    worker = await runWorker(config, { concurrency: 4, logger: pino({ level: 'silent' }) });
    await waitUntilDone(env, ['later']);
    expect((await answer(await api('/batches/later'), 200, S.BatchStatusSchema)).counts).toMatchObject({ unchanged: 3 });
  });

  it('takes a CSV body and a multipart .xlsx; rejects invalid rows by line and field; strict queues nothing (422); Idempotency-Key', async () => {
    const withBad = [
      { action: 'rename', workspace_id: W2, name: 'Two, renamed' },
      { action: 'promote', workspace_id: W2 },
      { action: 'set_role', workspace_id: W2, email: 'owner3@example.com', role: 'owner' },
    ];
    const fromCsv = await answer(await api('/changes?batch_id=from-csv', csvBody(changesCsv(withBad))), 201, S.ApplyResponseSchema);
    expect(fromCsv).toMatchObject({ batch_id: 'from-csv', total: 3, queued: 1, rejected: 2 });
    expect(fromCsv.rejected_rows).toEqual([
      { line: 3, errors: [expect.objectContaining({ field: 'action' })] },
      { line: 4, errors: [expect.objectContaining({ field: 'role', message: expect.stringMatching(/cannot be owner/) })] },
    ]);

    const strict = await errorOf(await api('/changes?strict=true&batch_id=strict', csvBody(changesCsv(withBad))), 422);
    expect(strict.code).toBe('STRICT_REJECTED');
    expect(strict.rows!.map((r) => [r.line, r.errors.map((e) => e.field)])).toEqual([
      [3, ['action']],
      [4, ['role']],
    ]);
    const strictJson = await errorOf(await api('/changes', json({ rows: withBad, options: { strict: true } })), 422);
    expect(strictJson.rows!.map((r) => r.line)).toEqual([2, 3]);
    const shifted = await errorOf(await api('/changes', json({ rows: [{ action: 'archive', workspace_id: ['x'] }] })), 400);
    expect(shifted.rows).toEqual([{ line: 1, errors: [expect.objectContaining({ field: 'workspace_id' })] }]);
    expect((await errorOf(await api('/changes?colour=red', csvBody(changesCsv(withBad))), 400)).message).toContain('colour');
    const header = await errorOf(await api('/changes', csvBody('action,workspace_id,colour\narchive,x,red\n')), 422);
    expect(header).toMatchObject({ code: 'CSV_FORMAT', rows: [{ line: 1, errors: [{ field: 'file' }] }] });
    expect(await batchCount()).toBe(2); // world and from-csv

    const book = new ExcelJS.Workbook();
    const sheet = book.addWorksheet('Changes');
    sheet.addRow(['action', 'workspace_id', 'email', 'role']);
    sheet.addRow(['add_member', W1, 'owner4@example.com', 'admin']);
    const form = new FormData();
    form.set('file', new Blob([Buffer.from(await book.xlsx.writeBuffer())]), 'staff.xlsx');
    form.set('batch_id', 'from-xlsx');
    const key = { 'idempotency-key': 'staff-xlsx-1' };
    const fromXlsx = await answer(await api('/changes', { method: 'POST', body: form, headers: key }), 201, S.ApplyResponseSchema);
    expect(fromXlsx).toMatchObject({ batch_id: 'from-xlsx', total: 1, queued: 1 });
    const replay = await api('/changes', { method: 'POST', body: form, headers: key });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await answer(replay, 201, S.ApplyResponseSchema)).toEqual(fromXlsx);
    // Without a batch_id each request is a batch of its own (applying a file again re-asserts it); a key makes a retry safe.
    const jsonKey = { 'idempotency-key': 'archive-two' };
    const first = await answer(
      await api('/changes', json({ rows: [{ action: 'archive', workspace_id: W2 }] }, jsonKey)),
      201,
      S.ApplyResponseSchema,
    );
    expect(first.batch_id).toMatch(/^changes-\d{8}-\d{6}-[0-9a-f]{6}$/);
    expect(
      await answer(await api('/changes', json({ rows: [{ action: 'archive', workspace_id: W2 }] }, jsonKey)), 201, S.ApplyResponseSchema),
    ).toEqual(first);
    expect((await errorOf(await api('/changes', json({ rows: [{ action: 'restore', workspace_id: W2 }] }, jsonKey)), 422)).code).toBe(
      'IDEMPOTENCY_KEY_REUSED',
    );
    expect(await batchCount()).toBe(4);
    // A change batch's id is not an ingest batch's.
    const clash = await errorOf(
      await api('/batches', json({ rows: [{ workspace_name: 'X', owner_email: 'owner1@example.com' }], batch_id: 'from-csv' })),
      409,
    );
    expect(clash.message).toMatch(/is a change batch already/);

    worker = await runWorker(config, { concurrency: 4, logger: pino({ level: 'silent' }) });
    const [csvDone, xlsxDone] = await waitUntilDone(env, ['from-csv', 'from-xlsx', first.batch_id]);
    expect(csvDone!.counts).toMatchObject({ applied: 1, rejected: 2 });
    expect(xlsxDone!.counts).toMatchObject({ applied: 1 });
    const { rows } = await env.db.query(`SELECT name, status FROM tenants WHERE id = $1`, [W2]);
    expect(rows).toEqual([{ name: 'Two, renamed', status: 'archive' }]);
    expect(await readdir(dashboard.uploads)).toEqual([]);
  });
});
