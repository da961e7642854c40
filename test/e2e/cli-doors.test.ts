// README promises exercised through the CLI itself, as separate processes: stdin, dry runs that
// write nothing, cancel/retry/report/keys/create-missing-owners/unknown columns, doctor --fix
// --json, --attempts/--backoff-ms, --rate-limit, signals and the job lock.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { projectFile } from '../../src/project-files.js';
import { csvOf } from '../helpers/batch.js';
import { runCli, startCli, type Background } from '../helpers/cli.js';
import { keyFile } from '../helpers/dify-checks.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { spawn } from 'node:child_process';

let env: TestEnv;
const procs: Background[] = [];
beforeEach(async () => {
  env = await createTestEnv({ accounts: 40 });
});
afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.stop('SIGKILL')));
  await env.cleanup();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const file = async (name: string, rows: Record<string, string>[]) => {
  const path = join(env.dir, name);
  await writeFile(path, csvOf(rows));
  return path;
};
const rowsOf = async (batch: string) =>
  (
    await env.db.query(
      `SELECT line, outcome, attempts, error, finished_at, updated_at FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`,
      [batch],
    )
  ).rows;
async function until(check: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(100);
  }
}
const done = (batch: string) => async () =>
  (JSON.parse((await runCli(['status', batch, '--json'], env.env)).stdout) as { done: boolean }).done;
const worker = (...args: string[]) => {
  const w = startCli(['worker', ...args], env.env);
  procs.push(w);
  return w;
};

describe('ingest doors', () => {
  it('reads stdin (non-strict) into a batch named stdin-…, and --dry-run with DATABASE_URL plans without writing anything', async () => {
    const csv = csvOf([
      { workspace_name: 'Piped', owner_email: 'owner1@example.com' },
      { workspace_name: 'Bad', owner_email: 'nope' },
      { workspace_name: 'Ghost', owner_email: 'ghost@example.com' },
    ]);
    const plan = await runCli(['ingest', '-', '--dry-run'], env.env, csv);
    expect(plan.code).toBe(2);
    expect(plan.stdout).toContain('plan: 3 rows: would create 1, skip 0 existing, reject 1 invalid, fail 1 (owners/ids)');
    expect(plan.stderr).toContain('line 3 (owner_email): is not a valid email address');
    expect(plan.stderr).toContain('line 4 (owner_email): no Dify account has the email "ghost@example.com"');
    const { rows: schemas } = await env.db.query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = 'dify_provision'`);
    expect(schemas).toEqual([]); // nothing of ours in PostgreSQL
    expect(await env.redis.keys(`${env.config.queuePrefix}*`)).toEqual([]); // nor in Redis

    const piped = await runCli(['ingest', '-'], env.env, csv);
    expect(piped.code).toBe(0);
    const m = /^batch (stdin-\d{8}-\d{6}-[0-9a-f]{6}): 3 rows read, 2 queued, 1 rejected$/m.exec(piped.stdout);
    expect(m, piped.stdout).not.toBeNull();
    worker('--concurrency', '2');
    await until(done(m![1]!), 'stdin batch');
    expect((await rowsOf(m![1]!)).map((r) => r.outcome)).toEqual(['created', 'rejected', 'failed']);
  });

  it('--create-missing-owners and --ignore-unknown-columns from the CLI create a pending owner and drop the extra column', async () => {
    const path = join(env.dir, 'extra.csv');
    await writeFile(path, 'workspace_name,owner_email,crm_notes\nNew Co,brand.new@example.com,vip\n');
    const refused = await runCli(['ingest', path], env.env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/unknown column\(s\) "crm_notes".*--ignore-unknown-columns/);
    worker('--concurrency', '2');
    const ok = await runCli(
      ['ingest', path, '--ignore-unknown-columns', '--create-missing-owners', '--batch-id', 'new-owner', '--wait', '--report-dir', env.dir],
      env.env,
    );
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    const report = JSON.parse(await readFile(join(env.dir, 'new-owner-report.json'), 'utf8'));
    expect(report[0]).toMatchObject({ outcome: 'created', accountsCreated: ['brand.new@example.com'] });
    const { rows } = await env.db.query(`SELECT status FROM accounts WHERE email = 'brand.new@example.com'`);
    expect(rows).toEqual([{ status: 'pending' }]);
  });
});

describe('ingest memory', () => {
  it('ingests 1,000 rows of 500 members each within the CLI heap (chunks are bounded in bytes)', async () => {
    const members = (i: number) => Array.from({ length: 500 }, (_, j) => `member${j}.row${i}@example.com:normal`).join(';');
    const path = join(env.dir, 'big.csv');
    const { createWriteStream } = await import('node:fs');
    const out = createWriteStream(path);
    out.write('workspace_name,owner_email,members\n');
    for (let i = 0; i < 1000; i++) out.write(`Big ${i},owner${(i % 40) + 1}@example.com,${members(i)}\n`);
    await new Promise((r) => out.end(r));
    const ingest = await runCli(['ingest', path, '--batch-id', 'big'], env.env);
    expect(ingest.code, ingest.stderr).toBe(0);
    expect(ingest.stdout).toContain('batch big: 1000 rows read, 1000 queued, 0 rejected');
  });
});

describe('batch doors', () => {
  it('cancel, retry --cancelled, retry and report --format json --out, all from the CLI', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => ({
      workspace_name: `Door ${i}`,
      owner_email: i === 5 ? 'later@example.com' : `owner${i + 1}@example.com`,
    }));
    expect((await runCli(['ingest', await file('doors.csv', rows), '--batch-id', 'doors'], env.env)).code).toBe(0);
    const cancel = await runCli(['cancel', 'doors'], env.env);
    expect(cancel.stdout).toBe('batch doors: 6 waiting row(s) cancelled; rows being processed finish\n');
    expect((await rowsOf('doors')).every((r) => r.outcome === 'cancelled')).toBe(true);
    const resumed = await runCli(['retry', 'doors', '--cancelled'], env.env);
    expect(resumed.stdout).toBe('batch doors: 6 cancelled row(s) queued again\n');
    worker('--concurrency', '3');
    await until(done('doors'), 'doors');
    expect((await rowsOf('doors')).map((r) => r.outcome)).toEqual(['created', 'created', 'created', 'created', 'created', 'failed']);

    await env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Later', 'later@example.com', 'active')`);
    expect((await runCli(['retry', 'doors'], env.env)).stdout).toBe('batch doors: 1 failed row(s) queued again\n');
    await until(done('doors'), 'doors retried');
    const out = join(env.dir, 'doors.json');
    const report = await runCli(['report', 'doors', '--format', 'json', '--out', out], env.env);
    expect(report.code).toBe(0);
    expect(JSON.parse(await readFile(out, 'utf8')).map((r: { outcome: string }) => r.outcome)).toEqual(Array(6).fill('created'));
    const again = await runCli(['report', 'doors', '--format', 'json', '--out', out], env.env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/exists already/);
    expect((await runCli(['report', 'nope'], env.env)).stderr).toBe('dify-provision: no batch "nope"\n');
  });

  it('keys create --tenant --dataset (bindings) and --seal-to from the CLI', async () => {
    worker('--concurrency', '2');
    expect(
      (
        await runCli(
          [
            'ingest',
            await file('k.csv', [{ workspace_name: 'Keys', owner_email: 'owner1@example.com' }]),
            '--batch-id',
            'k',
            '--wait',
            '--report-dir',
            env.dir,
          ],
          env.env,
        )
      ).code,
    ).toBe(0);
    const { rows } = await env.db.query<{ id: string }>(`SELECT id FROM tenants`);
    const tenant = rows[0]!.id;
    const kb = randomUUID();
    await env.db.query(`INSERT INTO datasets (id, tenant_id, name, created_by) VALUES ($1, $2, 'kb', $2)`, [kb, tenant]);
    const out = join(env.dir, 'keys.csv');
    const created = await runCli(['keys', 'create', '--tenant', tenant, '--dataset', kb, '--out', out], env.env);
    expect(created.code, created.stderr).toBe(0);
    const line = (await readFile(out, 'utf8')).trim().split('\n')[1]!.split(',');
    expect(line[2]).toBe(kb);
    expect(line[3]).toMatch(/^dataset-[A-Za-z0-9]{24}$/);
    const { rows: bound } = await env.db.query(`SELECT dataset_id FROM dataset_api_token_bindings`);
    expect(bound).toEqual([{ dataset_id: kb }]);

    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pub = join(env.dir, 'op.pub');
    await writeFile(pub, publicKey.export({ type: 'spki', format: 'pem' }));
    const sealed = await runCli(['keys', 'create', '--tenant', tenant, '--seal-to', pub], env.env);
    expect(sealed.code).toBe(0);
    const jwe = sealed.stdout.trim().split('\n')[1]!.split(',')[3]!;
    expect(jwe.split('.')).toHaveLength(5); // compact JWE, not a token
    const { compactDecrypt } = await import('jose');
    expect(new TextDecoder().decode((await compactDecrypt(jwe, privateKey)).plaintext)).toMatch(/^dataset-[A-Za-z0-9]{24}$/);
    const priv = join(env.dir, 'op.pem');
    await writeFile(priv, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const wrong = await runCli(['keys', 'create', '--tenant', tenant, '--seal-to', priv], env.env);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/was given a PRIVATE key/);
  });
});

describe('doctor from the CLI', () => {
  it('--json lists findings (an unreadable key among them); --fix removes the orphan, skips a young one, and exit codes follow', async () => {
    worker('--concurrency', '2');
    const rows = [1, 2].map((i) => ({ workspace_name: `Doc ${i}`, owner_email: `owner${i}@example.com` }));
    expect(
      (await runCli(['ingest', await file('doc.csv', rows), '--batch-id', 'doc', '--wait', '--report-dir', env.dir], env.env)).code,
    ).toBe(0);
    const [a] = (await env.db.query<{ id: string }>(`SELECT id FROM tenants ORDER BY name`)).rows.map((r) => r.id);
    await writeFile(keyFile(env, a!), 'not a key');
    await chmod(keyFile(env, a!), 0o600);
    const orphan = randomUUID();
    const { mkdir, utimes } = await import('node:fs/promises');
    await mkdir(join(env.config.storageDir, 'privkeys', orphan), { mode: 0o700 });
    await writeFile(join(env.config.storageDir, 'privkeys', orphan, 'private.pem'), 'x');
    const old = new Date(Date.now() - 20 * 60_000);
    await utimes(join(env.config.storageDir, 'privkeys', orphan), old, old);

    const json = await runCli(['doctor', '--json'], env.env);
    expect(json.code).toBe(1);
    const report = JSON.parse(json.stdout);
    expect(report.findings.map((f: { kind: string; tenantId: string }) => `${f.kind}:${f.tenantId}`).sort()).toEqual(
      [`orphan-key:${orphan}`, `unreadable-key:${a}`].sort(),
    );
    expect(report.remaining).toBe(2);

    const young = await runCli(['doctor', '--fix', '--min-age', '1h'], env.env);
    expect(young.stdout).not.toContain(orphan);
    const fixed = await runCli(['doctor', '--fix', '--min-age', '10m'], env.env);
    expect(fixed.stdout).toMatch(new RegExp(`fixed\\s+tenant ${orphan}`));
    expect(fixed.code).toBe(1); // the unreadable key is never "fixed"
    expect((await runCli(['doctor', '--min-age', 'ten minutes'], env.env)).stderr).toMatch(/--min-age takes a duration/);
  });
});

describe('worker doors', () => {
  it('--attempts and --backoff-ms given at ingest: a row that keeps failing is tried that often, spaced by the backoff', async () => {
    // A real worker process whose key writes fail (EIO) for the whole test (test/chaos/faulty-worker.ts).
    const faulty = spawn(process.execPath, ['--import', 'tsx', projectFile('test', 'chaos', 'faulty-worker.ts'), '1'], {
      env: { ...env.env, FAULT_UNTIL: String(Date.now() + 120_000) },
      stdio: 'ignore',
      cwd: projectFile(),
    });
    try {
      const path = await file('retry.csv', [{ workspace_name: 'Flaky', owner_email: 'owner1@example.com' }]);
      expect((await runCli(['ingest', path, '--batch-id', 'flaky', '--attempts', '3', '--backoff-ms', '400'], env.env)).code).toBe(0);
      await until(done('flaky'), 'flaky batch');
    } finally {
      faulty.kill('SIGKILL');
    }
    const [row] = await rowsOf('flaky');
    expect(row).toMatchObject({ outcome: 'failed', attempts: 3, error: expect.stringMatching(/EIO/) });
    const { rows: timing } = await env.db.query(
      `SELECT extract(epoch FROM finished_at - created_at) AS s FROM dify_provision.rows r JOIN dify_provision.batches b ON b.id = r.batch_id WHERE r.batch_id = 'flaky'`,
    );
    expect(Number(timing[0].s)).toBeGreaterThanOrEqual(1.2); // 400 ms + 800 ms of backoff at least
  });

  it('--rate-limit 4/s: no second sees more than 4 rows finish', async () => {
    const rows = Array.from({ length: 16 }, (_, i) => ({ workspace_name: `Rate ${i}`, owner_email: `owner${i + 1}@example.com` }));
    expect((await runCli(['ingest', await file('rate.csv', rows), '--batch-id', 'rate'], env.env)).code).toBe(0);
    worker('--concurrency', '8', '--rate-limit', '4/s');
    await until(done('rate'), 'rate batch');
    const times = (await rowsOf('rate')).map((r) => (r.finished_at as Date).getTime()).sort((x, y) => x - y);
    const perWindow = Math.max(...times.map((t) => times.filter((u) => u >= t && u < t + 1000).length));
    expect(perWindow).toBeLessThanOrEqual(4 + 1); // BullMQ's window and our clock are not aligned: one of slack
    expect(times[times.length - 1]! - times[0]!).toBeGreaterThanOrEqual(2500);
    expect((await runCli(['worker', '--rate-limit', 'fast'], env.env)).stderr).toMatch(/--rate-limit takes N\/s/);
  });

  it('SIGTERM lets in-flight jobs finish; a second signal hands them back and another worker completes them, nothing twice', async () => {
    const rows = Array.from({ length: 30 }, (_, i) => ({ workspace_name: `Sig ${i}`, owner_email: `owner${i + 1}@example.com` }));
    expect((await runCli(['ingest', await file('sig.csv', rows), '--batch-id', 'sig'], env.env)).code).toBe(0);
    const active = async () =>
      Number((await env.db.query(`SELECT count(*) AS n FROM dify_provision.rows WHERE batch_id = 'sig' AND outcome = 'active'`)).rows[0].n);

    const first = worker('--concurrency', '4');
    await until(async () => (await active()) > 0, 'a job in flight');
    const exit = await first.stop('SIGTERM');
    expect(exit).toBe(0);
    expect(await active()).toBe(0); // what was in flight finished and was recorded
    expect(first.output()).toContain('stopping: finishing in-flight jobs');

    const second = worker('--concurrency', '4');
    await until(async () => (await active()) > 0, 'a job in flight again');
    second.child.kill('SIGTERM');
    second.child.kill('SIGTERM');
    expect(await second.stop()).toBe(0);
    expect(second.output()).toContain('stopping now: handing in-flight jobs back');

    worker('--concurrency', '4', '--lock-duration-ms', '2000');
    await until(done('sig'), 'sig batch');
    const { rows: n } = await env.db.query(`SELECT count(*)::int AS n FROM tenants`);
    expect(n).toEqual([{ n: 30 }]);
    expect((await rowsOf('sig')).every((r) => r.outcome === 'created')).toBe(true);
  });

  it("a SIGKILLed worker's job is picked up by another after about --lock-duration-ms", async () => {
    const rows = Array.from({ length: 12 }, (_, i) => ({ workspace_name: `Kill ${i}`, owner_email: `owner${i + 1}@example.com` }));
    expect((await runCli(['ingest', await file('kill.csv', rows), '--batch-id', 'kill'], env.env)).code).toBe(0);
    const active = async () =>
      Number(
        (await env.db.query(`SELECT count(*) AS n FROM dify_provision.rows WHERE batch_id = 'kill' AND outcome = 'active'`)).rows[0].n,
      );
    const doomed = worker('--concurrency', '4', '--lock-duration-ms', '2000');
    await until(async () => (await active()) > 0, 'a job in flight');
    await doomed.stop('SIGKILL');
    const killedAt = Date.now();
    const stuck = (await env.db.query(`SELECT line FROM dify_provision.rows WHERE batch_id = 'kill' AND outcome = 'active'`)).rows.map(
      (r) => r.line,
    );
    expect(stuck.length).toBeGreaterThan(0);
    worker('--concurrency', '4', '--lock-duration-ms', '2000');
    await until(done('kill'), 'kill batch');
    const lastStuck = Math.max(
      ...(await rowsOf('kill')).filter((r) => stuck.includes(r.line)).map((r) => (r.finished_at as Date).getTime()),
    );
    expect(lastStuck - killedAt).toBeGreaterThanOrEqual(1000); // not before its lock could expire
    const { rows: n } = await env.db.query(`SELECT count(*)::int AS n FROM tenants`);
    expect(n).toEqual([{ n: 12 }]);
  });
});
