// One end-to-end CLI batch per Dify release band: a worker process names the band it found, the
// dry-run plan, status and doctor name it too, and the batch ends with every valid row created.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { csvOf } from '../helpers/batch.js';
import { runCli, startCli, type Background } from '../helpers/cli.js';
import { BANDS, expectCreatedAccount, expectDifyWorkspace, KNOWN_SLOTS, type BandName } from '../helpers/dify-checks.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const NAMES: Record<BandName, RegExp> = {
  '1.6': /Dify schema: 0\.15\.0 – 1\.6\.0/,
  '1.9': /Dify schema: 1\.7\.0 – 1\.10\.0/,
  '1.11': /Dify schema: 1\.10\.1 – 1\.11\.2/,
  '1.13': /Dify schema: 1\.11\.3 – 1\.14\.2/,
  '1.16': /Dify schema: 1\.15\.0 and later/,
  latest: /Dify schema: 1\.15\.0 and later/,
};
const [ID, ID2] = Object.keys(KNOWN_SLOTS) as [string, string];

describe.each(Object.keys(BANDS) as BandName[])('a CLI batch on Dify schema %s', (name) => {
  let env: TestEnv;
  let worker: Background | undefined;
  beforeEach(async () => {
    env = await createTestEnv({ schema: name });
  });
  afterEach(async () => {
    await worker?.stop('SIGKILL');
    await env.cleanup();
  });

  it('plans, provisions, reports and checks with the band named everywhere', async () => {
    const csv = join(env.dir, 'band.csv');
    await writeFile(
      csv,
      csvOf([
        { workspace_name: 'Band One', owner_email: 'owner1@example.com', members: 'owner2@example.com:editor', workspace_id: ID },
        { workspace_name: 'Band Two', owner_email: 'owner3@example.com', members: 'new.member@example.com:normal', workspace_id: ID2 },
        { workspace_name: 'Bad', owner_email: 'not-an-email', members: '', workspace_id: '' },
      ]),
    );
    const plan = await runCli(['ingest', csv, '--dry-run', '--create-missing-owners'], env.env);
    expect(plan.stdout).toMatch(NAMES[name]);
    expect(plan.stdout).toContain('would create 2, skip 0 existing, reject 1 invalid, fail 0');

    worker = startCli(['worker', '--concurrency', '2'], env.env);
    const ingest = await runCli(
      ['ingest', csv, '--batch-id', 'band', '--create-missing-owners', '--wait', '--report-dir', env.dir],
      env.env,
    );
    expect(ingest.code, ingest.stdout + ingest.stderr).toBe(3); // the invalid row
    expect(ingest.stdout).toMatch(/created\s+2/);
    expect(worker.output()).toMatch(NAMES[name]);
    await expectDifyWorkspace(env, name, ID, {
      name: 'Band One',
      owner: 'owner1@example.com',
      members: [{ email: 'owner2@example.com', role: 'editor' }],
    });
    // The member the batch created is what Dify's invite registers and switches into the workspace.
    await expectDifyWorkspace(env, name, ID2, {
      name: 'Band Two',
      owner: 'owner3@example.com',
      members: [{ email: 'new.member@example.com', role: 'normal', invited: true }],
    });
    await expectCreatedAccount(env, name, 'new.member@example.com');

    const status = await runCli(['status', 'band'], env.env);
    expect(status.stdout).toMatch(NAMES[name]);
    const doctor = await runCli(['doctor', '--min-age', '0s'], env.env);
    expect(doctor.code, doctor.stdout).toBe(0);
    expect(doctor.stdout).toMatch(NAMES[name]);
    // Running the same file again creates nothing.
    const again = await runCli(['ingest', csv, '--batch-id', 'band-2', '--wait', '--report-dir', env.dir], env.env);
    expect(again.stdout).toMatch(/existing\s+2/);
    const { rows } = await env.db.query(`SELECT count(*)::int AS n FROM tenants`);
    expect(rows).toEqual([{ n: 2 }]);
  });
});
