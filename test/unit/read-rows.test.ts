import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CsvFormatError, readRows, type CsvRow } from '../../src/input/read-rows.js';

async function read(csv: string | Buffer, opts = {}): Promise<CsvRow[]> {
  const out: CsvRow[] = [];
  for await (const r of readRows(Readable.from([typeof csv === 'string' ? Buffer.from(csv) : csv]), opts)) out.push(r);
  return out;
}
const rejections = (rows: CsvRow[]) => rows.flatMap((r) => (r.ok ? [] : r.errors.map((e) => `${r.line} ${e.field}: ${e.message}`)));

describe('reading a CSV of workspaces', () => {
  it('reads valid rows with their line numbers, defaults and members', async () => {
    const rows = await read(
      'Workspace_Name,OWNER_EMAIL,members,plan\nAcme, ana@acme.io ,bob@acme.io:Admin; cy@acme.io:dataset_operator,\n',
    );
    expect(rows).toEqual([
      {
        line: 2,
        ok: true,
        row: {
          workspaceName: 'Acme',
          ownerEmail: 'ana@acme.io',
          plan: 'basic',
          members: [
            { email: 'bob@acme.io', role: 'admin' },
            { email: 'cy@acme.io', role: 'dataset_operator' },
          ],
          externalId: undefined,
          workspaceId: undefined,
          key: 'owner+name:["ana@acme.io","Acme"]',
        },
      },
    ]);
  });

  it('names the line and field of every invalid value, and keeps reading', async () => {
    const rows = await read(
      [
        'workspace_name,owner_email,members,workspace_id',
        ',ana@acme.io,,',
        'Acme,not-an-email,bob@acme.io:boss,',
        'Acme,ana@acme.io,,../../etc',
        `${'x'.repeat(256)},ana@acme.io,,`,
        'Fine,ana@acme.io,ana@acme.io:admin,',
        'Last,ana@acme.io,,',
      ].join('\n'),
    );
    expect(rejections(rows)).toEqual([
      '2 workspace_name: is empty',
      '3 owner_email: is not a valid email address',
      '3 members: "boss" is not a role: use one of admin, editor, normal, dataset_operator',
      '4 workspace_id: is not a strict UUID (xxxxxxxx-xxxx-Mxxx-Nxxx-xxxxxxxxxxxx)',
      '5 workspace_name: is longer than 255 characters',
      '6 members: ana@acme.io is the owner and cannot also be a member',
    ]);
    expect(rows.filter((r) => r.ok).map((r) => r.line)).toEqual([7]);
  });

  it('accepts 255 characters (emoji count as one) and rejects control characters', async () => {
    const rows = await read(`workspace_name,owner_email\n${'🚀'.repeat(255)},a@b.io\n"tab\there",a@b.io\n`);
    expect(rows[0]?.ok).toBe(true);
    expect(rejections(rows)).toEqual(['3 workspace_name: contains control characters']);
  });

  it('rejects a later duplicate naming the earlier line (by external_id, else owner + name)', async () => {
    const rows = await read('workspace_name,owner_email,external_id\nA,a@b.io,x1\nB,c@d.io,x1\nC,a@b.io,\nC,A@B.IO,\n');
    expect(rejections(rows)).toEqual([
      '3 external_id: duplicate: line 2 has external_id "x1" already',
      '5 workspace_name: duplicate: line 4 has this owner and workspace name already',
    ]);
  });

  it('handles a BOM, CRLF and a quoted field spanning lines, counting lines from where a record starts', async () => {
    const rows = await read('\ufeffworkspace_name,owner_email\r\n"Two\r\nlines",a@b.io\r\nOk,a@b.io\r\n');
    expect(rejections(rows)).toEqual(['2 workspace_name: contains control characters']);
    expect(rows[1]).toMatchObject({ line: 4, ok: true });
  });

  it('rejects rows with the wrong number of fields', async () => {
    const rows = await read('workspace_name,owner_email\nA,a@b.io,extra\nB\n');
    expect(rejections(rows)).toEqual(['2 row: has 3 field(s) but the header has 2', '3 row: has 1 field(s) but the header has 2']);
  });

  it('refuses unknown and missing columns, and an empty file, as a whole', async () => {
    await expect(read('workspace_name,owner_email,colour\n')).rejects.toThrow(/line 1: unknown column\(s\) "colour"/);
    await expect(read('workspace_name\nA\n')).rejects.toThrow(/missing required column\(s\) owner_email/);
    await expect(read('')).rejects.toBeInstanceOf(CsvFormatError);
    const rows = await read('workspace_name,owner_email,colour\nA,a@b.io,red\n', { ignoreUnknownColumns: true });
    expect(rows[0]?.ok).toBe(true);
  });

  it('rejects invalid UTF-8 that is not Windows-1252 on its own row (a file that reads as Windows-1252 is refused whole)', async () => {
    const rows = await read(
      Buffer.concat([Buffer.from('workspace_name,owner_email\nBad'), Buffer.from([0xff, 0x81]), Buffer.from(',a@b.io\n')]),
    );
    expect(rejections(rows)).toEqual(['2 workspace_name: is not valid UTF-8']);
  });
});
