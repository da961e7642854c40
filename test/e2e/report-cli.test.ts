// `report` with hostile rejected rows (issue 18 items 9 and 21): their raw cells carry terminal
// escape sequences and formulas behind blanks. Printed, nothing reaches the terminal raw; in a
// file (--out), the data stays exact and every formula is defused.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { useCliWorld } from '../helpers/cli-env.js';

const world = useCliWorld();

// Rejected rows keep their raw cells (they are reported as given).
const HOSTILE = [
  '\u001b]0;pwned\u0007\u001b[2J\u001b[HAll rows created', // title change, screen clear, forged line
  'x\rbatch hostile done: 0 failed\u001b[K', // carriage return overwrites the line
  'c1\u009b2J\u009d0;title\u009c\u007f', // single-character CSI/OSC/ST (C1) and DEL
];
const FORMULAS = [' =HYPERLINK("http://evil.example","x")', '\u00a0=1+1', '\n=1+1', '\r=1+1', '\u3000@SUM(1)', '\t+1'];
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

const quoted = (s: string) => `"${s.replace(/"/g, '""')}"`;
const cell = (s: string) => (/[",\n\r]/.test(s) ? quoted(s) : s);

describe('report of rejected rows with hostile cells', () => {
  it('escapes control characters on stdout, keeps the --out file exact, and prefixes formulas behind blanks', async () => {
    const lines = [
      'workspace_name,owner_email',
      ...HOSTILE.map((n, i) => `${quoted(n)},owner${i + 1}@example.com`), // rejected: control characters
      ...FORMULAS.map((n) => `${quoted(n)},not-an-email`), // rejected: the email
    ];
    const file = join(world.env.dir, 'hostile.csv');
    await writeFile(file, `${lines.join('\r\n')}\r\n`);
    const ingest = await runCli(['ingest', file, '--batch-id', 'hostile'], world.env.env);
    expect(ingest.code, ingest.stderr).toBe(0);
    expect(CONTROL.test(ingest.stderr.replace(/\n/g, ''))).toBe(false);
    const total = HOSTILE.length + FORMULAS.length;

    // CSV on stdout: one line per row, no control character but the line ends.
    const csv = await runCli(['report', 'hostile', '--format', 'csv'], world.env.env);
    expect(csv.code, csv.stderr).toBe(0);
    const printed = csv.stdout.split('\r\n');
    expect(printed.at(-1)).toBe('');
    expect(printed.slice(0, -1)).toHaveLength(total + 1);
    for (const line of printed) expect(CONTROL.test(line), JSON.stringify(line)).toBe(false);
    expect(csv.stdout).toContain('\\u001b]0;pwned\\u0007\\u001b[2J\\u001b[HAll rows created');
    expect(csv.stdout).toContain('x\\u000dbatch hostile done');
    expect(csv.stdout).toContain('c1\\u009b2J\\u009d0;title\\u009c\\u007f');
    expect(csv.stdout).toContain(`'\\u000a=1+1`);

    // JSON on stdout: no raw control character, and it parses back to the exact cells.
    const json = await runCli(['report', 'hostile', '--format', 'json'], world.env.env);
    expect(json.code, json.stderr).toBe(0);
    expect(CONTROL.test(json.stdout.replace(/\n/g, ''))).toBe(false);
    const rows = JSON.parse(json.stdout) as { workspace_name: string; outcome: string }[];
    expect(rows.map((r) => r.workspace_name)).toEqual([...HOSTILE, ...FORMULAS]);
    expect(rows.every((r) => r.outcome === 'rejected')).toBe(true);

    // The file written with --out is data: the exact cells, formulas defused with a quote.
    const out = join(world.env.dir, 'report.csv');
    expect((await runCli(['report', 'hostile', '--format', 'csv', '--out', out], world.env.env)).code).toBe(0);
    const written = await readFile(out, 'utf8');
    for (const n of HOSTILE) expect(written).toContain(`,${cell(n)},`);
    for (const n of FORMULAS) expect(written).toContain(`,${cell(`'${n}`)},`);
    expect(written).not.toMatch(/,"?[ \u00a0\n\r\u3000\t][=+@]/);
  });
});
