// Workspace names built to deceive, from a real CSV through a real batch (PostgreSQL, Redis, a
// worker): names that show nothing or read in another order are refused with line and field;
// names that open with invisible characters before a formula sign come out defused in the
// report and in the invitation links file.
import { generateKeyPairSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CHANGE_ROWS } from '../../src/changes/change-row.js';
import { readRecords } from '../../src/input/read-rows.js';
import { createProvisioner, type Provisioner } from '../../src/provisioner.js';
import { csvReport } from '../../src/report/format.js';
import { allReportRows } from '../../src/store/report.js';
import { ingestCsv, runLoggedUntilDone, runUntilDone } from '../helpers/batch.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { difyInvitationSettings } from '../helpers/dify-invitations.js';
import { closeEachTest } from '../helpers/world.js';

let env: TestEnv | undefined;
let provisioner: Provisioner | undefined;
closeEachTest(
  () => ({ provisioner, env }),
  (none) => ({ provisioner, env } = none),
);

const quoted = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** The cells of one CSV line as written by csvCell (quoted cells hold no line break here). */
function cells(line: string): string[] {
  const out: string[] = [];
  const re = /("(?:[^"]|"")*"|[^,]*)(?:,|$)/g;
  for (let m = re.exec(line); m && m.index < line.length; m = re.exec(line)) {
    const v = m[1]!;
    out.push(v.startsWith('"') ? v.slice(1, -1).replace(/""/g, '"') : v);
    if (m[0] === '') re.lastIndex++;
  }
  return out;
}

describe('workspace names that show nothing, or carry bidi overrides or isolates (a real CSV row)', () => {
  it('are refused naming their line and field, and create nothing; visible names with joiners and marks are created', async () => {
    env = await createTestEnv();
    const names: [string, 'rejected' | 'created', RegExp?][] = [
      ['\u200b', 'rejected', /^workspace_name: shows nothing: it has only invisible characters \(U\+200B\)$/],
      ['\u200b\u2060\u00ad\u200c', 'rejected', /shows nothing.*U\+200B U\+2060 U\+00AD U\+200C/],
      ['\u3164', 'rejected', /shows nothing.*U\+3164/],
      ['Acme\u202eevil.exe', 'rejected', /^workspace_name: contains U\+202E, a bidi override or isolate/],
      ['\u202aGlobex', 'rejected', /contains U\+202A/],
      ['Initech \u2067Umbrella\u2069', 'rejected', /contains U\+2067/],
      ['\u2066x\u2069', 'rejected', /contains U\+2066/],
      ['Family \u{1f468}\u200d\u{1f469}\u200d\u{1f467}', 'created'],
      ['\u0634\u0631\u0643\u0629\u200f', 'created'],
    ];
    const csv = ['workspace_name,owner_email', ...names.map(([n], i) => `${quoted(n)},owner${i + 1}@example.com`)].join('\r\n');
    const summary = await ingestCsv(env, `${csv}\r\n`, 'names');
    expect(summary).toMatchObject({ rejected: 7 });
    await runUntilDone(env, ['names']);
    const { rows } = await env.db.query<{ line: number; outcome: string; error: string | null }>(
      `SELECT line, outcome, error FROM dify_provision.rows WHERE batch_id = 'names' ORDER BY line`,
    );
    expect(rows.map((r) => [r.line, r.outcome])).toEqual(names.map(([, outcome], i) => [i + 2, outcome]));
    names.forEach(([name, , message], i) => {
      if (message) expect(rows[i]!.error, JSON.stringify(name)).toMatch(message);
    });
    const { rows: tenants } = await env.db.query<{ name: string }>(`SELECT name FROM tenants ORDER BY name`);
    expect(tenants.map((t) => t.name).sort()).toEqual(
      names
        .filter(([, o]) => o === 'created')
        .map(([n]) => n)
        .sort(),
    );
  });
});

describe('a rename to such a name (a real changes CSV)', () => {
  it('is refused naming its line and the name field', async () => {
    const names = ['\u200b\u2060', 'Acme\u202eevil', '\u2068Globex\u2069', 'Visible \u200d name'];
    const csv = ['action,workspace_id,name', ...names.map((n, i) => `rename,6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c2${i},${quoted(n)}`)].join(
      '\n',
    );
    const got: string[] = [];
    for await (const r of readRecords(Readable.from([Buffer.from(`${csv}\n`)]), CHANGE_ROWS, {}))
      got.push(r.ok ? `${r.line} ok` : `${r.line} ${r.errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`);
    expect(got).toEqual([
      '2 name: shows nothing: it has only invisible characters (U+200B U+2060)',
      '3 name: contains U+202E, a bidi override or isolate that changes the order in which the name reads',
      '4 name: contains U+2068, a bidi override or isolate that changes the order in which the name reads',
      '5 ok',
    ]);
  });
});

// Before the sign: format characters (category Cf) a spreadsheet shows as nothing, and the
// small, full-width, superscript and subscript signs.
const FORMULAS = [
  '\u2060=HYPERLINK("http://evil.example","x")',
  '\u200c=1+1',
  '\u00ad=1+1',
  '\u200d@SUM(1)',
  '\u200e-1',
  '\u200b\u2060\u00ad=1+1',
  '\ufe66SUM(1)',
  '\u2060\ufe66SUM(1)',
  '\uff1dSUM(1)',
  '\u200c\uff1dSUM(1)',
  // Every other compatibility form of a sign (NFKC folds them into it), and the blank braille
  // pattern, which names count as showing nothing.
  '\u207cSUM(1)',
  '\u208c1+1',
  '\u207a1',
  '\u208a1',
  '\ufb29cmd',
  '\u2800=1+1',
  '\u2800\u200b@SUM(1)',
];

describe('formulas behind invisible characters', () => {
  it('are defused in the report of a real batch', async () => {
    env = await createTestEnv();
    const csv = ['workspace_name,owner_email', ...FORMULAS.map((n, i) => `${quoted(n)},owner${i + 1}@example.com`)].join('\n');
    await ingestCsv(env, `${csv}\n`, 'formulas');
    await runUntilDone(env, ['formulas']);
    let report = '';
    for await (const chunk of csvReport(allReportRows(env.db, 'formulas'))) report += chunk;
    const [header, ...lines] = report.trimEnd().split('\r\n');
    const at = cells(header!).indexOf('workspace_name');
    expect(lines.map((l) => cells(l)[cells(header!).indexOf('outcome')])).toEqual(FORMULAS.map(() => 'created'));
    expect(lines.map((l) => cells(l)[at])).toEqual(FORMULAS.map((n) => `'${n}`));
  });

  it('are defused in the invitation links file', async () => {
    env = await createTestEnv();
    const config = { ...env.config, invitations: difyInvitationSettings(9, `dify-${env.name}`, { expiryHours: 5 }) };
    const operator = generateKeyPairSync('rsa', { modulusLength: 2048 });
    provisioner = await createProvisioner(config);
    await provisioner.enqueue(
      FORMULAS.map((n, i) => ({ workspace_name: n, owner_email: `formula-owner-${i}@example.com` })),
      {
        batchId: 'formula-links',
        createMissingOwners: true,
        invite: true,
        sealTo: operator.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      },
    );
    await runLoggedUntilDone(env, config, ['formula-links']);
    const out = join(env.dir, 'links.csv');
    await provisioner.revealInvitations('formula-links', operator.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), out);
    const [header, ...lines] = (await readFile(out, 'utf8')).trimEnd().split('\n');
    const at = cells(header!).indexOf('workspace_name');
    expect(lines.map((l) => cells(l)[at]).sort()).toEqual(FORMULAS.map((n) => `'${n}`).sort());
  });
});
