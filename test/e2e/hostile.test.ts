import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startCli } from '../helpers/cli.js';
import { keyPairWorks } from '../helpers/dify-checks.js';
import { dumpRedis } from '../helpers/redis-dump.js';
import { useCliWorld } from '../helpers/cli-env.js';

const world = useCliWorld();

const SQL_NAME = "Robert'); DROP TABLE tenants;-- \\ $1 %s";
const FORMULA = '=HYPERLINK("http://evil.example","click")';

describe('a hostile CSV through the CLI and a worker process', () => {
  it('answers every bad row by line and field, stores odd-but-valid names byte for byte, and leaks no key', async () => {
    const lines = [
      'workspace_name,owner_email,members,workspace_id',
      `"${SQL_NAME.replace(/"/g, '""')}",owner1@example.com,,`,
      `"${FORMULA.replace(/"/g, '""')}",owner2@example.com,,`,
      '"مرحبا 🚀 שלום",owner3@example.com,,',
      `${'n'.repeat(255)},owner4@example.com,,`,
      `${'n'.repeat(256)},owner5@example.com,,`,
      'Traversal,owner6@example.com,,../../etc/passwd',
      'Bad mail,owner6@@example.com,,',
      'Bad role,owner7@example.com,owner8@example.com:god,',
      `Nul\u0000byte,owner9@example.com,,`,
      `${'x'.repeat(10 * 1024 * 1024)},owner10@example.com,,`,
      'Dup,owner11@example.com,,',
      'Dup,OWNER11@example.com,,',
      'Last good,owner12@example.com,,',
    ];
    const file = join(world.env.dir, `${world.env.name}-hostile.csv`);
    await writeFile(file, `\ufeff${lines.join('\r\n')}\r\n`);
    world.worker = startCli(['worker', '--concurrency', '4'], world.env.env);
    const r = await runCli(['ingest', file, '--batch-id', 'hostile', '--wait', '--report-dir', world.env.dir], world.env.env);
    expect(r.code).toBe(3); // some rows were rejected
    expect(r.stderr.trim().split('\n')).toEqual([
      'line 6 (workspace_name): is longer than 255 characters',
      'line 7 (workspace_id): is not a strict UUID (xxxxxxxx-xxxx-Mxxx-Nxxx-xxxxxxxxxxxx)',
      'line 8 (owner_email): is not a valid email address',
      'line 9 (members): "god" is not a role: use one of admin, editor, normal, dataset_operator',
      'line 10 (workspace_name): contains control characters',
      'line 11 (row): the row is too large (over 64 KiB); it was skipped',
      'line 13 (workspace_name): duplicate: line 12 has this owner and workspace name already',
    ]);
    expect(r.stdout).toMatch(/created\s+6/);

    const { rows } = await world.env.db.query<{ name: string; id: string }>(`SELECT name, id FROM tenants ORDER BY name`);
    expect(rows.map((t) => t.name).sort()).toEqual([SQL_NAME, FORMULA, 'مرحبا 🚀 שלום', 'n'.repeat(255), 'Dup', 'Last good'].sort());
    expect((await world.env.db.query(`SELECT count(*)::int AS n FROM tenants`)).rows[0].n).toBe(6); // DROP TABLE did nothing
    for (const t of rows) expect(await keyPairWorks(world.env, t.id)).toBe(true);

    const csv = await readFile(join(world.env.dir, 'hostile-report.csv'), 'utf8');
    expect(csv).toContain(`,"'=HYPERLINK(""http://evil.example"",""click"")",`);

    // No private key material anywhere but the key files.
    await world.worker!.stop('SIGTERM');
    const logs = world.worker!.output();
    const redis = await dumpRedis(world.env.redis);
    const json = await readFile(join(world.env.dir, 'hostile-report.json'), 'utf8');
    for (const id of await readdir(join(world.env.config.storageDir, 'privkeys'))) {
      const pem = await readFile(join(world.env.config.storageDir, 'privkeys', id, 'private.pem'), 'utf8');
      const body = pem.split('\n')[3]!; // a line of the key's base64 body
      for (const [where, text] of [
        ['logs', logs],
        ['redis', redis],
        ['csv report', csv],
        ['json report', json],
        ['cli output', r.stdout + r.stderr],
      ] as const) {
        expect(text.includes(body), `key material in ${where}`).toBe(false);
        expect(text.includes('PRIVATE KEY'), `PEM header in ${where}`).toBe(false);
      }
    }
  });
});
