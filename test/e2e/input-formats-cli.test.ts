// Files as people really send them, through the CLI: legacy workbooks written by real writers
// (xlwt's .xls, odfpy's .ods: test/fixtures/legacy/write-sheets.py, run by Debian's python3) are
// recognised by their bytes and refused by name, never read as a header of binary garbage; a title
// row above the header, headings spelled as people spell them, --map and --header-row.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { describe, expect, it } from 'vitest';
import { projectFile } from '../../src/common/project-files.js';
import { runCli } from '../helpers/cli.js';

// No database: a dry run only reads the file.
const offline: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
const dir = mkdtempSync(join(tmpdir(), 'input-formats-'));

/** customers.xls and customers.ods, as xlwt and odfpy write them. */
function legacySheets(): { xls: string; ods: string } {
  const made = spawnSync('/usr/bin/python3', [projectFile('test', 'fixtures', 'legacy', 'write-sheets.py'), dir], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`write-sheets.py failed (run npm run pretest): ${made.stderr}`);
  return { xls: join(dir, 'customers.xls'), ods: join(dir, 'customers.ods') };
}

describe('legacy workbooks are recognised by their bytes and refused by name', () => {
  const sheets = legacySheets();

  it('an Excel 97-2003 .xls (xlwt), whatever its name says', async () => {
    for (const file of [sheets.xls, copyAs(sheets.xls, 'customers.csv')]) {
      const r = await runCli(['ingest', file, '--dry-run'], offline);
      expect(r.stderr).toBe(
        `dify-provision: line 1: "${file}" is an Excel 97–2003 workbook (.xls, an OLE2 compound file), which dify-provision does not read: ` +
          'save it as .xlsx (Excel Workbook) or CSV UTF-8 and ingest that; nothing was read\n',
      );
      expect(r.code).toBe(1);
    }
  });

  it('an OpenDocument .ods (odfpy), from stdin too', async () => {
    const r = await runCli(['ingest', sheets.ods, '--dry-run'], offline);
    expect(r.stderr).toContain(
      `"${sheets.ods}" is an OpenDocument spreadsheet (.ods), which dify-provision does not read: save it as .xlsx`,
    );
    expect(r.code).toBe(1);
    const piped = spawnSync('sh', ['-c', `node "$0" ingest - --dry-run < "$1"`, projectFile('dist', 'src', 'cli', 'main.js'), sheets.ods], {
      env: offline,
      encoding: 'utf8',
    });
    expect(piped.stderr).toContain('"stdin" is an OpenDocument spreadsheet (.ods)');
    expect(piped.status).toBe(1);
  });
});

function copyAs(from: string, name: string): string {
  const to = join(dir, name);
  copyFileSync(from, to);
  return to;
}

/** A dry run of `file` (no database), with its exit code, stdout and stderr. */
const dryRun = (file: string, ...flags: string[]) => runCli(['ingest', file, '--dry-run', '--json', ...flags], offline);
const write = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

describe('headers as people write them', () => {
  it('a workbook with a title row above the header: the header is found by itself, its spellings read as columns', async () => {
    const path = join(dir, 'wave2.xlsx');
    const wb = new ExcelJS.Workbook();
    const ws = wb.addWorksheet('Wave 2');
    ws.addRow(['Customer onboarding – wave 2 (Jan 2027)']);
    ws.mergeCells('A1:D1');
    ws.addRow([]);
    ws.addRow(['Customer ID', 'Company', 'Owner E-mail', 'Interface Language']);
    ws.addRow(['C-1', 'Acme', 'ana@example.com', 'fr-FR']);
    ws.addRow(['C-2', 'Globex', 'bo@example.com', 'ja_jp']);
    // Its last cell blank: the sheet leaves it out, and the row is still as wide as the header.
    ws.addRow(['C-3', 'Initech', 'cy@example.com']);
    await wb.xlsx.writeFile(path);
    const r = await dryRun(path);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({
      total: 3,
      wouldQueue: 3,
      rejected: 0,
      input: {
        format: 'xlsx',
        headerLine: 3,
        renamed: [
          { heading: 'Customer ID', column: 'external_id' },
          { heading: 'Company', column: 'workspace_name' },
          { heading: 'Interface Language', column: 'owner_language' },
        ],
      },
    });
    const text = await runCli(['ingest', path, '--dry-run'], offline);
    expect(text.stdout).toContain('header on line 3 (lines 1-2 above it skipped)');
  });

  it('the alias table: common spellings, accents, case and punctuation aside', async () => {
    for (const [header, columns] of [
      ['E-Mail;Workspace;Customer ID', ['owner_email', 'workspace_name', 'external_id']],
      ['Email address,Company Name,Tier', ['owner_email', 'workspace_name', 'plan']],
      ['OWNER_E-MAIL\tOrganisation\tTime zone', ['owner_email', 'workspace_name', 'owner_timezone']],
      ['Courriel,Entreprise,Fuseau horaire', ['owner_email', 'workspace_name', 'owner_timezone']],
      ['Correo electrónico,Empresa,Idioma', ['owner_email', 'workspace_name', 'owner_language']],
    ] as const) {
      const sep = header.includes(';') ? ';' : header.includes('\t') ? '\t' : ',';
      const values = columns.map(
        (c) =>
          ({ owner_email: 'a@example.com', workspace_name: 'A', owner_timezone: 'Europe/Paris', owner_language: 'fr-FR' })[c as string] ??
          'x',
      );
      const r = await dryRun(write('aliases.csv', `${header}\n${values.join(sep)}\n`));
      expect(r.stderr, header).toBe('');
      expect(JSON.parse(r.stdout).wouldQueue, header).toBe(1);
    }
  });

  it('near misses: "did you mean", --map for the rest, --header-row, and a column named twice under two spellings', async () => {
    const file = write('typo.csv', 'Onboarding list\nWorkspace Name,Owner Emial,Notes\nAcme,a@example.com,x\n');
    const refused = await dryRun(file);
    expect(refused.stderr).toBe(
      'dify-provision: line 2: unknown column(s) "Owner Emial" (did you mean owner_email? --map "Owner Emial=owner_email"), "Notes" ' +
        '(columns split on ",", detected): the columns are workspace_name, owner_email, plan, members, external_id, workspace_id, ' +
        'dataset_api_key, owner_name, owner_language, owner_timezone; no line among the first 10 names workspace_name and owner_email: ' +
        'name the header\'s line with --header-row N, or its headings with --map "Heading=column"\n',
    );
    expect(refused.code).toBe(1);
    const mapped = await dryRun(file, '--map', 'Owner Emial=owner_email', '--map', 'notes=-');
    expect(mapped.stderr).toBe('');
    expect(JSON.parse(mapped.stdout)).toMatchObject({
      wouldQueue: 1,
      input: { headerLine: 2, renamed: [{ heading: 'Owner Emial', column: 'owner_email' }] },
    });
    const badMap = await dryRun(file, '--map', 'Owner Emial=owner_emial');
    expect(badMap.stderr).toContain('--map "Owner Emial=owner_emial": "owner_emial" is not a column (did you mean owner_email?)');
    expect(badMap.code).toBe(1);
    // --header-row names the line: a data-looking line above it is skipped, not read as the header.
    const second = write('second.csv', 'workspace_name,owner_email\nWorkspace,Email\nAcme,a@example.com\n');
    expect(JSON.parse((await dryRun(second, '--header-row', '2')).stdout)).toMatchObject({
      total: 1,
      wouldQueue: 1,
      input: { headerLine: 2 },
    });
    const twice = await dryRun(write('twice.csv', 'Email,Owner E-mail,Company\na@example.com,b@example.com,A\n'));
    expect(twice.stderr).toBe('dify-provision: line 1: the header names column "owner_email" twice ("Email" and "Owner E-mail")\n');
  });

  it('a binary first line is no header, and what an error echoes of a heading is escaped and cut short', async () => {
    const binary = await dryRun(write('blob.csv', 'a\u0000\u0001\u0002,b\u001b[2J\nx,y\n'));
    expect(binary.stderr).toContain('line 1: the header holds control characters or bytes that are not text');
    const long = await dryRun(write('long.csv', `workspace_name,owner_email,${'z'.repeat(5000)}\u202e\nA,a@example.com,x\n`));
    expect(long.stderr).toContain(`unknown column(s) "${'z'.repeat(40)}…"`);
    expect(long.stderr.length).toBeLessThan(600);
    const invisible = await dryRun(write('bidi.csv', 'workspace_name,owner_email,no\u202etes\nA,a@example.com,x\n'));
    expect(invisible.stderr).toContain('unknown column(s) "no\\u202etes"');
  });
});
