import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readRows, type CsvRow } from '../../src/input/read-rows.js';

async function read(csv: string | Buffer): Promise<CsvRow[]> {
  const out: CsvRow[] = [];
  for await (const r of readRows(Readable.from([typeof csv === 'string' ? Buffer.from(csv) : csv]))) out.push(r);
  return out;
}
const summary = (rows: CsvRow[]) =>
  rows.map((r) => (r.ok ? `${r.line} ok` : `${r.line} ${r.errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`));
const H = 'workspace_name,owner_email,members,workspace_id\n';

describe('hostile CSV input: a clear, line-numbered answer for each row, never a stack trace', () => {
  it('refuses an empty file, and reads a header-only file as no rows', async () => {
    await expect(read('')).rejects.toThrow('line 1: the file is empty: expected a header row with workspace_name and owner_email');
    await expect(read('\n\n')).rejects.toThrow(/the file is empty/);
    expect(await read(H)).toEqual([]);
    expect(await read(H.trimEnd())).toEqual([]);
  });

  it('refuses missing required columns and unknown columns, naming them', async () => {
    await expect(read('workspace_name,members\nA,\n')).rejects.toThrow(
      'line 1: missing required column(s) owner_email (columns split on ",", detected; header: workspace_name,members)',
    );
    await expect(read('workspace_name,owner_email,password\nA,a@b.io,x\n')).rejects.toThrow(/line 1: unknown column\(s\) "password"/);
    await expect(read('workspace_name,owner_email,Owner_Email\nA,a@b.io,x\n')).rejects.toThrow(
      'line 1: the header names column "owner_email" twice ("owner_email" and "Owner_Email")',
    );
    await expect(read('workspace_name,Owner Email,owner_email\nA,a@b.io,x\n')).rejects.toThrow(
      'line 1: the header names column "owner_email" twice ("Owner Email" and "owner_email")',
    );
  });

  it("takes a spreadsheet's column titles: spaces or hyphens for underscores, any case", async () => {
    const rows = await read(' Workspace Name ;Owner-Email;External  ID\nAcme;a@b.io;c-1\n');
    expect(summary(rows)).toEqual(['2 ok']);
    expect(rows[0]).toMatchObject({ ok: true, row: { workspaceName: 'Acme', ownerEmail: 'a@b.io', externalId: 'c-1' } });
  });

  it('rejects a row with an unbalanced quote, keeping the rows before it', async () => {
    const rows = await read(`${H}Good,a@b.io,,\n"Broken,a@b.io,,\nNever,c@d.io,,\n`);
    expect(summary(rows)[0]).toBe('2 ok');
    expect(rows).toHaveLength(2);
    expect(rows[1]!.ok).toBe(false);
    expect(summary(rows)[1]).toBe(
      '3 row: the row opens a quote that is never closed: everything from here to the end of the file was read as one field, so no later row was read',
    );
  });

  it('rejects a 10 MB field and goes on with the next rows', async () => {
    const rows = await read(`${H}Before,a@b.io,,\n${'x'.repeat(10 * 1024 * 1024)},a@b.io,,\nAfter,c@d.io,,\n`);
    expect(summary(rows)).toEqual(['2 ok', '3 row: the row is too large (over 64 KiB); it was skipped', '4 ok']);
  });

  it('does the same when the large row arrives in many small chunks (as from a file)', async () => {
    const whole = Buffer.from(`${H}Before,a@b.io,,\r\n${'y'.repeat(3 * 1024 * 1024)},a@b.io,,\r\nAfter,c@d.io,,\r\n`);
    const chunks = [];
    for (let i = 0; i < whole.length; i += 65_521) chunks.push(whole.subarray(i, i + 65_521));
    const rows: CsvRow[] = [];
    for await (const r of readRows(Readable.from(chunks))) rows.push(r);
    expect(summary(rows)).toEqual(['2 ok', '3 row: the row is too large (over 64 KiB); it was skipped', '4 ok']);
  });

  it('rejects NUL bytes, invalid UTF-8 and control characters, and accepts a BOM and CRLF', async () => {
    const bad = Buffer.concat([
      Buffer.from(`\ufeff${H.replace('\n', '\r\n')}Nul\u0000Name,a@b.io,,\r\nBad`),
      Buffer.from([0xc3, 0x28, 0x81]), // invalid UTF-8, and not Windows-1252 (0x81)
      Buffer.from(',a@b.io,,\r\nBell\u0007,a@b.io,,\r\nFine,a@b.io,,\r\n'),
    ]);
    expect(summary(await read(bad))).toEqual([
      '2 workspace_name: contains control characters',
      '3 workspace_name: is not valid UTF-8',
      '4 workspace_name: contains control characters',
      '5 ok',
    ]);
  });

  it('takes names of 255 characters, emoji and right-to-left text literally, and rejects 256', async () => {
    const rows = await read(`${H}${'a'.repeat(255)},a@b.io,,\n${'b'.repeat(256)},a@b.io,,\n"شركة 🚀 חברה",a@b.io,,\n`);
    expect(summary(rows)).toEqual(['2 ok', '3 workspace_name: is longer than 255 characters', '4 ok']);
    expect(rows[2]!.ok && rows[2]!.row.workspaceName).toBe('شركة 🚀 חברה');
  });

  it('stores SQL- and formula-looking names as data', async () => {
    const rows = await read(`${H}"'); DROP TABLE tenants;--",a@b.io,,\n"=cmd|' /C calc'!A0",c@d.io,,\n`);
    expect(rows.map((r) => r.ok && r.row.workspaceName)).toEqual(["'); DROP TABLE tenants;--", "=cmd|' /C calc'!A0"]);
  });

  it('rejects workspace ids that are not strict UUIDs, path traversal included, and bad emails and roles', async () => {
    const rows = await read(
      `${H}A,a@b.io,,../../etc\nB,a@b.io,,6F1C2A4E9B7D4C3E8A213D5E7F9B1C20\nC,a@b.io,,00000000-0000-0000-0000-000000000000\nD,a@b.io,,6F1C2A4E-9B7D-4C3E-8A21-3D5E7F9B1C20\nE,a@@b,,\nF,a@b.io,x@y.io:root,\nG,a@b.io,x@y.io,\n`,
    );
    expect(summary(rows)).toEqual([
      '2 workspace_id: is not a strict UUID (xxxxxxxx-xxxx-Mxxx-Nxxx-xxxxxxxxxxxx)',
      '3 workspace_id: is not a strict UUID (xxxxxxxx-xxxx-Mxxx-Nxxx-xxxxxxxxxxxx)',
      '4 workspace_id: is not a strict UUID (xxxxxxxx-xxxx-Mxxx-Nxxx-xxxxxxxxxxxx)',
      '5 ok',
      '6 owner_email: is not a valid email address',
      '7 members: "root" is not a role: use one of admin, editor, normal, dataset_operator',
      '8 members: "x@y.io" must be email:role',
    ]);
    expect(rows[3]!.ok && rows[3]!.row.workspaceId).toBe('6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20');
  });

  it('rejects duplicate rows naming the first', async () => {
    expect(summary(await read(`${H}Same,a@b.io,,\nSame,a@b.io,,\n`))).toEqual([
      '2 ok',
      '3 workspace_name: duplicate: line 2 has this owner and workspace name already',
    ]);
  });
});
