// README promises exercised through the CLI itself, as separate processes: stdin, dry runs that
// write nothing, cancel/retry/report/keys/create-missing-owners/unknown columns, doctor --fix
// --json, --attempts/--backoff-ms, --rate-limit, signals and the job lock.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { csvOf } from '../helpers/batch.js';
import { runCli } from '../helpers/cli.js';
import { keyFile } from '../helpers/dify-checks.js';
import { cliWorld, until } from '../helpers/cli-world.js';

const world = cliWorld();
const { file, rowsOf, done, worker } = world;

describe('ingest doors', () => {
  it('reads stdin (non-strict) into a batch named stdin-…, and --dry-run with DATABASE_URL plans without writing anything', async () => {
    const csv = csvOf([
      { workspace_name: 'Piped', owner_email: 'owner1@example.com' },
      { workspace_name: 'Bad', owner_email: 'nope' },
      { workspace_name: 'Ghost', owner_email: 'ghost@example.com' },
    ]);
    const plan = await runCli(['ingest', '-', '--dry-run'], world.env.env, csv);
    expect(plan.code).toBe(2);
    expect(plan.stdout).toContain('plan: 3 rows: would create 1, skip 0 existing, reject 1 invalid, fail 1 (owners/ids)');
    expect(plan.stderr).toContain('line 3 (owner_email): is not a valid email address');
    expect(plan.stderr).toContain(
      'line 4 (owner_email): no Dify account has the email "ghost@example.com" — create the account or fix the address (or pass --create-missing-owners to create it as Dify\'s invite does)',
    );
    const { rows: schemas } = await world.env.db.query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = 'dify_provision'`);
    expect(schemas).toEqual([]); // nothing of ours in PostgreSQL
    expect(await world.env.redis.keys(`${world.env.config.queuePrefix}*`)).toEqual([]); // nor in Redis

    const piped = await runCli(['ingest', '-'], world.env.env, csv);
    expect(piped.code).toBe(0);
    const m = /^batch (stdin-\d{8}-\d{6}-[0-9a-f]{6}): 3 rows read, 2 queued, 1 rejected$/m.exec(piped.stdout);
    expect(m, piped.stdout).not.toBeNull();
    worker('--concurrency', '2');
    await until(done(m![1]!), 'stdin batch');
    expect((await rowsOf(m![1]!)).map((r) => r.outcome)).toEqual(['created', 'rejected', 'failed']);
  });

  it('--create-missing-owners and --ignore-unknown-columns from the CLI create a pending owner and drop the extra column', async () => {
    const path = join(world.env.dir, 'extra.csv');
    await writeFile(path, 'workspace_name,owner_email,crm_notes\nNew Co,brand.new@example.com,vip\n');
    const refused = await runCli(['ingest', path], world.env.env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/unknown column\(s\) "crm_notes".*--ignore-unknown-columns/);
    worker('--concurrency', '2');
    const ok = await runCli(
      [
        'ingest',
        path,
        '--ignore-unknown-columns',
        '--create-missing-owners',
        '--batch-id',
        'new-owner',
        '--wait',
        '--report-dir',
        world.env.dir,
      ],
      world.env.env,
    );
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    const report = JSON.parse(await readFile(join(world.env.dir, 'new-owner-report.json'), 'utf8'));
    expect(report[0]).toMatchObject({ outcome: 'created', accounts_created: ['brand.new@example.com'] });
    const { rows } = await world.env.db.query(`SELECT status FROM accounts WHERE email = 'brand.new@example.com'`);
    expect(rows).toEqual([{ status: 'pending' }]);
  });
});

describe('terminal safety', () => {
  it('control characters from the input (ESC, BEL; C1 such as CSI U+009B) are printed escaped, never raw', async () => {
    const { DATABASE_URL: _d, ...noDb } = world.env.env;
    const csv =
      'workspace_name,owner_email,members\n"Evil\u001b[2J\u0007 Co",not-an-email,"x\u001b[31m@example.com:admin"\n' +
      // U+009B is CSI in one character: a terminal reading C1 controls clears its screen on \u009b2J.
      'C1 Co,owner1@example.com,"y\u009b2J\u009dt\u009c@example.com:admin"\n';
    const r = await runCli(['ingest', '-', '--dry-run'], noDb, csv);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('line 2 (workspace_name): contains control characters');
    expect(r.stderr).toContain('line 2 (members): "x\\u001b[31m@example.com" is not a valid email address');
    expect(r.stderr).toContain('line 3 (members): "y\\u009b2J\\u009dt\\u009c@example.com" is not a valid email address');
    expect(r.stderr + r.stdout).not.toMatch(/[\u001b\u0007\u007f-\u009f]/);
    const bad = await runCli(['ingest', join(world.env.dir, 'no\u001bfile.csv')], world.env.env);
    expect(bad.stderr).toContain('\\u001b');
    expect(bad.stderr).not.toContain('\u001b');
  });
});

describe('batch doors', () => {
  it('cancel, retry --cancelled, retry and report --format json --out, all from the CLI', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => ({
      workspace_name: `Door ${i}`,
      owner_email: i === 5 ? 'later@example.com' : `owner${i + 1}@example.com`,
    }));
    expect((await runCli(['ingest', await file('doors.csv', rows), '--batch-id', 'doors'], world.env.env)).code).toBe(0);
    const cancel = await runCli(['cancel', 'doors'], world.env.env);
    expect(cancel.stdout).toBe('batch doors: 6 waiting row(s) cancelled; rows being processed finish\n');
    expect((await rowsOf('doors')).every((r) => r.outcome === 'cancelled')).toBe(true);
    const resumed = await runCli(['retry', 'doors', '--cancelled'], world.env.env);
    expect(resumed.stdout).toBe('batch doors: 6 cancelled row(s) queued again\n');
    worker('--concurrency', '3');
    await until(done('doors'), 'doors');
    expect((await rowsOf('doors')).map((r) => r.outcome)).toEqual(['created', 'created', 'created', 'created', 'created', 'failed']);

    await world.env.db.query(`INSERT INTO accounts (name, email, status) VALUES ('Later', 'later@example.com', 'active')`);
    expect((await runCli(['retry', 'doors'], world.env.env)).stdout).toBe('batch doors: 1 failed row(s) queued again\n');
    await until(done('doors'), 'doors retried');
    const out = join(world.env.dir, 'doors.json');
    const report = await runCli(['report', 'doors', '--format', 'json', '--out', out], world.env.env);
    expect(report.code).toBe(0);
    expect(JSON.parse(await readFile(out, 'utf8')).map((r: { outcome: string }) => r.outcome)).toEqual(Array(6).fill('created'));
    const again = await runCli(['report', 'doors', '--format', 'json', '--out', out], world.env.env);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`dify-provision: ${out} exists already: pass --overwrite to replace it, or a new --out file\n`);
    expect((await runCli(['report', 'nope'], world.env.env)).stderr).toBe('dify-provision: no batch "nope"\n');
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
            world.env.dir,
          ],
          world.env.env,
        )
      ).code,
    ).toBe(0);
    const { rows } = await world.env.db.query<{ id: string }>(`SELECT id FROM tenants`);
    const tenant = rows[0]!.id;
    const kb = randomUUID();
    await world.env.db.query(`INSERT INTO datasets (id, tenant_id, name, created_by) VALUES ($1, $2, 'kb', $2)`, [kb, tenant]);
    const out = join(world.env.dir, 'keys.csv');
    const created = await runCli(['keys', 'create', '--tenant', tenant, '--dataset', kb, '--out', out], world.env.env);
    expect(created.code, created.stderr).toBe(0);
    const line = (await readFile(out, 'utf8')).trim().split('\n')[1]!.split(',');
    expect(line[2]).toBe(kb);
    expect(line[3]).toMatch(/^dataset-[A-Za-z0-9]{24}$/);
    const { rows: bound } = await world.env.db.query(`SELECT dataset_id FROM dataset_api_token_bindings`);
    expect(bound).toEqual([{ dataset_id: kb }]);

    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pub = join(world.env.dir, 'op.pub');
    await writeFile(pub, publicKey.export({ type: 'spki', format: 'pem' }));
    const sealed = await runCli(['keys', 'create', '--tenant', tenant, '--seal-to', pub], world.env.env);
    expect(sealed.code).toBe(0);
    const jwe = sealed.stdout.trim().split('\n')[1]!.split(',')[3]!;
    expect(jwe.split('.')).toHaveLength(5); // compact JWE, not a token
    const { compactDecrypt } = await import('jose');
    expect(new TextDecoder().decode((await compactDecrypt(jwe, privateKey)).plaintext)).toMatch(/^dataset-[A-Za-z0-9]{24}$/);
    const priv = join(world.env.dir, 'op.pem');
    await writeFile(priv, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const wrong = await runCli(['keys', 'create', '--tenant', tenant, '--seal-to', priv], world.env.env);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/was given a PRIVATE key/);
  });
});

describe('doctor from the CLI', () => {
  it('--json lists findings (an unreadable key among them); --fix removes the orphan, skips a young one, and exit codes follow', async () => {
    worker('--concurrency', '2');
    const rows = [1, 2].map((i) => ({ workspace_name: `Doc ${i}`, owner_email: `owner${i}@example.com` }));
    expect(
      (await runCli(['ingest', await file('doc.csv', rows), '--batch-id', 'doc', '--wait', '--report-dir', world.env.dir], world.env.env))
        .code,
    ).toBe(0);
    const [a] = (await world.env.db.query<{ id: string }>(`SELECT id FROM tenants ORDER BY name`)).rows.map((r) => r.id);
    await writeFile(keyFile(world.env, a!), 'not a key');
    await chmod(keyFile(world.env, a!), 0o600);
    const orphan = randomUUID();
    const { mkdir, utimes } = await import('node:fs/promises');
    await mkdir(join(world.env.config.storageDir, 'privkeys', orphan), { mode: 0o700 });
    await writeFile(join(world.env.config.storageDir, 'privkeys', orphan, 'private.pem'), 'x');
    const old = new Date(Date.now() - 20 * 60_000);
    await utimes(join(world.env.config.storageDir, 'privkeys', orphan), old, old);

    const json = await runCli(['doctor', '--json', '--min-age', '0'], world.env.env);
    expect(json.code).toBe(1);
    const report = JSON.parse(json.stdout);
    expect(report.findings.map((f: { kind: string; tenantId: string }) => `${f.kind}:${f.tenantId}`).sort()).toEqual(
      [`orphan-key:${orphan}`, `unreadable-key:${a}`].sort(),
    );
    expect(report.remaining).toBe(2);

    // Backdated by 20 minutes with utimes, but its ctime is now: still younger than an hour.
    const young = await runCli(['doctor', '--fix', '--min-age', '1h'], world.env.env);
    expect(young.stdout).not.toContain(orphan);
    const fixed = await runCli(['doctor', '--fix', '--min-age', '0s'], world.env.env);
    expect(fixed.stdout).toMatch(new RegExp(`fixed\\s+tenant ${orphan}`));
    expect(fixed.code).toBe(1); // the unreadable key is never "fixed"
    expect((await runCli(['doctor', '--min-age', 'ten minutes'], world.env.env)).stderr).toMatch(/--min-age takes a duration/);
  });
});
