// Files as spreadsheet programs write them: encodings, delimiters, empty rows, header hints.
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { detectDelimiter, newInputInfo, peek, utf8Text } from '../../src/input/decode.js';
import { CsvFormatError, readRows, type CsvRow, type ReadOptions } from '../../src/input/read-rows.js';
import { openFilesNamed } from '../helpers/open-files.js';

async function read(bytes: Buffer, opts: ReadOptions = {}, chunk = 7) {
  const info = newInputInfo();
  const rows: CsvRow[] = [];
  // Small chunks: a BOM, a multi-byte character and the header line all straddle chunk boundaries.
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) chunks.push(bytes.subarray(i, i + chunk));
  for await (const r of readRows(Readable.from(chunks), opts, info)) rows.push(r);
  return { rows, info };
}
const names = (rows: CsvRow[]) => rows.map((r) => (r.ok ? `${r.line} ${r.row.workspaceName} ${r.row.ownerEmail}` : `${r.line} rejected`));
const utf16le = (s: string) => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(s, 'utf16le')]);
const utf16be = (s: string) => Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(s, 'utf16le').swap16()]);
// Windows-1252 byte for byte: é = 0xe9, ü = 0xfc, € = 0x80.
const cp1252 = (s: string) => Buffer.from([...s].map((c) => ({ é: 0xe9, ü: 0xfc, '€': 0x80 })[c as 'é'] ?? c.charCodeAt(0)));

describe('detecting the delimiter from the header line', () => {
  it('picks , ; or TAB, whichever the header uses (quoted ones do not count), and , when none', () => {
    expect(detectDelimiter('workspace_name,owner_email,plan')).toBe(',');
    expect(detectDelimiter('external_id;workspace_name;owner_email;members')).toBe(';');
    expect(detectDelimiter('workspace_name\towner_email\tnotes')).toBe('\t');
    expect(detectDelimiter('"a;b;c";workspace_name;owner_email')).toBe(';');
    expect(detectDelimiter('"x,y,z";workspace_name')).toBe(';');
    expect(detectDelimiter('workspace_name')).toBe(',');
  });
});

describe('reading each encoding', () => {
  const text = 'workspace_name;owner_email\r\nCafé Müller;ana@example.com\r\n';
  it('UTF-8 with and without a BOM', async () => {
    for (const [bytes, encoding] of [
      [Buffer.from(text), 'utf-8'],
      [Buffer.from(`\ufeff${text}`), 'utf-8 with BOM'],
    ] as const) {
      const { rows, info } = await read(bytes);
      expect(names(rows)).toEqual(['2 Café Müller ana@example.com']);
      expect(info).toEqual({ format: 'csv', encoding, delimiter: ';', emptyRows: 0 });
    }
  });

  // Two layers take the BOM off: utf8Text (the bytes past it) and the CSV parser (bom: true), each
  // for what the other lets through. A BOM left before a quoted header makes its quote not the
  // field's first character: the header is refused ("Invalid Opening Quote").
  const quotedHeaders = [
    '"workspace_name","owner_email"\r\nAcme,ana@example.com\r\n',
    '"workspace_name";"owner_email"\r\nAcme;ana@example.com\r\n',
    '"workspace_name"\t"owner_email"\r\nAcme\tana@example.com\r\n',
  ];
  it('UTF-8 with a BOM before a quoted header (, ; or TAB), however the bytes arrive', async () => {
    for (const text of quotedHeaders)
      for (const chunk of [1, 2, 3, 4, 7, 1000]) {
        const { rows, info } = await read(Buffer.from(`\ufeff${text}`), {}, chunk);
        expect(names(rows), `${JSON.stringify(text)} in ${chunk}-byte chunks`).toEqual(['2 Acme ana@example.com']);
        expect(info.encoding).toBe('utf-8 with BOM');
      }
  });

  it('each layer alone: decoding drops the BOM (whatever the chunks), the parser drops one that reaches it', async () => {
    for (const chunk of [1, 2, 3, 4, 7]) {
      const bytes = Buffer.from(`\ufeff${quotedHeaders[0]}`);
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += chunk) chunks.push(bytes.subarray(i, i + chunk));
      const { head, rest } = await peek(Readable.from(chunks));
      const out: Buffer[] = [];
      for await (const b of utf8Text(head, rest, {}, newInputInfo())) out.push(b);
      expect(Buffer.concat(out).toString(), `${chunk}-byte chunks`).toBe(quotedHeaders[0]);
    }
    // A file that was given a BOM twice (an editor adding one to text that kept its own): decoding
    // takes off the first as it takes off any, the second reaches the parser, which drops it.
    for (const text of quotedHeaders) {
      const { rows } = await read(Buffer.from(`\ufeff\ufeff${text}`));
      expect(names(rows), JSON.stringify(text)).toEqual(['2 Acme ana@example.com']);
    }
  });

  it('UTF-16 LE and BE with a BOM (Excel "Unicode Text": TAB-separated)', async () => {
    const tab = text.replaceAll(';', '\t');
    for (const [bytes, encoding] of [
      [utf16le(tab), 'utf-16le'],
      [utf16be(tab), 'utf-16be'],
    ] as const) {
      const { rows, info } = await read(bytes);
      expect(names(rows)).toEqual(['2 Café Müller ana@example.com']);
      expect(info).toMatchObject({ encoding, delimiter: '\t' });
    }
  });

  it('refuses Windows-1252 as a whole, naming the first line, and reads it with encoding: windows-1252', async () => {
    const bytes = cp1252('workspace_name;owner_email\r\nPlain;ana@example.com\r\nCafé €;bo@example.com\r\n');
    const err = await read(bytes).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CsvFormatError);
    expect((err as Error).message).toBe(
      'line 3: the file is not UTF-8; this looks like Windows-1252: re-save as CSV UTF-8 or pass `--encoding windows-1252` ' +
        "(library: encoding: 'windows-1252'); nothing was read",
    );
    const { rows, info } = await read(bytes, { encoding: 'windows-1252' });
    expect(names(rows)).toEqual(['2 Plain ana@example.com', '3 Café € bo@example.com']);
    expect(info).toMatchObject({ encoding: 'windows-1252', delimiter: ';' });
  });

  it('refuses a Windows-1252 byte far into a large file, without having yielded it row by row', async () => {
    const rows = Array.from({ length: 5000 }, (_, i) => `W${i};o${i}@example.com\n`).join('');
    const bytes = Buffer.concat([Buffer.from(`workspace_name;owner_email\n${rows}`), cp1252('Müller;m@example.com\n')]);
    await expect(read(bytes, {}, 65536)).rejects.toThrow(/^line 5002: the file is not UTF-8; this looks like Windows-1252/);
  });
});

describe('empty rows and header hints', () => {
  it("skips Excel's trailing empty rows (all cells blank), counting them, and keeps line numbers", async () => {
    const csv = 'workspace_name,owner_email,notes\r\nA,a@example.com,hi\r\n,,\r\n , ,\r\nB,b@example.com,\r\n,,\r\n,,,,\r\n';
    const { rows, info } = await read(Buffer.from(`\ufeff${csv}`), { ignoreUnknownColumns: true });
    expect(names(rows)).toEqual(['2 A a@example.com', '5 B b@example.com']);
    expect(info.emptyRows).toBe(4);
  });

  it('names the delimiter it split on and suggests the one that works, never a flag that leads nowhere', async () => {
    const semi = Buffer.from('external_id;workspace_name;owner_email\n1;A;a@example.com\n');
    const err = (await read(semi, { delimiter: ',' }).catch((e: unknown) => e)) as Error;
    expect(err.message).toBe(
      `line 1: unknown column(s) "external_id;workspace_name;owner_email" (columns split on "," (--delimiter ',')): ` +
        `the columns are workspace_name, owner_email, plan, members, external_id, workspace_id, dataset_api_key, owner_name, owner_language, owner_timezone; ` +
        `the header looks ";"-separated: pass --delimiter ';'`,
    );
    expect(err.message).not.toContain('--ignore-unknown-columns');
    const missing = (await read(semi, { delimiter: ',', ignoreUnknownColumns: true }).catch((e: unknown) => e)) as Error;
    expect(missing.message).toMatch(/missing required column\(s\) workspace_name, owner_email .*pass --delimiter ';'$/);
    // A real unknown column: dropping it works, so that flag is offered.
    const notes = (await read(Buffer.from('workspace_name;owner_email;notes\nA;a@example.com;x\n')).catch((e: unknown) => e)) as Error;
    expect(notes.message).toContain('unknown column(s) "notes" (columns split on ";", detected)');
    expect(notes.message).toContain('(or pass --ignore-unknown-columns to drop them)');
  });

  it('says a zip that is not a workbook could not be read', async () => {
    await expect(read(Buffer.from('PK\u0003\u0004rest'))).rejects.toThrow(/the .xlsx workbook could not be read/);
  });
});

describe('reading an .xlsx workbook', () => {
  /** A workbook as Excel writes it (deflated, shared strings stored after the sheet), by exceljs's streaming writer. */
  async function streamedWorkbook(n: number, row: (i: number) => string[]): Promise<Buffer> {
    const { default: ExcelJS } = await import('exceljs');
    const out = new PassThrough();
    const parts: Buffer[] = [];
    out.on('data', (c: Buffer) => parts.push(c));
    const wb = new ExcelJS.stream.xlsx.WorkbookWriter({ stream: out, useSharedStrings: true });
    const ws = wb.addWorksheet('Customers');
    ws.addRow(['workspace_name', 'owner_email']).commit();
    for (let i = 1; i <= n; i++) ws.addRow(row(i)).commit();
    await ws.commit();
    await wb.commit();
    return Buffer.concat(parts);
  }

  async function workbook(build: (wb: import('exceljs').Workbook) => void): Promise<Buffer> {
    const { default: ExcelJS } = await import('exceljs');
    const wb = new ExcelJS.Workbook();
    build(wb);
    return Buffer.from(await wb.xlsx.writeBuffer());
  }

  it('reads the first sheet, each cell as shown (text ids, padded numbers, dates unshifted), with its row numbers', async () => {
    const bytes = await workbook((wb) => {
      const ws = wb.addWorksheet('Customers');
      ws.addRow(['external_id', 'workspace_name', 'owner_email', 'Notes']);
      ws.addRow(['00123', 'Café Crème', 'ana@example.com', '+49 30 1234567']);
      ws.addRow([12345678901, 'Müller', 'bo@example.com']);
      ws.addRow([]); // row 4 left empty
      const padded = ws.addRow([42, 'Padded', 'cy@example.com']);
      padded.getCell(1).numFmt = '00000';
      const dated = ws.addRow([new Date(Date.UTC(2024, 0, 31)), 'Dated', 'di@example.com']);
      dated.getCell(1).numFmt = 'yyyy-mm-dd';
      ws.addRow(['x', 'Bad', 'not-an-email']);
      ws.addRow(['', '  ', '']);
      wb.addWorksheet('Other').addRow(['workspace_name', 'owner_email']);
    });
    const { rows, info } = await read(bytes, { ignoreUnknownColumns: true }, 4096);
    expect(rows.map((r) => (r.ok ? `${r.line} ${r.row.externalId} ${r.row.workspaceName}` : `${r.line} ${r.errors[0]!.message}`))).toEqual([
      '2 00123 Café Crème',
      '3 12345678901 Müller',
      '5 00042 Padded',
      '6 2024-01-31 Dated',
      '7 is not a valid email address',
    ]);
    expect(info).toEqual({ format: 'xlsx', sheet: 'Customers', emptyRows: 1 });
  });

  it('reads a workbook whose first pieces are under 4 bytes (a pipe delivering small pieces) as xlsx, not CSV', async () => {
    const bytes = await workbook((wb) =>
      wb.addWorksheet('Customers').addRows([
        ['workspace_name', 'owner_email'],
        ['Piped', 'ana@example.com'],
      ]),
    );
    for (const first of [[1], [3], [1, 1, 1], [2, 1, 5]]) {
      const chunks: Buffer[] = [];
      let at = 0;
      for (const n of first) chunks.push(bytes.subarray(at, (at += n)));
      for (; at < bytes.length; at += 4096) chunks.push(bytes.subarray(at, at + 4096));
      const info = newInputInfo();
      const rows: CsvRow[] = [];
      for await (const r of readRows(Readable.from(chunks), {}, info)) rows.push(r);
      expect(names(rows), `first pieces of ${first.join(', ')} bytes`).toEqual(['2 Piped ana@example.com']);
      expect(info.format).toBe('xlsx');
    }
  });

  it('keeps accents whole where the inflated sheet and shared strings are cut into chunks (an exceljs bug worked around)', async () => {
    const bytes = await streamedWorkbook(5000, (i) => [`ÆØÅ-éèü-ÆØÅ-éèü ${i}`, `o${i}@example.com`]);
    const { rows } = await read(bytes, {}, 65536);
    expect(rows).toHaveLength(5000);
    expect(rows.filter((r) => !r.ok || r.row.workspaceName !== `ÆØÅ-éèü-ÆØÅ-éèü ${r.line - 1}`)).toEqual([]);
  });

  it('spools a sheet stored before the shared strings to a nameless file, closed whether the read ends, stops early or is refused', async () => {
    // exceljs's streaming writer stores the sheet first, as Excel does: it must wait for the strings.
    const bytes = await streamedWorkbook(20_000, (i) => [`Workspace ${i}`, `o${i}@example.com`]);
    const spools = () => openFilesNamed('dify-provision-sheet-');

    let seen: string[] = [];
    for await (const r of readRows(Readable.from([bytes]))) {
      seen = spools();
      if (r.line === 3) break; // a reader that stops early
    }
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatch(/ \(deleted\)$/);
    expect(spools()).toEqual([]);

    expect((await read(bytes, {}, 65536)).rows).toHaveLength(20_000);
    expect(spools()).toEqual([]);

    const refused = await read(bytes, { maxBytes: 256 * 1024, source: 'customers.xlsx' }, 65536).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(CsvFormatError);
    expect((refused as Error).message).toContain('the workbook "customers.xlsx": it unpacks to more than 262144 bytes (--max-bytes');
    expect(spools()).toEqual([]);
  });

  it('reads the sheet named by `sheet`, and names the sheets when there is no such sheet', async () => {
    const bytes = await workbook((wb) => {
      wb.addWorksheet('Read me').addRow(['nothing', 'here']);
      const ws = wb.addWorksheet('Customers');
      ws.addRow(['workspace_name', 'owner_email']);
      ws.addRow(['Ærø', 'ana@example.com']);
    });
    expect(names((await read(bytes, { sheet: 'Customers' }, 4096)).rows)).toEqual(['2 Ærø ana@example.com']);
    await expect(read(bytes, {}, 4096)).rejects.toThrow(
      /unknown column\(s\) "nothing", "here" \(sheet "Read me"\): the columns are [^(]*$/,
    );
    await expect(read(bytes, { sheet: 'Nope' }, 4096)).rejects.toThrow(
      'the workbook has no sheet named "Nope": its sheets are "Read me", "Customers"',
    );
  });
});
