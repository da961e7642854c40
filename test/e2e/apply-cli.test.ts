// `dify-provision apply` as a user runs it, in separate processes: the sample changes file on the
// sample workspaces (dry run, apply --wait, the report, a second apply answering unchanged), a
// refused row's exit code, and a worker SIGKILLed in the middle of a change batch.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectFile } from '../../src/common/project-files.js';
import { runCli } from '../helpers/cli.js';
import { cliWorld, until } from '../helpers/cli-world.js';
import { difyRedisLines } from '../helpers/dify-invitations.js';

const world = cliWorld();
const DIFY_DB = 11;

/** Dify's .env for the worker and apply: its Redis (removals delete invitation tokens there). */
async function difyEnv(): Promise<string> {
  const path = join(world.env.dir, 'dify.env');
  await writeFile(path, [...difyRedisLines(DIFY_DB, `apply-${world.env.name}`), 'CONSOLE_WEB_URL=https://dify.example.com', ''].join('\n'));
  return path;
}

async function joins(externalId: string): Promise<Record<string, string>> {
  const { rows } = await world.env.db.query<{ email: string; role: string }>(
    `SELECT a.email, j.role FROM dify_provision.ledger l JOIN tenant_account_joins j ON j.tenant_id = l.tenant_id
       JOIN accounts a ON a.id = j.account_id WHERE l.idempotency_key = $1 ORDER BY a.email`,
    [`external:${externalId}`],
  );
  return Object.fromEntries(rows.map((r) => [r.email, r.role]));
}

describe('apply from the CLI', () => {
  it('plans, applies and reports samples/changes.csv on the sample workspaces; applying it again changes nothing', async () => {
    const env = world.env;
    await env.db.query(await readFile(projectFile('samples', 'accounts.sql'), 'utf8'));
    const dotenv = await difyEnv();
    const worker = world.worker('--dify-env', dotenv);
    const ingest = await runCli(['ingest', projectFile('samples', 'workspaces.csv'), '--batch-id', 'day-one'], env.env);
    expect(ingest.code, ingest.stderr).toBe(0);
    await until(world.done('day-one'), 'the sample workspaces');

    const sample = projectFile('samples', 'changes.csv');
    const plan = await runCli(['apply', sample, '--dry-run', '--create-missing-owners'], env.env);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toContain('plan: 8 changes: would add 2, remove 2, re-role 1, transfer 1, rename 1, archive 1\n');
    // Without --create-missing-owners the new hire would be refused: exit 2, naming the line and field.
    const refused = await runCli(['apply', sample, '--dry-run'], env.env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('line 4 (email): no Dify account has the email "new.hire@globex.example"');
    expect(refused.stdout).toContain('would add 1, remove 2, re-role 1, transfer 1, rename 1, archive 1; 1 refused');
    // --rows: each row with its verdict, and why for the refused one (stdout; --json: rows).
    const listed = await runCli(['apply', sample, '--dry-run', '--rows'], env.env);
    expect(listed.code).toBe(2);
    const lines = listed.stdout.split('\n').filter((l) => l.startsWith('line '));
    expect(lines).toHaveLength(8);
    expect(lines[0]).toMatch(/^line 2: add_member chen@globex\.example in workspace crm-1001 \([0-9a-f-]{36}\): would add$/);
    expect(lines[2]).toMatch(
      /^line 4: add_member new\.hire@globex\.example in workspace crm-1003 \([0-9a-f-]{36}\): refused — email: no Dify account has the email "new\.hire@globex\.example"/,
    );
    expect(lines[3]).toMatch(/^line 5: transfer_owner bob@acme\.example in workspace crm-1003 \(\S+\): would transfer$/);
    expect(lines[4]).toMatch(/^line 6: remove_member ana@acme\.example from workspace crm-1003 \(\S+\): would remove$/);
    expect(lines[7]).toBe('line 9: archive workspace 6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20: would archive');
    const listedJson = JSON.parse((await runCli(['apply', sample, '--dry-run', '--rows', '2', '--json'], env.env)).stdout);
    expect(listedJson.rows.map((r: { line: number; verdict: string }) => `${r.line} ${r.verdict}`)).toEqual(['2 add', '3 re-role']);
    expect(listedJson.rows[0]).toMatchObject({
      action: 'add_member',
      externalId: 'crm-1001',
      email: 'chen@globex.example',
    });
    expect((await env.db.query(`SELECT count(*)::int AS n FROM dify_provision.batches`)).rows[0].n).toBe(1);

    const dir = join(env.dir, 'reports');
    const applied = await runCli(
      ['--dify-env', dotenv, 'apply', sample, '--create-missing-owners', '--wait', '--report-dir', dir, '--batch-id', 'day-two'],
      env.env,
    );
    expect(applied.code, applied.stderr + applied.stdout).toBe(0);
    expect(applied.stdout).toContain('batch day-two: 8 changes read, 8 queued, 0 rejected');
    const report = (await readFile(join(dir, 'day-two-report.csv'), 'utf8')).trim().split('\r\n');
    expect(report[0]).toBe(
      'line,action,workspace_id,external_id,email,role,name,outcome,detail,accounts_created,attempts,duration_ms,mail',
    );
    expect(report.slice(1).map((l) => l.split(',').slice(0, 2).join(' ') + ' ' + l.split(',')[7])).toEqual([
      '2 add_member applied',
      '3 set_role applied',
      '4 add_member applied',
      '5 transfer_owner applied',
      '6 remove_member applied',
      '7 rename applied',
      '8 remove_member applied',
      '9 archive applied',
    ]);
    expect(await joins('crm-1001')).toEqual({ 'ana@acme.example': 'owner', 'bob@acme.example': 'editor', 'chen@globex.example': 'editor' });
    expect(await joins('crm-1003')).toEqual({
      'bob@acme.example': 'owner',
      'chen@globex.example': 'admin',
      'new.hire@globex.example': 'normal',
    });
    expect(await joins('crm-1006')).toEqual({ 'farah@hooli.example': 'owner' });
    const { rows: ws } = await env.db.query(
      `SELECT name, status FROM tenants WHERE id IN ('6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20',
         (SELECT tenant_id FROM dify_provision.ledger WHERE idempotency_key = 'external:crm-1002')) ORDER BY name`,
    );
    expect(ws).toEqual([
      { name: 'Acme Research & Development', status: 'normal' },
      { name: 'Initech', status: 'archive' },
    ]);

    // status and batches show the change batch beside the ingest batch.
    const status = await runCli(['status', 'day-two'], env.env);
    expect(status.stdout).toMatch(
      /batch day-two \(.*done.*\): 8\/8 rows finished \(100%\): queued 0, active 0, applied 8, unchanged 0, rejected 0, failed 0/,
    );
    // batches: each kind with its own counts (not created/existing columns for a change batch).
    const listed2 = (await runCli(['batches'], env.env)).stdout.split('\n');
    expect(listed2[1]).toMatch(/^batch +state +kind +total +created at +counts$/);
    expect(listed2.find((l) => l.startsWith('day-two '))).toMatch(/ changes +8 +\S+Z +applied 8, unchanged 0, failed 0, rejected 0$/);
    expect(listed2.find((l) => l.startsWith('day-one '))).toMatch(/ ingest +\d+ +\S+Z +created \d+, existing 0, failed \d+, rejected \d+$/);

    // Again, as a new batch: every row unchanged.
    const again = await runCli(
      ['--dify-env', dotenv, 'apply', sample, '--create-missing-owners', '--wait', '--report-dir', dir, '--json'],
      env.env,
    );
    expect(again.code, again.stderr).toBe(0);
    const summary = JSON.parse(again.stdout) as { kind: string; counts: Record<string, number>; report: { csv: string } };
    expect(summary.kind).toBe('changes');
    expect(summary.counts).toMatchObject({ unchanged: 8, applied: 0, failed: 0 });
    await worker.stop();
  });

  it('apply --sync, --strict and --json from the CLI; a membership file over --max-rows is refused', async () => {
    const env = world.env;
    const dotenv = await difyEnv();
    world.worker('--dify-env', dotenv);
    const ws = await world.file('ws.csv', [
      {
        workspace_name: 'Sync A',
        owner_email: 'owner1@example.com',
        members: 'owner2@example.com:admin;owner3@example.com:normal',
        external_id: 's-a',
      },
      { workspace_name: 'Sync B', owner_email: 'owner4@example.com', members: 'owner5@example.com:normal', external_id: 's-b' },
    ]);
    expect((await runCli(['ingest', ws, '--batch-id', 'ws'], env.env)).code).toBe(0);
    await until(world.done('ws'), 'the workspaces');
    const members = await world.file('members.csv', [
      // s-a: owner2 re-roled, owner6 added, owner3 (not listed) removed; the owner stays.
      { external_id: 's-a', email: 'owner1@example.com', role: 'owner' },
      { external_id: 's-a', email: 'owner2@example.com', role: 'editor' },
      { external_id: 's-a', email: 'owner6@example.com', role: 'normal' },
      // s-b: owner5 made owner, the old owner not listed: removed after the transfer.
      { external_id: 's-b', email: 'owner5@example.com', role: 'owner' },
    ]);
    const plan = await runCli(['apply', members, '--sync', '--dry-run', '--json'], env.env);
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout)).toMatchObject({
      dryRun: true,
      total: 6,
      wouldApply: { add: 1, remove: 2, 're-role': 1, transfer: 1 },
      unchanged: 1,
      refused: 0,
    });
    // Who would be removed is named, always: the file does not name them (lines after its last).
    expect(
      JSON.parse(plan.stdout).removals.map(
        (r: { line: number; email: string; externalId: string }) => `${r.line} ${r.email} ${r.externalId}`,
      ),
    ).toEqual(['6 owner3@example.com s-a', '7 owner4@example.com s-b']);
    const text = await runCli(['apply', members, '--sync', '--dry-run'], env.env);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^line 6: remove_member owner3@example\.com from workspace s-a \([0-9a-f-]{36}\): would remove$/m);
    expect(text.stdout).toMatch(/^line 7: remove_member owner4@example\.com from workspace s-b \([0-9a-f-]{36}\): would remove$/m);
    expect(text.stdout).toContain('plan: 6 changes: would add 1, remove 2, re-role 1, transfer 1; 1 unchanged');
    const batches = async () => (await env.db.query(`SELECT count(*)::int AS n FROM dify_provision.batches`)).rows[0].n as number;
    expect(await batches()).toBe(1);

    // Over --max-rows: the file (lines 2-5) and the removals it becomes (lines 6, 7) are held whole.
    const big = await runCli(['--dify-env', dotenv, 'apply', members, '--sync', '--max-rows', '5'], env.env);
    expect(big.code).toBe(1);
    expect(big.stderr).toMatch(/the membership file \(--sync\) is over its limit of 5 rows at line 7: nothing was queued/);
    expect(await batches()).toBe(1);

    const synced = await runCli(
      ['--dify-env', dotenv, 'apply', members, '--sync', '--wait', '--json', '--batch-id', 'sync', '--report-dir', env.dir],
      env.env,
    );
    expect(synced.code, synced.stderr).toBe(0);
    expect(JSON.parse(synced.stdout)).toMatchObject({ kind: 'changes', counts: { applied: 5, unchanged: 1, failed: 0, rejected: 0 } });
    const roles = async (id: string) =>
      Object.fromEntries(
        (
          await env.db.query<{ email: string; role: string }>(
            `SELECT a.email, j.role FROM dify_provision.ledger l JOIN tenant_account_joins j ON j.tenant_id = l.tenant_id
               JOIN accounts a ON a.id = j.account_id WHERE l.idempotency_key = $1`,
            [`external:${id}`],
          )
        ).rows.map((r) => [r.email, r.role]),
      );
    expect(await roles('s-a')).toEqual({ 'owner1@example.com': 'owner', 'owner2@example.com': 'editor', 'owner6@example.com': 'normal' });
    expect(await roles('s-b')).toEqual({ 'owner5@example.com': 'owner' });

    // --strict: one invalid row, nothing queued, exit 2, the row named; --json says so.
    const bad = join(env.dir, 'bad.csv');
    await writeFile(
      bad,
      'action,external_id,email,role,name\nrename,s-a,,,Renamed\nset_role,s-a,owner2@example.com,owner,\nset_role,s-a,nobody@example.com,admin,\n',
    );
    const strict = await runCli(['--dify-env', dotenv, 'apply', bad, '--strict', '--json'], env.env);
    expect(strict.code).toBe(2);
    expect(JSON.parse(strict.stdout)).toEqual({ strict: true, queued: 0, rejected: 1 });
    expect(strict.stderr).toContain('line 3 (role): cannot be owner');
    expect(await batches()).toBe(2);
    // Without --strict, --json: the batch's summary; the valid row queued, the other rejected.
    const loose = await runCli(['--dify-env', dotenv, 'apply', bad, '--json', '--batch-id', 'loose'], env.env);
    expect(loose.code, loose.stderr).toBe(0);
    expect(JSON.parse(loose.stdout)).toEqual({ batchId: 'loose', total: 3, queued: 2, rejected: 1, alreadyInBatch: 0 });
    await until(world.done('loose'), 'the loose batch');
    expect((await world.rowsOf('loose')).map((r: { outcome: string }) => r.outcome)).toEqual(['applied', 'rejected', 'failed']);
    // The report keeps what the rejected row said (its action and role), and names the workspace
    // a failed row was refused in, found by its external_id, as an applied row's.
    const report = (await runCli(['report', 'loose'], env.env)).stdout.trim().split('\r\n');
    expect(report[2]).toMatch(/^3,set_role,,s-a,owner2@example\.com,owner,,rejected,"role: cannot be owner/);
    const tenant = report[1]!.split(',')[2]!;
    expect(tenant).toMatch(/^[0-9a-f-]{36}$/);
    expect(report[3]).toMatch(new RegExp(`^4,set_role,${tenant},s-a,nobody@example\\.com,admin,,failed,"email: no Dify account`));
  });

  it('--create-missing-owners, --invite, --send-invites and --seal-to reach the recorded change rows and batch', async () => {
    const env = world.env;
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pub = join(env.dir, 'op.pub');
    await writeFile(pub, publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const dotenv = join(env.dir, 'mail.env');
    await writeFile(
      dotenv,
      [
        ...difyRedisLines(DIFY_DB, `apply-${env.name}`),
        'CONSOLE_WEB_URL=https://dify.example.com',
        'MAIL_TYPE=smtp',
        'MAIL_DEFAULT_SEND_FROM=Dify <no-reply@dify.example.com>',
        'SMTP_SERVER=127.0.0.1',
        'SMTP_PORT=2525',
        'SMTP_USE_TLS=false',
        '',
      ].join('\n'),
    );
    const file = join(env.dir, 'invite.csv');
    await writeFile(file, `action,workspace_id,email,role\nadd_member,${randomUUID()},new.person@example.com,normal\n`);
    // The dry run refuses what the run refuses: invitations without --seal-to (exit 1, no plan), then a private key.
    const seal = 'invitations need --seal-to operator-public.pem';
    for (const flags of [['--invite'], ['--send-invites']]) {
      const unsealed = await runCli(['--dify-env', dotenv, 'apply', file, '--dry-run', '--create-missing-owners', ...flags], env.env);
      expect(unsealed.code).toBe(1);
      expect(unsealed.stderr).toContain(seal);
      expect(unsealed.stdout).toBe('');
      const run = await runCli(['--dify-env', dotenv, 'apply', file, '--create-missing-owners', ...flags], env.env);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(seal);
    }
    const sealed = await runCli(
      ['--dify-env', dotenv, 'apply', file, '--dry-run', '--create-missing-owners', '--invite', '--seal-to', pub],
      env.env,
    );
    expect(sealed.stderr).not.toContain(seal);
    expect(sealed.stdout).toMatch(/^plan: 1 change: /m);
    // No worker runs: what the command recorded is what a worker would be asked to do.
    const run = await runCli(
      ['--dify-env', dotenv, 'apply', file, '--create-missing-owners', '--invite', '--send-invites', '--seal-to', pub, '--batch-id', 'inv'],
      env.env,
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('batch inv: 1 change read, 1 queued, 0 rejected');
    const { rows } = await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'inv'`);
    expect(rows.map((r: { spec: object }) => r.spec)).toEqual([
      expect.objectContaining({ action: 'add_member', createMissingAccounts: true, invite: true, sendInvites: true }),
    ]);
    const { rows: batch } = await env.db.query(`SELECT options FROM dify_provision.batches WHERE id = 'inv'`);
    // Each flag as asked (--send-invites alone would imply invite): the options the command passed.
    expect(batch[0].options).toMatchObject({
      createMissingAccounts: true,
      invite: true,
      sendInvites: true,
      asked: { createMissingOwners: true, invite: true, sendInvites: true },
    });
    expect(typeof batch[0].options.sealTo).toBe('string');
  });

  it('--header-row and --map read a changes file with a title and headings of its own; the batch records them (issue 32)', async () => {
    const env = world.env;
    const file = join(env.dir, 'titled-changes.csv');
    await writeFile(file, 'Renames – March,,\nWhat,Customer,New name\nrename,crm-1001,Acme Renamed\n');
    const map = ['--map', 'What=action', '--map', 'Customer=external_id', '--map', 'New name=name'];
    const plain = await runCli(['apply', file, '--dry-run'], env.env);
    expect(plain.code).not.toBe(0);
    const wrong = await runCli(['apply', file, '--dry-run', '--header-row', '2', '--map', 'What=acton'], env.env);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain('--map "What=acton": "acton" is not a column (did you mean action?)');
    const read = await runCli(['apply', file, '--header-row', '2', ...map, '--batch-id', 'titled', '--json'], env.env);
    expect(read.code, read.stderr).toBe(0);
    expect(JSON.parse(read.stdout)).toMatchObject({ total: 1, queued: 1, rejected: 0 });
    const status = JSON.parse((await runCli(['status', 'titled', '--json'], env.env)).stdout);
    expect(status.options).toMatchObject({ headerRow: 2, columnMap: { What: 'action', Customer: 'external_id', 'New name': 'name' } });
  });

  it("--within: a customer's file naming another batch's workspace is refused by line and field, in the dry run and the batch", async () => {
    const env = world.env;
    await env.db.query(await readFile(projectFile('samples', 'accounts.sql'), 'utf8'));
    const worker = world.worker();
    const a = await runCli(['ingest', projectFile('samples', 'workspaces.csv'), '--batch-id', 'cust-a'], env.env);
    expect(a.code, a.stderr).toBe(0);
    const bFile = await world.file('b.csv', [{ workspace_name: 'Beta', owner_email: 'ana@acme.example', external_id: 'beta-1' }]);
    const b = await runCli(['ingest', bFile, '--batch-id', 'cust-b'], env.env);
    expect(b.code, b.stderr).toBe(0);
    await until(world.done('cust-a'), 'customer A');
    await until(world.done('cust-b'), 'customer B');
    await worker.stop('SIGTERM');
    const file = join(env.dir, 'b-changes.csv');
    await writeFile(file, 'action,external_id,name\nrename,crm-1001,Pwned\nrename,nobody-1,Pwned\nrename,beta-1,Beta 2\n');
    // Repeatable and comma-separated, each batch once.
    const scoped = ['--within', 'cust-b', '--within', 'cust-b,cust-b'];
    const plan = await runCli(['apply', file, '--dry-run', ...scoped], env.env);
    expect(plan.code).toBe(2);
    const refusal = 'not one of the workspaces of batch cust-b (--within)';
    expect(plan.stderr).toContain(`line 2 (external_id): ${refusal}`);
    expect(plan.stderr).toContain(`line 3 (external_id): ${refusal}`);
    expect(plan.stdout).toContain('would rename 1; 2 refused');
    const applied = await runCli(['apply', file, ...scoped, '--batch-id', 'b-changes', '--json'], env.env);
    expect(JSON.parse(applied.stdout)).toMatchObject({ total: 3, queued: 1, rejected: 2 });
    expect((await world.rowsOf('b-changes')).map((r) => `${r.outcome} ${r.error ?? ''}`)).toEqual([
      `rejected external_id: ${refusal}`,
      `rejected external_id: ${refusal}`,
      'queued ',
    ]);
    const status = JSON.parse((await runCli(['status', 'b-changes', '--json'], env.env)).stdout);
    expect(status.options).toMatchObject({ within: ['cust-b'] });
    // A scope naming no batch (a typo), or a change batch: the command is refused up front, naming it.
    const typo = await runCli(['apply', file, '--within', 'cust-bb', '--dry-run'], env.env);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('--within: there is no batch "cust-bb"');
    expect(typo.stderr).not.toContain('not one of the workspaces');
    const changeBatch = await runCli(['apply', file, '--within', 'b-changes', '--batch-id', 'b-typo'], env.env);
    expect(changeBatch.code).toBe(1);
    expect(changeBatch.stderr).toContain('--within: "b-changes" is a change batch; --within takes ingest batches');
    expect((await env.db.query(`SELECT id FROM dify_provision.batches WHERE id = 'b-typo'`)).rows).toEqual([]);
    const bad = await runCli(['apply', file, '--dry-run', '--within', 'no good'], env.env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--within: "no good" is not a batch id');
  });

  it('a worker SIGKILLed in the middle of a change batch: another finishes it, every change made once', async () => {
    const env = world.env;
    const rows = Array.from({ length: 10 }, (_, i) => ({
      workspace_name: `Kill ${i}`,
      owner_email: `owner${i + 1}@example.com`,
      external_id: `k-${i}`,
    }));
    expect((await runCli(['ingest', await world.file('ws.csv', rows), '--batch-id', 'ws'], env.env)).code).toBe(0);
    const dotenv = await difyEnv();
    const first = world.worker('--dify-env', dotenv, '--concurrency', '4', '--lock-duration-ms', '2000');
    await until(world.done('ws'), 'the workspaces');
    // 300 changes: each workspace gets 30 people, new accounts among them (created once each).
    const changes = ['action,external_id,email,role'];
    for (let p = 0; p < 30; p++)
      for (let w = 0; w < 10; w++) changes.push(`add_member,k-${w},person${p}@kill.example,${p % 2 ? 'editor' : 'normal'}`);
    const path = join(env.dir, 'changes.csv');
    await writeFile(path, changes.join('\n') + '\n');
    const applied = await runCli(['--dify-env', dotenv, 'apply', path, '--create-missing-owners', '--batch-id', 'kill'], env.env);
    expect(applied.code, applied.stderr).toBe(0);
    const answered = async () =>
      Number(
        (await env.db.query(`SELECT count(*) AS n FROM dify_provision.rows WHERE batch_id = 'kill' AND outcome = 'applied'`)).rows[0].n,
      );
    await until(async () => (await answered()) >= 20, 'some changes applied');
    await first.stop('SIGKILL');
    expect(await answered()).toBeLessThan(300);
    world.worker('--dify-env', dotenv, '--concurrency', '4', '--lock-duration-ms', '2000');
    await until(world.done('kill'), 'the change batch');
    expect((await world.rowsOf('kill')).map((r: { outcome: string }) => r.outcome)).toEqual(Array(300).fill('applied'));
    const { rows: counts } = await env.db.query(
      `SELECT (SELECT count(*)::int FROM accounts WHERE email LIKE '%@kill.example') AS people,
              (SELECT count(*)::int FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE a.email LIKE '%@kill.example') AS joins,
              (SELECT count(*)::int FROM (SELECT j.tenant_id FROM tenant_account_joins j WHERE j.role = 'owner' GROUP BY 1 HAVING count(*) = 1) o) AS one_owner`,
    );
    expect(counts).toEqual([{ people: 30, joins: 300, one_owner: 10 }]);
  });
});
