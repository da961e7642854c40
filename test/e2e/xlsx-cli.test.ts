// An .xlsx workbook as a spreadsheet program writes it (made with exceljs here), ingested by the
// CLI and provisioned by a worker, both separate processes: every row in Dify with its text as the
// sheet shows it (accents, ids with leading zeros, phone-like numbers, a date, an extra column,
// trailing empty rows skipped).
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { cliWorld, until } from '../helpers/cli-world.js';

const world = cliWorld();

describe('an .xlsx workbook through the CLI (ingest and a worker as separate processes)', () => {
  it('provisions every row with its text intact, skipping the trailing empty rows', async () => {
    const path = join(world.env.dir, 'customers.xlsx');
    const wb = new ExcelJS.Workbook();
    const ws = wb.addWorksheet('Customers');
    ws.addRow(['external_id', 'workspace_name', 'owner_email', 'Notes']);
    ws.addRow(['00042', 'Café Crème', 'owner1@example.com', 'text id with leading zeros']);
    // A number shown zero-padded (format 00000): the id is the text the sheet shows.
    const padded = ws.addRow([7, 'Müller & Söhne', 'owner2@example.com', 'number formatted 00000']);
    padded.getCell(1).numFmt = '00000';
    // A phone number typed as a number: whole, never 3.31e10.
    ws.addRow([33142685300, 'Ærø Fisk', 'owner3@example.com', 'phone-like number']);
    ws.addRow(['+33 1 42 68 53 00', 'Ελληνικά 東京', 'owner4@example.com', 'phone-like text']);
    // A date cell as a workspace name: the day the sheet shows, never shifted by a time zone.
    const dated = ws.addRow(['d-1', new Date(Date.UTC(2024, 2, 1)), 'owner5@example.com', 'a date']);
    dated.getCell(2).numFmt = 'yyyy-mm-dd';
    for (let i = 0; i < 3; i++) ws.addRow(['', '', '', '']);
    await wb.xlsx.writeFile(path);

    const env = { ...world.env.env, TZ: 'America/Los_Angeles' };
    const ingest = await runCli(['ingest', path, '--batch-id', 'sheet', '--ignore-unknown-columns'], env);
    expect(ingest.stderr).toBe('');
    expect(ingest.stdout).toContain('batch sheet: 5 rows read, 5 queued, 0 rejected');
    expect(ingest.stdout).toContain('read as .xlsx, sheet "Customers"; skipped 3 empty rows');
    expect(ingest.code).toBe(0);

    world.worker('--concurrency', '2');
    await until(world.done('sheet'), 'the worker to provision the sheet');

    const { rows } = await world.env.db.query<{ line: number; external_id: string; outcome: string; name: string; email: string }>(
      `SELECT r.line, r.external_id, r.outcome, t.name, a.email
         FROM dify_provision.rows r
         JOIN tenants t ON t.id = r.tenant_id
         JOIN tenant_account_joins j ON j.tenant_id = t.id AND j.role = 'owner'
         JOIN accounts a ON a.id = j.account_id
        WHERE r.batch_id = 'sheet' ORDER BY r.line`,
    );
    expect(rows).toEqual([
      { line: 2, external_id: '00042', outcome: 'created', name: 'Café Crème', email: 'owner1@example.com' },
      { line: 3, external_id: '00007', outcome: 'created', name: 'Müller & Söhne', email: 'owner2@example.com' },
      { line: 4, external_id: '33142685300', outcome: 'created', name: 'Ærø Fisk', email: 'owner3@example.com' },
      { line: 5, external_id: '+33 1 42 68 53 00', outcome: 'created', name: 'Ελληνικά 東京', email: 'owner4@example.com' },
      { line: 6, external_id: 'd-1', outcome: 'created', name: '2024-03-01', email: 'owner5@example.com' },
    ]);
    // The names are the sheet's characters, not a look-alike: NFC, byte for byte.
    expect(rows.map((r) => Buffer.from(r.name).toString('hex'))).toEqual(
      ['Café Crème', 'Müller & Söhne', 'Ærø Fisk', 'Ελληνικά 東京', '2024-03-01'].map((n) =>
        Buffer.from(n.normalize('NFC')).toString('hex'),
      ),
    );
    expect((await runCli(['status', 'sheet', '--json'], world.env.env)).stdout).toContain('"done":true');
  });
});
