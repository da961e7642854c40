// Zip bombs as .xlsx workbooks, given to the CLI as a separate process: each is a valid workbook
// whose sheet, shared strings or other part inflates to 1 GiB from about a megabyte. Each is
// refused with an error naming the file and the limit, the process's peak memory stays near that of
// reading a small workbook (measured: the process's own maxRSS), and no temporary file is left.
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants, crc32, deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectFile } from '../../src/common/project-files.js';
import { CLI, runProgram } from '../helpers/cli.js';

const NS = 'http://schemas.openxmlformats.org/spreadsheetml/2006/main';
const REL = 'http://schemas.openxmlformats.org/officeDocument/2006/relationships';
const PKG = 'http://schemas.openxmlformats.org/package/2006/relationships';
const MiB = 1 << 20;

/** A part of the zip: its text, or a text with `count` MiB of one character between `head` and `tail`. */
type Part = { name: string; text: string } | { name: string; head: string; fill: string; count: number; tail: string };

/**
 * A zip written byte for byte, honest sizes and CRCs. A bomb part is one deflate stream made of
 * its head, the same compressed MiB of `fill` `count` times (each piece flushed to a byte
 * boundary with a fresh dictionary, so the pieces can be repeated), and its tail.
 */
function zip(parts: Part[]): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const p of parts) {
    const name = Buffer.from(p.name);
    let data: Buffer;
    let size: number;
    let crc: number;
    if ('text' in p) {
      const raw = Buffer.from(p.text);
      data = deflateRawSync(raw);
      size = raw.length;
      crc = crc32(raw);
    } else {
      const flush = { finishFlush: constants.Z_FULL_FLUSH };
      const head = Buffer.from(p.head);
      const mib = Buffer.alloc(MiB, p.fill);
      const tail = Buffer.from(p.tail);
      const piece = deflateRawSync(mib, flush);
      data = Buffer.concat([deflateRawSync(head, flush), ...Array<Buffer>(p.count).fill(piece), deflateRawSync(tail)]);
      size = head.length + p.count * MiB + tail.length;
      crc = crc32(head);
      for (let i = 0; i < p.count; i++) crc = crc32(mib, crc);
      crc = crc32(tail, crc);
    }
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc >>> 0, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    const entry = Buffer.alloc(46);
    entry.writeUInt32LE(0x02014b50, 0);
    entry.writeUInt16LE(20, 4);
    entry.writeUInt16LE(20, 6);
    entry.writeUInt16LE(8, 10);
    entry.writeUInt16LE(0x21, 14);
    entry.writeUInt32LE(crc >>> 0, 16);
    entry.writeUInt32LE(data.length, 20);
    entry.writeUInt32LE(size, 24);
    entry.writeUInt16LE(name.length, 28);
    entry.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    central.push(entry, name);
    offset += local.length + name.length + data.length;
  }
  const dir = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(parts.length, 8);
  end.writeUInt16LE(parts.length, 10);
  end.writeUInt32LE(dir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, dir, end]);
}

const packaging: Part[] = [
  {
    name: '[Content_Types].xml',
    text:
      '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">' +
      '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>' +
      '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>' +
      '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>' +
      '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
  },
  {
    name: '_rels/.rels',
    text: `<Relationships xmlns="${PKG}"><Relationship Id="rId1" Type="${REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>`,
  },
  {
    name: 'xl/workbook.xml',
    text: `<workbook xmlns="${NS}" xmlns:r="${REL}"><sheets><sheet name="Customers" sheetId="1" r:id="rId1"/></sheets></workbook>`,
  },
  {
    name: 'xl/_rels/workbook.xml.rels',
    text:
      `<Relationships xmlns="${PKG}"><Relationship Id="rId1" Type="${REL}/worksheet" Target="worksheets/sheet1.xml"/>` +
      `<Relationship Id="rId2" Type="${REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>`,
  },
];
const STRINGS_HEAD = `<sst xmlns="${NS}"><si><t>workspace_name</t></si><si><t>owner_email</t></si>`;
const strings: Part = { name: 'xl/sharedStrings.xml', text: `${STRINGS_HEAD}</sst>` };
const SHEET_HEAD = `<worksheet xmlns="${NS}"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>`;
const row = (r: number, name: string) =>
  `<row r="${r}"><c r="A${r}" t="inlineStr"><is><t>${name}</t></is></c><c r="B${r}" t="inlineStr"><is><t>ana@example.com</t></is></c></row>`;
const sheet: Part = { name: 'xl/worksheets/sheet1.xml', text: `${SHEET_HEAD}${row(2, 'Café Crème')}</sheetData></worksheet>` };
const GiB = 1024; // MiB pieces

let dir: string;
let scratch: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dp-xlsx-bomb-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The CLI's dry run (no database: it reads and checks every row) on `parts`, with its peak RSS. */
async function dryRun(name: string, parts: Part[], ...flags: string[]) {
  const path = join(dir, name);
  await writeFile(path, zip(parts));
  scratch = await mkdtemp(join(dir, 'tmp-'));
  // The CLI's own V8 flags (its shebang), and a wrapper that prints the process's peak RSS at exit.
  const shebang = readFileSync(CLI, 'utf8').split('\n', 1)[0]!;
  const nodeFlags = shebang.split(/\s+/).filter((w) => w.startsWith('--'));
  const { PATH, HOME } = process.env;
  const ran = await runProgram(
    process.execPath,
    [...nodeFlags, projectFile('dist', 'bench', 'rss-ingest.js'), 'ingest', path, '--dry-run', ...flags],
    { PATH, HOME, TMPDIR: scratch },
  );
  const rssMb = Number(/maxrss_kb=(\d+)/.exec(ran.stderr)?.[1]) / 1024;
  return { ...ran, path, rssMb, leftBehind: await readdir(scratch) };
}

/** Ended on its limit: the message, exit code 1 (an out-of-memory crash is 134 or a signal, never 1). */
function refused(r: { code: number | null; stderr: string }, message: string) {
  expect({ code: r.code, oom: /heap out of memory|Allocation failed/.test(r.stderr) }, r.stderr.slice(-2000)).toEqual({
    code: 1,
    oom: false,
  });
  expect(r.stderr).toContain(message);
}

describe('zip bombs as .xlsx workbooks (the CLI, a separate process)', () => {
  let baseline: number;
  beforeAll(async () => {
    const ok = await dryRun('small.xlsx', [...packaging, strings, sheet]);
    expect(ok.stdout).toContain('would queue 1');
    expect(ok.code).toBe(0);
    baseline = ok.rssMb;
  });

  it('a 1 GiB cell in the sheet: refused after 1 MiB of XML without a row, memory flat', async () => {
    const bomb: Part = {
      name: 'xl/worksheets/sheet1.xml',
      head: `${SHEET_HEAD}<row r="2"><c r="A2" t="inlineStr"><is><t>`,
      fill: 'A',
      count: GiB,
      tail: `</t></is></c></row></sheetData></worksheet>`,
    };
    // --max-bytes well under the CLI's heap: were the 1 MiB bound gone, the process would still end
    // on a limit (at 16 MiB, its own message), never on an out-of-memory crash.
    const r = await dryRun('cell-bomb.xlsx', [...packaging, strings, bomb], '--max-bytes', '16MiB');
    refused(r, `the workbook "${r.path}": over 1 MiB of the sheet's XML after row 1 holds no complete row`);
    expect(r.rssMb - baseline).toBeLessThan(48);
    expect(r.leftBehind).toEqual([]);
  });

  it("a 1 GiB sheet before the shared strings (Excel's order, so it is spooled): refused at --max-bytes, nothing left on disk", async () => {
    const bomb: Part = {
      name: 'xl/worksheets/sheet1.xml',
      head: `${SHEET_HEAD}${row(2, 'x')}`,
      fill: ' ',
      count: GiB,
      tail: '</sheetData></worksheet>',
    };
    const r = await dryRun('spooled-bomb.xlsx', [...packaging, bomb, strings], '--max-bytes', '64MiB');
    refused(r, `the workbook "${r.path}": it unpacks to more than 64 MiB (--max-bytes`);
    expect(r.rssMb - baseline).toBeLessThan(48);
    expect(r.leftBehind).toEqual([]);
  });

  it('1 GiB of shared strings: refused at a sixteenth of --max-bytes, memory flat', async () => {
    const bomb: Part = { name: 'xl/sharedStrings.xml', head: `${STRINGS_HEAD}<si><t>`, fill: 'B', count: GiB, tail: '</t></si></sst>' };
    const r = await dryRun('strings-bomb.xlsx', [...packaging, bomb, sheet], '--max-bytes', '64MiB');
    refused(r, `the workbook "${r.path}": its shared strings (xl/sharedStrings.xml) unpack to more than 4 MiB`);
    expect(r.rssMb - baseline).toBeLessThan(48);
    expect(r.leftBehind).toEqual([]);
  });

  it('1 GiB in a part nobody reads (docProps): refused at --max-bytes all the same', async () => {
    const bomb: Part = { name: 'docProps/custom.xml', head: '<Properties>', fill: ' ', count: GiB, tail: '</Properties>' };
    const r = await dryRun('other-bomb.xlsx', [...packaging, strings, bomb, sheet], '--max-bytes', '64MiB');
    refused(r, `the workbook "${r.path}": it unpacks to more than 64 MiB (--max-bytes`);
    expect(r.leftBehind).toEqual([]);
  });
});
