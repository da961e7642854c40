// Customer lists as Excel, LibreOffice and Google Sheets export them, written byte for byte,
// provisioned through the library's reading path by a real worker into Dify's PostgreSQL.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CsvFormatError } from '../../src/input/decode.js';
import { type Provisioner } from '../../src/provisioner.js';
import { runUntilDone } from '../helpers/batch.js';
import { type TestEnv } from '../helpers/test-env.js';
import { freshProvisionerEachTest } from '../helpers/world.js';

let env: TestEnv;
let provisioner: Provisioner;
freshProvisionerEachTest((w) => ({ env, provisioner } = w));

const CUSTOMERS = [
  ['Café Crème', 'owner1@example.com'],
  ['Müller & Söhne', 'owner2@example.com'],
  ['Ærø Fisk', 'owner3@example.com'],
] as const;
// Windows-1252 byte for byte (é è ü ö Æ ø), as Excel writes "CSV (semicolon delimited)" in Europe.
const CP1252: Record<string, number> = { é: 0xe9, è: 0xe8, ü: 0xfc, ö: 0xf6, Æ: 0xc6, ø: 0xf8 };
const cp1252 = (s: string) => Buffer.from([...s].map((c) => CP1252[c] ?? c.charCodeAt(0)));

const tenantNames = async () => (await env.db.query<{ name: string }>(`SELECT name FROM tenants ORDER BY name`)).rows.map((r) => r.name);
const file = async (name: string, bytes: Buffer) => {
  const path = join(env.dir, name);
  await writeFile(path, bytes);
  return path;
};

describe('spreadsheet exports, provisioned with their accents intact', () => {
  it('Excel "CSV UTF-8": BOM, CRLF, a Notes column and trailing empty rows (skipped and counted, not rejected)', async () => {
    const lines = ['workspace_name,owner_email,Notes', ...CUSTOMERS.map(([n, e]) => `${n},${e},call back`), ',,', ',,', ',,'];
    const path = await file('excel-utf8.csv', Buffer.from(`\ufeff${lines.join('\r\n')}\r\n`));
    const batch = await provisioner.enqueueCsv(path, { batchId: 'excel-utf8', ignoreUnknownColumns: true });
    expect(batch.summary).toMatchObject({ total: 3, queued: 3, rejected: 0 });
    expect(batch.summary.input).toEqual({ format: 'csv', encoding: 'utf-8 with BOM', delimiter: ',', emptyRows: 3 });
    const [status] = await runUntilDone(env, ['excel-utf8']);
    expect(status).toMatchObject({ done: true, counts: { created: 3 } });
    expect(await tenantNames()).toEqual(['Café Crème', 'Müller & Söhne', 'Ærø Fisk']);
  });

  it('European Excel (";", Windows-1252): refused as a whole without an encoding, provisioned with encoding windows-1252', async () => {
    const lines = ['external_id;workspace_name;owner_email', ...CUSTOMERS.map(([n, e], i) => `c-${i + 1};${n};${e}`)];
    const path = await file('excel-eu.csv', cp1252(`${lines.join('\r\n')}\r\n`));

    const err = await provisioner.enqueueCsv(path, { batchId: 'eu' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CsvFormatError);
    expect((err as Error).message).toBe(
      'line 2: the file is not UTF-8; this looks like Windows-1252: re-save as CSV UTF-8 or pass `--encoding windows-1252` ' +
        "(library: encoding: 'windows-1252'); nothing was read",
    );
    // Nothing of the file was recorded: no batch, no row.
    expect(await provisioner.batches()).toEqual([]);

    const plan = await provisioner.plan(path, { encoding: 'windows-1252' });
    expect(plan).toMatchObject({ total: 3, wouldCreate: 3, input: { encoding: 'windows-1252', delimiter: ';' } });
    const batch = await provisioner.enqueueCsv(path, { batchId: 'eu', encoding: 'windows-1252' });
    expect(batch.summary).toMatchObject({ total: 3, queued: 3, rejected: 0 });
    await runUntilDone(env, ['eu']);
    expect(await tenantNames()).toEqual(['Café Crème', 'Müller & Söhne', 'Ærø Fisk']);
  });

  it('Excel "Unicode Text" (UTF-16LE with a BOM, TAB-separated)', async () => {
    const lines = ['workspace_name\towner_email\tplan', ...CUSTOMERS.map(([n, e]) => `${n}\t${e}\tteam`)];
    const path = await file(
      'excel-unicode.txt',
      Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(`${lines.join('\r\n')}\r\n`, 'utf16le')]),
    );
    const batch = await provisioner.enqueueCsv(path, { batchId: 'utf16' });
    expect(batch.summary).toMatchObject({ total: 3, queued: 3, rejected: 0 });
    expect(batch.summary.input).toMatchObject({ encoding: 'utf-16le', delimiter: '\t' });
    await runUntilDone(env, ['utf16']);
    expect(await tenantNames()).toEqual(['Café Crème', 'Müller & Söhne', 'Ærø Fisk']);
  });
});

describe('rows that look like the same customer', () => {
  it('flags the later row in the plan and rejects it at ingest, naming the line; allowDuplicateNames lets it through', async () => {
    const csv =
      'external_id,workspace_name,owner_email\r\nc-1,Acme Café,owner1@example.com\r\n, ACME CAFÉ ,OWNER1@example.com\r\nc-3,Other,owner1@example.com\r\n';
    const path = await file('twice.csv', Buffer.from(csv));
    const message =
      'likely duplicate: line 2 has the same owner and workspace name (ignoring case and spaces at the ends); ' +
      'pass --allow-duplicate-names (library: allowDuplicateNames) if both are wanted';
    const plan = await provisioner.plan(path);
    expect(plan).toMatchObject({ total: 3, wouldCreate: 2, rejected: 1, likelyDuplicates: 1 });
    expect(plan.problems).toEqual([{ line: 3, field: 'workspace_name', message }]);

    const rejected: string[] = [];
    const batch = await provisioner.enqueueCsv(path, {
      batchId: 'twice',
      onRejected: (r) => rejected.push(`${r.line} ${r.errors[0]!.message}`),
    });
    expect(batch.summary).toMatchObject({ total: 3, queued: 2, rejected: 1, likelyDuplicates: 1 });
    expect(rejected).toEqual([`3 ${message}`]);
    await runUntilDone(env, ['twice']);
    expect(await tenantNames()).toEqual(['Acme Café', 'Other']);

    const allowed = await provisioner.enqueueCsv(path, { batchId: 'twice-allowed', allowDuplicateNames: true });
    expect(allowed.summary).toMatchObject({ total: 3, queued: 3, rejected: 0 });
  });

  it("flags a workspace the owner already has in Dify (an earlier batch's, under another key), naming the tenant", async () => {
    const first = await provisioner.enqueueCsv(
      await file('first.csv', Buffer.from('external_id,workspace_name,owner_email\nb-1,Beta GmbH,owner2@example.com\n')),
      {
        batchId: 'first',
      },
    );
    expect(first.summary.queued).toBe(1);
    await runUntilDone(env, ['first']);
    const { id } = (await env.db.query<{ id: string }>(`SELECT id FROM tenants WHERE name = 'Beta GmbH'`)).rows[0]!;

    const path = await file('second.csv', Buffer.from('external_id,workspace_name,owner_email\nb-2, beta gmbh ,Owner2@Example.com\n'));
    const message =
      `likely duplicate: Owner2@Example.com already owns the workspace "Beta GmbH" (tenant ${id}) in Dify; ` +
      'pass --allow-duplicate-names (library: allowDuplicateNames) if both are wanted';
    const plan = await provisioner.plan(path);
    expect(plan).toMatchObject({ total: 1, wouldCreate: 0, rejected: 1, likelyDuplicates: 1 });
    expect(plan.problems).toEqual([{ line: 2, field: 'workspace_name', message }]);
    const second = await provisioner.enqueueCsv(path, { batchId: 'second' });
    expect(second.summary).toMatchObject({ total: 1, queued: 0, rejected: 1, likelyDuplicates: 1 });
    expect((await second.report())[0]).toMatchObject({ outcome: 'rejected', error: `workspace_name: ${message}` });
    // The first batch's own row (the same key) is that workspace, existing: never its own duplicate.
    const again = await provisioner.plan(join(env.dir, 'first.csv'));
    expect(again).toMatchObject({ total: 1, existing: 1, rejected: 0, likelyDuplicates: 0 });
    const rerun = await provisioner.enqueueCsv(join(env.dir, 'first.csv'), { batchId: 'first-again' });
    expect(rerun.summary).toMatchObject({ queued: 1, rejected: 0 });
    const [status] = await runUntilDone(env, ['first-again']);
    expect(status).toMatchObject({ counts: { existing: 1 } });
    expect(await tenantNames()).toEqual(['Beta GmbH']);
  });
});
