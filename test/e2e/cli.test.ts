import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { keyPairWorks, modes } from '../helpers/dify-checks.js';
import { csvOf } from '../helpers/batch.js';
import { runCli, startCli, type Background } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

let env: TestEnv;
const workers: Background[] = [];
beforeEach(async () => {
  env = await createTestEnv({ accounts: 30 });
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop('SIGKILL')));
  await env.cleanup();
});

async function waitDone(batch: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 600; i++) {
    const r = await runCli(['status', batch, '--json'], env.env);
    const status = JSON.parse(r.stdout);
    if (status.done) return status;
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error('batch did not finish');
}

describe('the CLI, with ingest and two workers as separate processes', () => {
  it('provisions every valid row, rejects the invalid ones, and shuts the workers down gracefully', async () => {
    const rows = Array.from({ length: 24 }, (_, i) => ({
      workspace_name: `Tenant ${i}`,
      owner_email: `owner${i + 1}@example.com`,
      members: i % 4 === 0 ? `owner${i + 2}@example.com:editor` : '',
    }));
    rows.push({ workspace_name: 'Broken', owner_email: 'not-an-email', members: '' });
    const file = join(env.dir, `${env.name}.csv`);
    await writeFile(file, csvOf(rows));

    workers.push(startCli(['worker', '--concurrency', '3'], env.env), startCli(['worker', '--concurrency', '3'], env.env));
    const ingest = await runCli(['ingest', file], env.env);
    expect(ingest.stderr).toContain('line 26 (owner_email): is not a valid email address');
    const m = /^batch (\S+): 25 rows read, 24 queued, 1 rejected$/m.exec(ingest.stdout);
    expect(m, ingest.stdout + ingest.stderr).not.toBeNull();
    const batch = m![1]!;

    const status = await waitDone(batch);
    expect(status).toMatchObject({ done: true, total: 25, counts: { created: 24, rejected: 1, failed: 0 } });
    const human = await runCli(['status', batch], env.env);
    expect(human.stdout).toContain(`batch ${batch} (done with failures): 25/25 rows finished (100%)`);

    const { rows: tenants } = await env.db.query<{ id: string }>(`SELECT id FROM tenants`);
    expect(tenants).toHaveLength(24);
    for (const t of tenants) {
      expect(await keyPairWorks(env, t.id)).toBe(true);
      expect(await modes(env, t.id)).toEqual({ dir: '700', file: '600' });
    }

    // Ingesting the same file again is the same batch and queues nothing.
    const again = await runCli(['ingest', file, '--json'], env.env);
    expect(JSON.parse(again.stdout)).toMatchObject({ batchId: batch, queued: 0, alreadyInBatch: 24, rejected: 1 });

    const codes = await Promise.all(workers.splice(0).map((w) => w.stop('SIGTERM').then((code) => ({ code, out: w.output() }))));
    for (const { code, out } of codes) {
      expect(code).toBe(0);
      expect(out).not.toContain('PRIVATE KEY');
    }
    // Both workers took jobs, and every outcome is one structured log line.
    const lines = codes.flatMap(({ out }) =>
      out
        .split('\n')
        .filter((l) => l.includes('"workspace created"'))
        .map((l) => JSON.parse(l)),
    );
    expect(lines).toHaveLength(24);
    expect(codes.every(({ out }) => out.includes('"workspace created"'))).toBe(true);
    expect(lines[0]).toMatchObject({ batchId: batch, attempt: 1, outcome: 'created' });
    expect(lines[0]).toHaveProperty('line');
    expect(lines[0]).toHaveProperty('tenantId');
    expect(lines[0]).toHaveProperty('ms');
  });

  it('--dry-run validates without Redis or PostgreSQL when no DATABASE_URL is set', async () => {
    const file = join(env.dir, `${env.name}-dry.csv`);
    await writeFile(file, 'workspace_name,owner_email\nA,a@b.io\nB,nope\n');
    const offline: NodeJS.ProcessEnv = { ...env.env, REDIS_URL: 'redis://127.0.0.1:1' };
    delete offline.DATABASE_URL;
    const r = await runCli(['ingest', file, '--dry-run'], offline);
    expect(r.stdout).toBe(
      'dry run: 2 rows read, would queue 1, reject 1 (set DATABASE_URL to also check owners, existing rows and workspace ids)\n' +
        'read as CSV, utf-8, ","-separated\n',
    );
    expect(r.stderr).toBe('line 3 (owner_email): is not a valid email address\n');
    expect(r.code).toBe(2);
  });

  it('--dry-run refuses what the ingest refuses before recording anything: secrets with no key to seal them to', async () => {
    const file = join(env.dir, `${env.name}-seal.csv`);
    await writeFile(file, 'workspace_name,owner_email\nA,a@b.io\n');
    const offline: NodeJS.ProcessEnv = { ...env.env, REDIS_URL: 'redis://127.0.0.1:1' };
    delete offline.DATABASE_URL;
    // (--invite without --seal-to: plan-invitations, through the same sealKeyOf.)
    const r = await runCli(['ingest', file, '--dry-run', '--mint-dataset-keys'], offline);
    expect(r.stderr).toContain('minting API keys needs --seal-to operator-public.pem');
    expect(r.stdout).toBe('');
    expect(r.code).toBe(1);
  });

  it('refuses a file with a bad header clearly, without a stack trace', async () => {
    const r = await runCli(['ingest', '-'], env.env, 'name,owner\nA,a@b.io\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^dify-provision: line 1: unknown column\(s\) "name", "owner"/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
