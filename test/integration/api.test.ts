// The versioned HTTP API (/api/v1) over real HTTP, against real PostgreSQL and Redis and a real
// worker: every endpoint, its auth (admin token, read-only token, session cookie + CSRF), the
// error body, uploads (raw body, multipart, .xlsx; the size cap before anything is stored),
// Idempotency-Key, and the OpenAPI document (validated, and matching the registered routes).
import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { Validator } from '@seriousme/openapi-schema-validator';
import ExcelJS from 'exceljs';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { sizeWords } from '../../src/common/limits.js';
import { SESSION_COOKIE } from '../../src/dashboard/auth.js';
import * as S from '../../src/dashboard/api/schemas.js';
import { provisionerOn, type Provisioner } from '../../src/provisioner.js';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { runWorker, type RunningWorker } from '../../src/worker/run-worker.js';
import { csvOf, waitUntilDone } from '../helpers/batch.js';
import { answer, csvBody, errorOf, json } from '../helpers/api-calls.js';
import { listeningDashboard } from '../helpers/dashboard.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const ADMIN = 'api-admin-token-0123456789';
const READER = 'api-read-only-token-0123456789';
const CAP = 1 << 20;
let env: TestEnv;
let provisioner: Provisioner;
let dashboard: Awaited<ReturnType<typeof listeningDashboard>>;
let app: FastifyInstance;
let base: string;
let uploads: string;

beforeEach(async () => {
  env = await createTestEnv();
  provisioner = provisionerOn(await openQueueRuntime(env.config, { logger: pino({ level: 'silent' }) }));
  dashboard = await listeningDashboard(env, { token: ADMIN, readTokens: [READER], provisioner, maxBytes: CAP });
  ({ app, base, uploads } = dashboard);
});
afterEach(async () => {
  await dashboard.close();
  await provisioner.close();
  await env.cleanup();
});

const bearer = (token = ADMIN) => ({ authorization: `Bearer ${token}` });
const api = (path: string, init: RequestInit = {}) =>
  fetch(`${base}/api/v1${path}`, { ...init, headers: { ...bearer(), ...(init.headers as Record<string, string>) } });
const batchCount = async () => Number((await env.db.query(`SELECT count(*) AS n FROM dify_provision.batches`)).rows[0].n);

const GOOD = [
  { workspace_name: 'Acme', owner_email: 'owner1@example.com' },
  { workspace_name: 'Globex', owner_email: 'owner2@example.com' },
];

describe('POST /api/v1/plans: a dry run, writing nothing', () => {
  it('plans a CSV body, a multipart upload and JSON rows alike, and records nothing', async () => {
    const rows = [...GOOD, { workspace_name: 'Nobody', owner_email: 'nobody@example.com' }, { workspace_name: '', owner_email: 'x' }];
    const expected = { total: 4, would_create: 2, would_fail: 1, rejected: 1 };
    const raw = await answer(await api('/plans', csvBody(csvOf(rows))), 200, S.PlanResponseSchema);
    expect(raw).toMatchObject({ ...expected, input: { format: 'csv', delimiter: ',' } });
    expect(raw.problems.map((p) => [p.line, p.field])).toEqual([
      [4, 'owner_email'],
      [5, 'workspace_name'],
      [5, 'owner_email'],
    ]);
    const form = new FormData();
    form.set('file', new Blob([csvOf(rows)], { type: 'text/csv' }), 'wave.csv');
    form.set('create_missing_owners', 'true');
    const multi = await answer(await api('/plans', { method: 'POST', body: form }), 200, S.PlanResponseSchema);
    expect(multi).toMatchObject({ total: 4, would_create: 3, would_fail: 0, rejected: 1 });
    const fromJson = await answer(await api('/plans', json({ rows })), 200, S.PlanResponseSchema);
    expect(fromJson).toMatchObject({ ...expected, problems: raw.problems.map((p) => ({ ...p, line: p.line - 1 })) });
    expect(await batchCount()).toBe(0);
    expect(await readdir(uploads)).toEqual([]);
  });
});

describe('POST /api/v1/batches, run by a worker', () => {
  let worker: RunningWorker | undefined;
  afterEach(async () => {
    await worker?.close();
    worker = undefined;
  });

  it('creates batches from JSON rows, a CSV body, a multipart upload and an .xlsx body; the worker provisions them', async () => {
    const fromJson = await answer(
      await api('/batches', json({ rows: GOOD, batch_id: 'from-json', options: { attempts: 2, backoff_ms: 50 } })),
      201,
      S.EnqueueResponseSchema,
    );
    expect(fromJson).toMatchObject({ batch_id: 'from-json', total: 2, queued: 2, rejected: 0, already_in_batch: 0, rejected_rows: [] });
    expect(fromJson.not_applied).toBeUndefined();
    // The same batch again with an option it was not made with: nothing queued, the option named as not applied.
    const sentAgain = await answer(
      await api(
        '/batches',
        json({ rows: GOOD, batch_id: 'from-json', options: { attempts: 2, backoff_ms: 50, create_missing_owners: true } }),
      ),
      200,
      S.EnqueueResponseSchema,
    );
    expect(sentAgain).toMatchObject({ queued: 0, already_in_batch: 2, not_applied: ['create_missing_owners'] });

    const withBad = [
      { workspace_name: 'Initech', owner_email: 'owner3@example.com' },
      { workspace_name: 'Bad', owner_email: 'not-an-email' },
    ];
    const fromCsv = await answer(await api('/batches?batch_id=from-csv', csvBody(csvOf(withBad))), 201, S.EnqueueResponseSchema);
    expect(fromCsv).toMatchObject({ batch_id: 'from-csv', total: 2, queued: 1, rejected: 1, input: { format: 'csv' } });
    expect(fromCsv.rejected_rows).toEqual([{ line: 3, errors: [expect.objectContaining({ field: 'owner_email' })] }]);

    const form = new FormData();
    form.set('file', new Blob([csvOf([{ workspace_name: 'Umbrella', owner_email: 'owner4@example.com' }])]), 'wave 2.csv');
    const fromForm = await answer(await api('/batches', { method: 'POST', body: form }), 201, S.EnqueueResponseSchema);
    // Named after the file and its content, like the CLI's batches: the same file again is the same batch.
    expect(fromForm.batch_id).toMatch(/^wave-2-[0-9a-f]{10}$/);
    const again = new FormData();
    again.set('file', new Blob([csvOf([{ workspace_name: 'Umbrella', owner_email: 'owner4@example.com' }])]), 'wave 2.csv');
    // A repost that changes nothing: 200, not a creation.
    expect(await answer(await api('/batches', { method: 'POST', body: again }), 200, S.EnqueueResponseSchema)).toMatchObject({
      batch_id: fromForm.batch_id,
      queued: 0,
      already_in_batch: 1,
    });

    const book = new ExcelJS.Workbook();
    const sheet = book.addWorksheet('Customers');
    sheet.addRow(['workspace_name', 'owner_email']);
    sheet.addRow(['Hooli', 'owner5@example.com']);
    const xlsx = Buffer.from(await book.xlsx.writeBuffer());
    const fromXlsx = await answer(
      await api('/batches?batch_id=from-xlsx', {
        method: 'POST',
        headers: { 'content-type': 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet' },
        body: xlsx,
      }),
      201,
      S.EnqueueResponseSchema,
    );
    expect(fromXlsx).toMatchObject({ total: 1, queued: 1, input: { format: 'xlsx', sheet: 'Customers' } });

    worker = await runWorker(env.config, { concurrency: 4, logger: pino({ level: 'silent' }) });
    const ids = ['from-json', 'from-csv', fromForm.batch_id, 'from-xlsx'];
    await waitUntilDone(env, ids);
    const created = await env.db.query<{ name: string }>(`SELECT name FROM tenants ORDER BY name`);
    expect(created.rows.map((r) => r.name)).toEqual(['Acme', 'Globex', 'Hooli', 'Initech', 'Umbrella']);
    expect(await readdir(uploads)).toEqual([]);
  });

  it('strict: one invalid row queues nothing and answers 422 with every invalid row by line', async () => {
    const rows = [
      GOOD[0]!,
      { workspace_name: '', owner_email: 'owner2@example.com' },
      GOOD[1]!,
      { workspace_name: 'X', owner_email: 'nope' },
    ];
    const fromJson = await errorOf(await api('/batches', json({ rows, batch_id: 'strict', options: { strict: true } })), 422);
    expect(fromJson.code).toBe('STRICT_REJECTED');
    expect(fromJson.rows!.map((r) => [r.line, r.errors.map((e) => e.field)])).toEqual([
      [2, ['workspace_name']],
      [4, ['owner_email']],
    ]);
    const fromCsv = await errorOf(await api('/batches?strict=true', csvBody(csvOf(rows))), 422);
    expect(fromCsv.rows!.map((r) => r.line)).toEqual([3, 5]);
    expect(await batchCount()).toBe(0);
  });

  it('a malformed file is answered 422 at its line; nothing is recorded, no file is left', async () => {
    const header = await errorOf(await api('/batches', csvBody('workspace_name,owner_email,colour\nAcme,owner1@example.com,red\n')), 422);
    expect(header).toMatchObject({ code: 'CSV_FORMAT', rows: [{ line: 1, errors: [{ field: 'file' }] }] });
    expect(header.message).toContain('unknown column(s) "colour"');
    const notXlsx = await errorOf(
      await api('/batches', {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body: Buffer.from('PK\u0003\u0004broken'),
      }),
      422,
    );
    expect(notXlsx.code).toBe('CSV_FORMAT');
    expect(notXlsx.rows![0]!.line).toBeGreaterThanOrEqual(1);
    expect(await batchCount()).toBe(0);
    expect(await readdir(uploads)).toEqual([]);
  });

  it('refuses bad requests with the error body, naming the field', async () => {
    const badOption = await errorOf(await api('/batches', json({ rows: GOOD, options: { attempts: 0 } })), 400);
    expect(badOption).toMatchObject({ code: 'INVALID_REQUEST' });
    expect(badOption.message).toContain('options.attempts');
    const unknownOption = await errorOf(await api('/batches?colour=red', csvBody(csvOf(GOOD))), 400);
    expect(unknownOption.message).toContain('colour');
    const badRow = await errorOf(await api('/batches', json({ rows: [GOOD[0], { workspace_name: ['a'] }] })), 400);
    expect(badRow.rows).toEqual([{ line: 2, errors: [expect.objectContaining({ field: 'workspace_name' })] }]);
    const media = await errorOf(
      await api('/batches', { method: 'POST', headers: { 'content-type': 'application/xml' }, body: '<rows/>' }),
      415,
    );
    expect(media.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect(await batchCount()).toBe(0);
  });
});

describe('the API for scripts: Location, reposts, the batch list, field errors (issue 32 item 6)', () => {
  it('a 201 names the batch in Location (kept by Idempotency-Key); a repost that changes nothing is 200; a row more is 201', async () => {
    const made = await api('/batches', json({ rows: GOOD, batch_id: 'loc' }));
    expect(made.status).toBe(201);
    expect(made.headers.get('location')).toBe('/api/v1/batches/loc');
    expect(await answer(await api('/batches/loc'), 200, S.BatchStatusSchema)).toMatchObject({ batch_id: 'loc', total: 2 });
    const again = await api('/batches', json({ rows: GOOD, batch_id: 'loc' }));
    expect(again.headers.get('location')).toBeNull();
    expect(await answer(again, 200, S.EnqueueResponseSchema)).toMatchObject({ queued: 0, already_in_batch: 2 });
    const more = await api(
      '/batches',
      json({ rows: [...GOOD, { workspace_name: 'Third', owner_email: 'owner3@example.com' }], batch_id: 'loc' }),
    );
    expect(more.headers.get('location')).toBe('/api/v1/batches/loc');
    expect(await answer(more, 201, S.EnqueueResponseSchema)).toMatchObject({ queued: 1, already_in_batch: 2 });
    // All rejected is still a new batch: 201.
    expect((await api('/batches', json({ rows: [{ workspace_name: '', owner_email: 'x' }], batch_id: 'none-valid' }))).status).toBe(201);
    // Replayed under its Idempotency-Key: the same status and Location.
    const keyed = () => api('/batches', json({ rows: GOOD, batch_id: 'keyed' }, { 'idempotency-key': 'loc-key' }));
    const first = await keyed();
    const replay = await keyed();
    for (const r of [first, replay]) {
      expect(r.status).toBe(201);
      expect(r.headers.get('location')).toBe('/api/v1/batches/keyed');
    }
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
  });

  it('the batch list pages (next → after) and filters by state, kind, text and creation time', async () => {
    const ids = ['a0', 'b1', 'a2', 'b3', 'a4'];
    for (const [i, id] of ids.entries())
      await answer(
        await api('/batches', json({ rows: [GOOD[i % 2]!], batch_id: id, options: { source: `wave-${id[0]}.csv` } })),
        201,
        S.EnqueueResponseSchema,
      );
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const page: z.output<typeof S.BatchListResponseSchema> = await answer(
        await api(`/batches?limit=2${after ? `&after=${after}` : ''}`),
        200,
        S.BatchListResponseSchema,
      );
      seen.push(...page.batches.map((b) => b.batch_id));
      after = page.next;
      pages++;
    } while (after);
    expect(seen).toEqual([...ids].reverse());
    expect(pages).toBe(3);
    const list = async (query: string) =>
      (await answer(await api(`/batches?${query}`), 200, S.BatchListResponseSchema)).batches.map((b) => b.batch_id);
    expect(await list('q=WAVE-B')).toEqual(['b3', 'b1']);
    expect(await list('q=a4')).toEqual(['a4']);
    // No worker serves the queue: every batch with open rows is stalled, none is done.
    expect(await list('state=stalled&limit=2')).toEqual(['a4', 'b3']);
    expect(await list('state=done')).toEqual([]);
    expect(await list('kind=changes')).toEqual([]);
    expect(await list('kind=provision&q=wave-a&limit=1')).toEqual(['a4']);
    const { rows } = await env.db.query(`SELECT created_at FROM dify_provision.batches WHERE id = 'a2'`);
    const at = encodeURIComponent((rows[0].created_at as Date).toISOString());
    expect(await list(`created_before=${at}`)).toEqual(['b1', 'a0']);
    expect(await list(`created_after=${encodeURIComponent(new Date(Date.now() + 3_600_000).toISOString())}`)).toEqual([]);
  });

  it('rows (issue 32 item 5): searched by workspace, owner or external id; one in full; retried one or a selection', async () => {
    const rows = [
      { workspace_name: 'Acme', owner_email: 'owner1@example.com', external_id: 'a-1' },
      ...[1, 2, 3].map((i) => ({ workspace_name: `Orphan ${i}`, owner_email: `nobody${i}@example.com` })),
    ];
    await answer(await api('/batches', json({ rows, batch_id: 'sel', options: { attempts: 1 } })), 201, S.EnqueueResponseSchema);
    const worker = await runWorker(env.config, { concurrency: 4, logger: pino({ level: 'silent' }) });
    try {
      await waitUntilDone(env, ['sel']);
    } finally {
      await worker.close();
    }
    const found = async (q: string) =>
      (await answer(await api(`/batches/sel/rows?q=${encodeURIComponent(q)}`), 200, S.RowsPageSchema)).rows.map((r) => r.line);
    expect(await found('NOBODY2')).toEqual([3]);
    expect(await found('a-1')).toEqual([1]);
    expect(await found('orph')).toEqual([2, 3, 4]);
    expect(await found('zzz')).toEqual([]);

    const detail = await answer(await api('/batches/sel/rows/2'), 200, S.RowDetailSchema);
    expect(detail).toMatchObject({ line: 2, outcome: 'failed', round: 1, attempts: 1, members: [], invitations_issued: [] });
    expect(detail.error).toContain('nobody1@example.com');
    expect(detail.finished_at).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/);
    expect((await errorOf(await api('/batches/sel/rows/99'), 404)).code).toBe('ROW_NOT_FOUND');
    expect((await errorOf(await api('/batches/nope/rows/1'), 404)).code).toBe('BATCH_NOT_FOUND');

    const retried = await answer(await api('/batches/sel/rows/retry', json({ lines: [1, 3] })), 200, S.RetryRowsResponseSchema);
    expect(retried).toEqual({
      batch_id: 'sel',
      rows: 1,
      lines: [3],
      message: '1 row(s) queued again; not queued (not failed or cancelled, or not in this batch): line(s) 1',
    });
    const { rows: now } = await env.db.query(`SELECT line, outcome, round FROM dify_provision.rows WHERE batch_id = 'sel' ORDER BY line`);
    expect(now.map((r) => `${r.line}:${r.outcome}:${r.round}`)).toEqual(['1:created:1', '2:failed:1', '3:queued:2', '4:failed:1']);
    const selection = await answer(await api('/batches/sel/rows/retry', json({ lines: [2, 4] })), 200, S.RetryRowsResponseSchema);
    expect(selection.lines).toEqual([2, 4]);
    expect((await errorOf(await api('/batches/sel/rows/retry', json({ lines: [] })), 400)).details).toEqual([
      { field: 'body.lines', message: expect.any(String) },
    ]);
  });

  it('a Windows-1252 upload with its options: recorded and shown with the batch (issue 32 item 4)', async () => {
    const csvText = 'workspace_name;owner_email\nO’Neil Café;owner5@example.com\n';
    const bytes = Buffer.from([...csvText].map((c) => (c === '’' ? 0x92 : c.charCodeAt(0))));
    const form = () => {
      const f = new FormData();
      for (const [k, v] of Object.entries({ encoding: 'windows-1252', delimiter: ';', attempts: '2' })) f.append(k, v);
      f.append('file', new Blob([bytes], { type: 'text/csv' }), 'excel-1252.csv');
      return f;
    };
    const made = await api('/batches', { method: 'POST', body: form(), headers: { 'idempotency-key': 'k-1252' } });
    const body = await answer(made, 201, S.EnqueueResponseSchema);
    expect(body).toMatchObject({ queued: 1, rejected: 0, input: { encoding: 'windows-1252', delimiter: ';' } });
    const status = await answer(await api(`/batches/${body.batch_id}`), 200, S.BatchStatusSchema);
    expect(status.options).toMatchObject({ encoding: 'windows-1252', delimiter: ';', retry: { attempts: 2 }, source: 'excel-1252.csv' });
    expect(status.input).toMatchObject({ format: 'csv', encoding: 'windows-1252', delimiter: ';' });
    const rows = await answer(await api(`/batches/${body.batch_id}/rows`), 200, S.RowsPageSchema);
    expect(rows.rows[0]).toMatchObject({ workspace_name: 'O’Neil Café' });
  });

  it('a file whose header is below a title and has headings of its own: header_row and column_map, recorded; a bad entry named (issue 32)', async () => {
    // Eleven lines of notes above the header (past the first 10 searched), and a heading no alias reads.
    const notes = Array.from({ length: 11 }, (_, i) => `Note ${i + 1},`).join('\n');
    const file = `${notes}\nCompany,Owner Contact,Remarks\nAcme Title,owner1@example.com,keep\n`;
    const map = 'Owner Contact=owner_email\nRemarks=-';
    // Without them the file is refused; with them it is read, from the form's fields or the query string.
    expect((await errorOf(await api('/plans', csvBody(file)), 422)).code).toBe('CSV_FORMAT');
    expect((await errorOf(await api('/plans?header_row=12', csvBody(file)), 422)).message).toContain('Owner Contact');
    const form = new FormData();
    form.set('header_row', '12');
    form.set('column_map', map);
    form.set('file', new Blob([file], { type: 'text/csv' }), 'titled.csv');
    expect(await answer(await api('/plans', { method: 'POST', body: form }), 200, S.PlanResponseSchema)).toMatchObject({
      total: 1,
      would_create: 1,
    });
    const query = `header_row=12&column_map=${encodeURIComponent(map)}`;
    const made = await answer(await api(`/batches?${query}&batch_id=titled`, csvBody(file)), 201, S.EnqueueResponseSchema);
    expect(made).toMatchObject({ queued: 1, rejected: 0 });
    const status = await answer(await api('/batches/titled'), 200, S.BatchStatusSchema);
    expect(status.options).toMatchObject({ header_row: 12, column_map: { 'Owner Contact': 'owner_email', Remarks: '-' } });
    // A column that is none, a line that is no entry, a header row below 1: each named by its field.
    const bad = await errorOf(await api(`/plans?column_map=${encodeURIComponent('Owner Contact=owner_emial')}`, csvBody(file)), 400);
    expect(bad.details).toEqual([
      { field: 'query.column_map.Owner Contact', message: expect.stringContaining('did you mean owner_email?') },
    ]);
    const noEntry = await errorOf(await api(`/plans?column_map=${encodeURIComponent('Owner Contact')}`, csvBody(file)), 400);
    expect(noEntry.details).toEqual([{ field: 'query.column_map', message: expect.stringContaining('one "Heading=column" a line') }]);
    expect((await errorOf(await api('/plans?header_row=0', csvBody(file)), 400)).details).toEqual([
      { field: 'query.header_row', message: expect.any(String) },
    ]);
    const inJson = await errorOf(await api('/batches', json({ rows: GOOD, options: { column_map: { Contact: 'owner' } } })), 400);
    expect(inJson.details).toEqual([
      { field: 'body.options.column_map.Contact', message: expect.stringContaining('"owner" is not a column') },
    ]);
    expect(await batchCount()).toBe(1);
  });

  it("trust_accounts (--trust-account): recorded with the batch, and each row's job carries only its own trusted addresses; a value that is no address is named", async () => {
    const file = 'workspace_name,owner_email\nTrusted,owner1@example.com\nOther,owner2@example.com\n';
    const query = `trust_accounts=${encodeURIComponent(' Owner1@Example.com , nobody@example.com')}&batch_id=trusting`;
    expect(await answer(await api(`/batches?${query}`, csvBody(file)), 201, S.EnqueueResponseSchema)).toMatchObject({ queued: 2 });
    const status = await answer(await api('/batches/trusting'), 200, S.BatchStatusSchema);
    expect(status.options).toMatchObject({ trust_accounts: ['Owner1@Example.com', 'nobody@example.com'] });
    const specs = (
      await env.db.query<{ line: number; spec: { trustAccounts?: string[] } }>(
        `SELECT line, spec FROM dify_provision.rows WHERE batch_id = 'trusting' ORDER BY line`,
      )
    ).rows.map((r) => r.spec.trustAccounts);
    expect(specs).toEqual([['owner1@example.com'], undefined]);
    const bad = await errorOf(await api(`/plans?trust_accounts=${encodeURIComponent('ceo-at-a.example')}`, csvBody(file)), 400);
    expect(bad.details).toEqual([{ field: 'query.trust_accounts.0', message: 'is not an email address' }]);
    const inJson = await errorOf(await api('/batches', json({ rows: GOOD, options: { trust_accounts: [] } })), 400);
    expect(inJson.details).toEqual([{ field: 'body.options.trust_accounts', message: expect.any(String) }]);
  });

  it('a 400 lists each problem by field, unknown fields too', async () => {
    const query = await errorOf(await api('/batches?limit=0&colour=red&after=nonsense'), 400);
    expect(query.code).toBe('INVALID_REQUEST');
    expect(query.details).toEqual(
      expect.arrayContaining([
        { field: 'query.limit', message: expect.stringContaining('>=1') },
        { field: 'query.colour', message: expect.stringMatching(/^unknown field \(known: limit, after, state/) },
      ]),
    );
    expect((await errorOf(await api('/batches?after=nonsense'), 400)).details).toEqual([
      { field: 'query.after', message: 'not a `next` this API gave' },
    ]);
    const body = await errorOf(await api('/batches', json({ rows: GOOD, options: { attempts: 0, colour: 1 } })), 400);
    expect(body.details).toEqual([
      { field: 'body.options.attempts', message: expect.stringContaining('>=1') },
      { field: 'body.options.colour', message: expect.stringMatching(/^unknown field \(known: strict, create_missing_owners/) },
    ]);
    const file = await errorOf(await api('/batches?delimiter=x', csvBody(csvOf(GOOD))), 400);
    expect(file.details).toEqual([{ field: 'query.delimiter', message: expect.any(String) }]);
    const row = await errorOf(await api('/batches', json({ rows: [GOOD[0], { workspace_name: ['a'] }] })), 400);
    expect(row.details).toEqual([{ field: 'body.rows.1.workspace_name', message: expect.any(String) }]);
    expect(row.rows).toEqual([{ line: 2, errors: [expect.objectContaining({ field: 'workspace_name' })] }]);
    expect(await batchCount()).toBe(0);
  });
});

describe('auth on the API', () => {
  it('401 without a token; a read-only token reads but every POST is refused 403', async () => {
    await answer(await api('/batches', json({ rows: GOOD, batch_id: 'seen' })), 201, S.EnqueueResponseSchema);
    for (const [method, path] of [
      ['POST', '/batches'],
      ['POST', '/plans'],
      ['POST', '/changes'],
      ['POST', '/changes/plans'],
      ['GET', '/batches'],
      ['GET', '/batches/seen'],
    ] as const) {
      const res = await fetch(`${base}/api/v1${path}`, {
        method,
        ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{"rows":[]}' } : {}),
      });
      expect((await errorOf(res, 401)).code, `${method} ${path}`).toBe('UNAUTHORIZED');
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
    }
    for (const path of ['/batches', '/plans', '/changes', '/changes/plans']) {
      const refused = await errorOf(
        await api(path, {
          ...json({ rows: GOOD, batch_id: 'by-reader' }),
          headers: { ...bearer(READER), 'content-type': 'application/json' },
        }),
        403,
      );
      expect(refused.code).toBe('READ_ONLY');
    }
    expect(await batchCount()).toBe(1);
    const read = await api('/batches/seen', { headers: bearer(READER) });
    expect((await answer(read, 200, S.BatchStatusSchema)).total).toBe(2);
  });

  it('a session cookie needs the CSRF header and our origin on a POST; a bearer token does not', async () => {
    const visit = await fetch(`${base}/?token=${ADMIN}`, { redirect: 'manual' });
    const jar = String(visit.headers.get('set-cookie')).split(';')[0]!;
    expect(jar.startsWith(`${SESSION_COOKIE}=`)).toBe(true);
    const post = (headers: Record<string, string>) =>
      fetch(`${base}/api/v1/batches`, {
        ...json({ rows: GOOD, batch_id: 'csrf' }),
        headers: { 'content-type': 'application/json', cookie: jar, ...headers },
      });
    expect((await errorOf(await post({}), 403)).code).toBe('CROSS_SITE');
    const host = new URL(base).host;
    expect((await errorOf(await post({ origin: 'http://127.0.0.1:1', 'x-requested-with': 'dify-provision' }), 403)).code).toBe(
      'CROSS_SITE',
    );
    expect(await batchCount()).toBe(0);
    await answer(await post({ origin: `http://${host}`, 'x-requested-with': 'dify-provision' }), 201, S.EnqueueResponseSchema);
    // A session made from a read-only token reads only.
    const readerVisit = await fetch(`${base}/?token=${READER}`, { redirect: 'manual' });
    const readerJar = String(readerVisit.headers.get('set-cookie')).split(';')[0]!;
    const asReader = await fetch(`${base}/api/v1/batches/csrf/cancel`, {
      method: 'POST',
      headers: { cookie: readerJar, origin: `http://${host}`, 'x-requested-with': 'dify-provision' },
    });
    expect((await errorOf(asReader, 403)).code).toBe('READ_ONLY');
    const status = await fetch(`${base}/api/v1/batches/csrf`, { headers: { cookie: readerJar } });
    expect((await answer(status, 200, S.BatchStatusSchema)).counts.queued).toBe(2);
  });
});

/**
 * Sends `head`, then more of the same upload (`filler`) for as long as the server reads it without
 * answering, up to `bound` bytes in all, then ends the request. `unfinished`: the answer came while
 * the upload was still being sent. A server whose cap is too high reads on and answers late, or
 * refuses naming another cap: both fail at once, without a wait. Only a server that neither reads
 * nor answers is waited on (a minute in which nothing moves), as it waits for the rest of the body.
 */
function overCapUpload(
  path: string,
  headers: Record<string, string>,
  head: Buffer,
  filler: Buffer,
  bound = 8 * CAP,
): Promise<{ status: number; body: string; unfinished: boolean; sent: number }> {
  const url = new URL(`${base}/api/v1${path}`);
  return new Promise((resolve, reject) => {
    let answered = false;
    let ended = false;
    let sent = 0;
    let wake = () => {};
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'POST', headers: { ...bearer(), ...headers } },
      (res) => {
        answered = true;
        wake();
        const unfinished = !ended;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body, unfinished, sent }));
      },
    );
    // The server closes the connection on the rest of the upload: a write after that may fail.
    req.on('error', (err) => (err.message.includes('EPIPE') || err.message.includes('ECONNRESET') ? wake() : reject(err)));
    req.on('close', () => (answered ? undefined : reject(new Error(`${path}: the connection closed without an answer`))));
    const drained = () =>
      new Promise<void>((done, fail) => {
        const stall = setTimeout(
          () => fail(new Error(`no answer to ${path} while its upload was unfinished, and nothing read for a minute: the server waits`)),
          60_000,
        );
        wake = () => {
          clearTimeout(stall);
          done();
        };
        req.once('drain', () => wake());
      });
    void (async () => {
      for (let chunk = head; !answered && !req.destroyed && sent < bound; chunk = filler) {
        sent += chunk.length;
        if (!req.write(chunk)) await drained();
      }
      if (!answered && !req.destroyed) {
        ended = true;
        req.end();
      }
    })().catch(reject);
  });
}

describe('uploads are bounded (the same cap as ingest, --max-bytes)', () => {
  const line = 'Workspace,owner1@example.com\n';
  const rowsOf = (bytes: number) => Buffer.from(`workspace_name,owner_email\n${line.repeat(Math.ceil(bytes / line.length))}`);
  const more = Buffer.from(line.repeat(Math.ceil((64 << 10) / line.length)));
  /** Refused (413) while still being sent, naming this dashboard's cap: not one four times higher. */
  const refusedAtTheCap = (got: { status: number; body: string; unfinished: boolean; sent: number }, namesCap = true) => {
    expect({ status: got.status, unfinished: got.unfinished }, `${got.sent} bytes sent: ${got.body}`).toEqual({
      status: 413,
      unfinished: true,
    });
    const error = JSON.parse(got.body).error as { code: string; message: string };
    expect(error.code).toBe('UPLOAD_TOO_LARGE');
    if (namesCap) expect(error.message).toContain(`over the limit of ${sizeWords(CAP)} (the dashboard's --max-bytes)`);
  };

  it('a declared 50 MB body is refused before it is sent; one that streams past the cap is refused as it passes it', async () => {
    const declared = { 'content-type': 'text/csv', 'content-length': String(50 * 1000 * 1000) };
    refusedAtTheCap(await overCapUpload('/batches', declared, rowsOf(64 << 10), more));
    // Chunked (no length): read up to the cap, then refused without waiting for the rest.
    const chunked = { 'content-type': 'text/csv', 'transfer-encoding': 'chunked' };
    refusedAtTheCap(await overCapUpload('/batches', chunked, rowsOf(CAP + (256 << 10)), more));
    refusedAtTheCap(await overCapUpload('/batches', chunked, rowsOf(64 << 10), more)); // the cap is passed while more is sent
    const boundary = 'dify-provision-boundary';
    const multipartHead = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\nContent-Type: text/csv\r\n\r\n`),
      rowsOf(64 << 10),
    ]);
    const form = { 'content-type': `multipart/form-data; boundary=${boundary}` };
    refusedAtTheCap(await overCapUpload('/batches', { ...form, 'transfer-encoding': 'chunked' }, multipartHead, more));
    refusedAtTheCap(
      await overCapUpload('/plans', { ...form, 'content-length': String(50 * 1000 * 1000) }, multipartHead.subarray(0, 4096), more),
    );
    // A JSON body over the cap too (fastify's bodyLimit: its own words).
    const bigJson = { 'content-type': 'application/json', 'content-length': String(50 * 1000 * 1000) };
    refusedAtTheCap(await overCapUpload('/batches', bigJson, Buffer.from('{"rows":['), more), false);
    expect(await batchCount()).toBe(0);
    expect(await readdir(uploads)).toEqual([]);
  });
});

describe('the OpenAPI document', () => {
  it('is valid OpenAPI 3.1 and names exactly the routes the server has', async () => {
    const res = await api('/openapi.json', { headers: bearer(READER) });
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(doc.openapi).toBe('3.1.0');
    const validator = new Validator();
    const result = await validator.validate(doc as never);
    expect(result.errors ?? [], JSON.stringify(result.errors, null, 2)).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');

    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`))
      .sort();
    // fastify's own tree of what it serves, flattened (HEAD: fastify's automatic twin of each GET).
    const served: string[] = [];
    const stack: string[] = [];
    for (const l of app.printRoutes({ commonPrefix: false }).split('\n')) {
      const m = /^([│ ]*)[├└]── (\S+)(?: \(([^)]+)\))?$/.exec(l);
      if (!m) continue;
      const depth = m[1]!.length / 4;
      stack.length = depth;
      stack.push(m[2]!);
      const path = stack.join('').replace(/\/$/, '');
      if (!path.startsWith('/api/v1/') || !m[3]) continue;
      for (const method of m[3].split(', ')) if (method !== 'HEAD') served.push(`${method} ${path}`);
    }
    served.sort();
    expect(served).toEqual(documented);

    // retry, resume and rows/retry take trust_accounts and create_missing_owners (retry's flags); retry and resume's body is optional, cancel has none.
    type Body = { required: boolean; content: Record<string, { schema: { properties: Record<string, object> } }> };
    const bodyOf = (path: string) => (doc.paths[`/api/v1/batches/{id}/${path}`]!['post'] as { requestBody?: Body }).requestBody;
    for (const path of ['retry', 'resume', 'rows/retry']) {
      const trust = bodyOf(path)!.content['application/json']!.schema.properties['trust_accounts'];
      expect(trust, path).toMatchObject({ type: 'array', minItems: 1, items: { type: 'string', maxLength: 255 } });
      expect(bodyOf(path)!.content['application/json']!.schema.properties['create_missing_owners'], path).toMatchObject({
        type: 'boolean',
      });
      expect(bodyOf(path)!.required, path).toBe(path === 'rows/retry');
    }
    expect(bodyOf('cancel')).toBeUndefined();
    expect(documented).toEqual(
      [
        'GET /api/v1/openapi.json',
        'POST /api/v1/batches',
        'GET /api/v1/batches',
        'POST /api/v1/plans',
        'POST /api/v1/changes',
        'POST /api/v1/changes/plans',
        'GET /api/v1/batches/:id',
        'GET /api/v1/batches/:id/rows',
        'GET /api/v1/batches/:id/rows/:line',
        'POST /api/v1/batches/:id/rows/retry',
        'POST /api/v1/batches/:id/invite',
        'GET /api/v1/batches/:id/report',
        'POST /api/v1/batches/:id/retry',
        'POST /api/v1/batches/:id/cancel',
        'POST /api/v1/batches/:id/resume',
      ].sort(),
    );
  });
});

describe('following a batch: status, rows, report, retry, cancel, resume', () => {
  let worker: RunningWorker | undefined;
  const startWorker = async () => {
    worker = await runWorker(env.config, { concurrency: 4, logger: pino({ level: 'silent' }) });
  };
  afterEach(async () => {
    await worker?.close();
    worker = undefined;
  });
  const post = (path: string) => api(path, { method: 'POST' });

  it('lists, pages, reports and controls a batch over HTTP while a worker runs it', async () => {
    const rows = [...GOOD, { workspace_name: 'Orphan', owner_email: 'nobody@example.com' }];
    await answer(
      await api('/batches', json({ rows, batch_id: 'wave', options: { attempts: 1, backoff_ms: 10 } })),
      201,
      S.EnqueueResponseSchema,
    );
    await startWorker();
    await waitUntilDone(env, ['wave']);

    const list = await answer(await api('/batches', { headers: bearer(READER) }), 200, S.BatchListResponseSchema);
    expect(list.batches).toEqual([expect.objectContaining({ batch_id: 'wave', source: 'api', state: 'done-with-failures', total: 3 })]);
    const status = await answer(await api('/batches/wave'), 200, S.BatchStatusSchema);
    expect(status).toMatchObject({ batch_id: 'wave', state: 'done-with-failures', done: true, counts: { created: 2, failed: 1 } });
    expect(status.workers).toBeGreaterThanOrEqual(1);

    // Keyset pages: each gives the line to continue after.
    const first = await answer(await api('/batches/wave/rows?limit=2'), 200, S.RowsPageSchema);
    expect(first.rows.map((r) => [r.line, r.outcome])).toEqual([
      [1, 'created'],
      [2, 'created'],
    ]);
    expect(first.next_after).toBe(2);
    const second = await answer(await api(`/batches/wave/rows?limit=2&after=${first.next_after}`), 200, S.RowsPageSchema);
    expect(second).toMatchObject({ rows: [{ line: 3, outcome: 'failed', owner_email: 'nobody@example.com' }], next_after: null });
    const failed = await answer(await api('/batches/wave/rows?outcome=failed'), 200, S.RowsPageSchema);
    expect(failed.rows.map((r) => r.line)).toEqual([3]);
    expect((await errorOf(await api('/batches/wave/rows?outcome=lost'), 400)).code).toBe('INVALID_REQUEST');

    const report = await api('/batches/wave/report', { headers: bearer(READER) });
    expect(report.headers.get('content-type')).toMatch(/^application\/json/);
    const records = await answer(report, 200, S.ReportSchema);
    expect(records.map((r) => [r.workspace_name, r.outcome])).toEqual([
      ['Acme', 'created'],
      ['Globex', 'created'],
      ['Orphan', 'failed'],
    ]);
    expect(records[0]!.tenant_id).toMatch(/^[0-9a-f-]{36}$/);
    const csv = await api('/batches/wave/report', { headers: { accept: 'text/csv' } });
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(csv.headers.get('content-disposition')).toContain('wave-report.csv');
    const lines = (await csv.text()).trim().split('\r\n');
    expect(lines[0]).toBe(Object.keys(records[0]!).join(','));
    expect(lines).toHaveLength(4);

    // Retry the failed row, after giving its owner an account: a new round creates it.
    await env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Nobody', 'nobody@example.com', 'active')`);
    expect(await answer(await post('/batches/wave/retry'), 200, S.ControlResponseSchema)).toMatchObject({ batch_id: 'wave', rows: 1 });
    await waitUntilDone(env, ['wave']);
    expect((await answer(await api('/batches/wave'), 200, S.BatchStatusSchema)).state).toBe('done');

    // Cancel what waits (no worker), then resume it.
    await worker!.close();
    worker = undefined;
    await answer(
      await api('/batches', json({ rows: [{ workspace_name: 'Later', owner_email: 'owner6@example.com' }], batch_id: 'later' })),
      201,
      S.EnqueueResponseSchema,
    );
    expect((await answer(await api('/batches/later'), 200, S.BatchStatusSchema)).state).toBe('stalled');
    expect(await answer(await post('/batches/later/cancel'), 200, S.ControlResponseSchema)).toMatchObject({ rows: 1 });
    expect((await answer(await api('/batches/later'), 200, S.BatchStatusSchema)).state).toBe('cancelled');
    expect(await answer(await post('/batches/later/resume'), 200, S.ControlResponseSchema)).toMatchObject({ rows: 1 });
    await startWorker();
    await waitUntilDone(env, ['later']);
    expect((await answer(await api('/batches/later'), 200, S.BatchStatusSchema)).counts.created).toBe(1);

    for (const [method, path] of [
      ['GET', '/batches/nope'],
      ['GET', '/batches/nope/rows'],
      ['GET', '/batches/nope/report'],
      ['POST', '/batches/nope/retry'],
      ['POST', '/batches/nope/cancel'],
      ['POST', '/batches/nope/resume'],
    ] as const) {
      expect((await errorOf(await api(path, { method }), 404)).code, `${method} ${path}`).toBe('BATCH_NOT_FOUND');
    }
  });

  it('every route of the document: 401 without a token; a read-only token may GET and is refused every POST', async () => {
    await answer(await api('/batches', json({ rows: GOOD, batch_id: 'seen' })), 201, S.EnqueueResponseSchema);
    const doc = (await (await api('/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> };
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => ({
        method: m.toUpperCase(),
        path: path.replace('/api/v1', '').replace('{id}', 'seen').replace('{line}', '1'),
      })),
    );
    expect(operations).toHaveLength(15);
    for (const { method, path } of operations) {
      const body = method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ rows: GOOD }) } : {};
      const anonymous = await fetch(`${base}/api/v1${path}`, { method, ...body });
      expect((await errorOf(anonymous, 401)).code, `${method} ${path}`).toBe('UNAUTHORIZED');
      const wrong = await fetch(`${base}/api/v1${path}`, {
        method,
        ...body,
        headers: { ...body.headers, ...bearer('not-the-token-0123456789') },
      });
      expect(wrong.status, `${method} ${path}`).toBe(401);
      const reader = await fetch(`${base}/api/v1${path}`, { method, ...body, headers: { ...body.headers, ...bearer(READER) } });
      if (method === 'POST') expect((await errorOf(reader, 403)).code, `${method} ${path}`).toBe('READ_ONLY');
      else expect(reader.status, `${method} ${path}`).toBe(200);
    }
    expect(await batchCount()).toBe(1);
    expect((await answer(await api('/batches/seen'), 200, S.BatchStatusSchema)).counts.queued).toBe(2);
  });
});

describe('Idempotency-Key', () => {
  it('the same key and request answers as the first time; the same key with another request is refused', async () => {
    const key = { 'idempotency-key': 'wave-3-attempt-1' };
    const first = await api('/batches', json({ rows: GOOD }, key));
    const created = await answer(first, 201, S.EnqueueResponseSchema);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    const again = await api('/batches', json({ rows: GOOD }, key));
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    // The generated batch id too: the second request made no second batch.
    expect(await answer(again, 201, S.EnqueueResponseSchema)).toEqual(created);
    expect(await batchCount()).toBe(1);
    const other = await errorOf(await api('/batches', json({ rows: [GOOD[0]] }, key)), 422);
    expect(other.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await batchCount()).toBe(1);

    // A file: the same bytes and options under a key are the same request.
    const fileKey = { 'idempotency-key': 'upload-1' };
    const upload = await answer(await api('/batches?batch_id=up', csvBody(csvOf(GOOD), fileKey)), 201, S.EnqueueResponseSchema);
    const replay = await api('/batches?batch_id=up', csvBody(csvOf(GOOD), fileKey));
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await answer(replay, 201, S.EnqueueResponseSchema)).toEqual(upload);
    expect((await errorOf(await api('/batches?batch_id=up&strict=true', csvBody(csvOf(GOOD), fileKey)), 422)).code).toBe(
      'IDEMPOTENCY_KEY_REUSED',
    );
    expect((await errorOf(await api('/batches?batch_id=up', csvBody(csvOf([GOOD[1]!]), fileKey)), 422)).code).toBe(
      'IDEMPOTENCY_KEY_REUSED',
    );

    // A multipart upload: the file's name names the batch, so it is part of the request.
    const formKey = { 'idempotency-key': 'form-1' };
    const formOf = (name: string) => {
      const form = new FormData();
      form.set('file', new Blob([csvOf([{ workspace_name: 'Formco', owner_email: 'owner9@example.com' }])], { type: 'text/csv' }), name);
      return form;
    };
    const named = await answer(
      await api('/batches', { method: 'POST', body: formOf('wave-a.csv'), headers: formKey }),
      201,
      S.EnqueueResponseSchema,
    );
    expect(named.batch_id).toMatch(/^wave-a-/);
    const renamed = await api('/batches', { method: 'POST', body: formOf('wave-b.csv'), headers: formKey });
    expect((await errorOf(renamed, 422)).code).toBe('IDEMPOTENCY_KEY_REUSED');

    // A control action under a key runs once: the replay does not cancel again.
    const cancelKey = { 'idempotency-key': 'cancel-up' };
    const cancelled = await answer(await api('/batches/up/cancel', { method: 'POST', headers: cancelKey }), 200, S.ControlResponseSchema);
    expect(cancelled.rows).toBe(2);
    await api('/batches/up/resume', { method: 'POST' });
    const replayedCancel = await api('/batches/up/cancel', { method: 'POST', headers: cancelKey });
    expect(await answer(replayedCancel, 200, S.ControlResponseSchema)).toEqual(cancelled);
    expect((await answer(await api('/batches/up'), 200, S.BatchStatusSchema)).counts.queued).toBe(2);

    // What is kept: a hash of the request and the answer, under this queue's keys, with a TTL.
    const kept = await env.redis.keys(`${env.config.queuePrefix}:*:idempotency:*`);
    expect(kept).toHaveLength(4);
    for (const k of kept) {
      expect(await env.redis.pttl(k)).toBeGreaterThan(0);
      expect(await env.redis.get(k)).not.toContain(ADMIN);
    }
  });

  it('a refused request keeps nothing under its key: sent again it is refused the same way (not 409), and the corrected one runs', async () => {
    const key = { 'idempotency-key': 'strict-wave-1' };
    const bad = [...GOOD, { workspace_name: '', owner_email: 'not-an-email' }];
    const refused = await errorOf(await api('/batches?strict=true', csvBody(csvOf(bad), key)), 422);
    expect(refused.code).not.toMatch(/^IDEMPOTENCY_/);
    // The same refused request again: the same refusal, not "the first request … is still running".
    expect(await errorOf(await api('/batches?strict=true', csvBody(csvOf(bad), key)), 422)).toEqual(refused);
    expect(await env.redis.keys(`${env.config.queuePrefix}:*:idempotency:*`)).toEqual([]);
    expect(await batchCount()).toBe(0);
    // The key is free: the corrected file under it runs, and is the one kept.
    const ran = await answer(await api('/batches?strict=true', csvBody(csvOf(GOOD), key)), 201, S.EnqueueResponseSchema);
    expect(ran.queued).toBe(2);
    expect(await env.redis.keys(`${env.config.queuePrefix}:*:idempotency:*`)).toHaveLength(1);
  });
});
