// Files as people really send them, through the CLI: legacy workbooks written by real writers
// (xlwt's .xls, odfpy's .ods: test/fixtures/legacy/write-sheets.py, run by Debian's python3) are
// recognised by their bytes and refused by name, never read as a header of binary garbage.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
