// Day one from the command line: Dify's settings from --dify-env (its own Redis in another
// database, REDIS_KEY_PREFIX, INVITE_EXPIRY_HOURS, CONSOLE_WEB_URL), `ingest --invite`, a worker
// that cannot issue invitations saying so, `secrets --invites` once, `invite --resend`; the
// pre-claim guard's override (`ingest`/`retry --trust-account EMAIL`, docs/security.md).
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, inject, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { cliWorld, until } from '../helpers/cli-world.js';
import { difyRedisLines, operatorKeyFiles } from '../helpers/dify-invitations.js';
import { dumpRedis } from '../helpers/redis-dump.js';

const world = cliWorld();
const DIFY_DB = 10;

describe('invitations from the CLI', () => {
  it('asks for CONSOLE_WEB_URL, fails rows on a worker without it, then issues, reveals once and resends', async () => {
    const env = world.env;
    const dir = env.dir;
    await operatorKeyFiles(dir);
    const prefix = `e2e-${env.name}`;
    const difyEnv = (console: string) =>
      [...difyRedisLines(DIFY_DB, prefix), 'INVITE_EXPIRY_HOURS=2', `CONSOLE_WEB_URL=${console}`, ''].join('\n');
    await writeFile(join(dir, 'no-console.env'), difyEnv(''));
    await writeFile(join(dir, 'dify.env'), difyEnv('https://dify.example.com'));
    const csv = await world.file('day-one.csv', [
      { workspace_name: 'Acme', owner_email: 'ann@acme.example', members: 'bob@acme.example:admin' },
      { workspace_name: 'Globex', owner_email: 'owner1@example.com', members: '' },
    ]);
    const seal = ['--seal-to', join(dir, 'op.pub')];

    const refused = await runCli(
      ['--dify-env', join(dir, 'no-console.env'), 'ingest', csv, '--create-missing-owners', '--invite', ...seal, '--batch-id', 'x'],
      env.env,
    );
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("CONSOLE_WEB_URL: the address people open Dify's console at");
    expect((await env.db.query(`SELECT 1 FROM dify_provision.batches`)).rows).toHaveLength(0);

    const ingested = await runCli(
      ['--dify-env', join(dir, 'dify.env'), 'ingest', csv, '--create-missing-owners', '--invite', ...seal, '--batch-id', 'day1'],
      env.env,
    );
    expect(ingested.code, ingested.stderr).toBe(0);
    // A worker that has no CONSOLE_WEB_URL says so at start and fails the rows, creating nothing.
    const blind = world.worker('--dify-env', join(dir, 'no-console.env'));
    await until(async () => blind.output().includes('rows waiting here ask for invitations'), 'the worker to say it cannot invite');
    await until(world.done('day1'), 'the rows to fail');
    await blind.stop();
    expect((await world.rowsOf('day1')).map((r: { outcome: string }) => r.outcome)).toEqual(['failed', 'failed']);
    expect((await env.db.query(`SELECT 1 FROM tenants`)).rows).toHaveLength(0);

    const worker = world.worker('--dify-env', join(dir, 'dify.env'));
    expect((await runCli(['retry', 'day1'], env.env)).code).toBe(0);
    await until(world.done('day1'), 'the batch to be created');
    expect((await world.rowsOf('day1')).map((r: { outcome: string }) => r.outcome)).toEqual(['created', 'created']);

    const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    try {
      const keys = async () => (await dify.keys(`${prefix}:member_invite:token:*`)).sort();
      const first = await keys();
      expect(first).toHaveLength(2); // ann and bob; owner1 existed
      for (const k of first) expect(await dify.ttl(k)).toBeLessThanOrEqual(7200);

      const out = join(dir, 'links.csv');
      const shown = await runCli(['secrets', 'day1', '--invites', '--key', join(dir, 'op.key'), '--out', out], env.env);
      expect(shown.stdout, shown.stderr).toContain('2 invitation link(s) of batch day1 written to');
      expect((await stat(out)).mode & 0o777).toBe(0o600);
      const text = await readFile(out, 'utf8');
      expect(text).toMatch(/^line,workspace_id,workspace_name,email,role,link,expires_at\n/);
      expect(text).toContain(',Acme,ann@acme.example,owner,https://dify.example.com/activate?email=ann%40acme.example&token=');
      expect(text).toContain(',Acme,bob@acme.example,admin,https://dify.example.com/activate?email=bob%40acme.example&token=');
      const again = await runCli(['secrets', 'day1', '--invites', '--key', join(dir, 'op.key'), '--out', join(dir, 'b.csv')], env.env);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain('were revealed already');

      // Bob activates; Ann gets a fresh link and her old one stops working.
      await env.db.query(`UPDATE accounts SET status = 'active' WHERE email = 'bob@acme.example'`);
      const resent = await runCli(['--dify-env', join(dir, 'dify.env'), 'invite', '--resend', 'day1'], env.env);
      expect(resent.stdout, resent.stderr).toContain('1 person(s) of batch day1 got a fresh invitation');
      const after = await keys();
      expect(after).toHaveLength(2);
      const annOld = first.find((k) => !after.includes(k))!;
      expect(annOld).toBeDefined();
      // The command it prints names a file of its own (links.csv, where the first links went, is never overwritten).
      const suggested = /--out (\S+)\n/.exec(resent.stdout)![1]!;
      expect(suggested).toMatch(/^links-day1-resent-\d{8}-\d{6}\.csv$/);
      const fresh = join(dir, suggested);
      expect((await runCli(['secrets', 'day1', '--invites', '--key', join(dir, 'op.key'), '--out', fresh], env.env)).code).toBe(0);
      const freshText = await readFile(fresh, 'utf8');
      expect(freshText.trim().split('\n')).toHaveLength(2);
      expect(freshText).toContain('ann@acme.example');
      const tokenOf = (t: string) => /token=([0-9a-f-]{36})/.exec(t)![1]!;
      expect(after).toContain(`${prefix}:member_invite:token:${tokenOf(freshText)}`);

      // Per workspace: a new 0700 folder with one 0600 file per workspace, each holding its links only.
      const op = ['--invites', '--key', join(dir, 'op.key')];
      const both = await runCli(['secrets', 'day1', ...op, '--out', join(dir, 'x.csv'), '--by-workspace', join(dir, 'x')], env.env);
      expect(both.code).not.toBe(0);
      expect(both.stderr).toContain('--by-workspace <dir> goes with --invites, instead of --out');
      expect((await runCli(['--dify-env', join(dir, 'dify.env'), 'invite', '--resend', 'day1'], env.env)).code).toBe(0);
      const byWorkspace = join(dir, 'by-workspace');
      const split = await runCli(['secrets', 'day1', ...op, '--by-workspace', byWorkspace], env.env);
      expect(split.stdout, split.stderr).toContain(`1 invitation link(s) of batch day1 written to ${byWorkspace}, one file per workspace`);
      expect((await stat(byWorkspace)).mode & 0o777).toBe(0o700);
      const [file, ...others] = await readdir(byWorkspace);
      expect(others).toEqual([]);
      expect((await stat(join(byWorkspace, file!))).mode & 0o777).toBe(0o600);
      const perWorkspace = (await readFile(join(byWorkspace, file!), 'utf8')).trim().split('\n');
      expect(perWorkspace).toHaveLength(2);
      expect(perWorkspace[1]).toContain(`,${file!.replace(/\.csv$/, '')},Acme,ann@acme.example,owner,https://dify.example.com/activate?`);
      expect(await keys()).toContain(`${prefix}:member_invite:token:${tokenOf(perWorkspace[1]!)}`);

      // Nothing of them in our Redis, the worker's output, the CLI's output or the report.
      await worker.stop();
      const report = await runCli(['report', 'day1'], env.env);
      const ours = await dumpRedis(env.redis);
      const seen = [
        ours,
        worker.output(),
        blind.output(),
        report.stdout,
        resent.stdout + resent.stderr,
        shown.stdout + shown.stderr,
        split.stdout + split.stderr,
      ];
      for (const k of [...first, ...after]) for (const text of seen) expect(text).not.toContain(k.slice(-36));
      for (const text of seen) expect(text).not.toContain('/activate?');
    } finally {
      dify.disconnect();
    }
  });

  it('invite BATCH: a batch made with --create-missing-owners but no --invite gets its invitations after the fact (issue 32 item 9)', async () => {
    const env = world.env;
    const dir = env.dir;
    await operatorKeyFiles(dir);
    const prefix = `late-${env.name}`;
    await writeFile(
      join(dir, 'dify.env'),
      [...difyRedisLines(DIFY_DB, prefix), 'INVITE_EXPIRY_HOURS=2', 'CONSOLE_WEB_URL=https://dify.example.com', ''].join('\n'),
    );
    const difyEnv = ['--dify-env', join(dir, 'dify.env')];
    const csv = await world.file('late.csv', [
      { workspace_name: 'Late Acme', owner_email: 'ann@late.example', members: 'bob@late.example:admin' },
      // Cid joins two workspaces: no workspace is his home, so no link may go with either.
      { workspace_name: 'Late Globex', owner_email: 'owner1@example.com', members: 'cid@late.example:normal' },
      { workspace_name: 'Late Initech', owner_email: 'owner2@example.com', members: 'cid@late.example:normal' },
    ]);
    expect((await runCli([...difyEnv, 'ingest', csv, '--create-missing-owners', '--batch-id', 'late'], env.env)).code).toBe(0);
    const worker = world.worker(...difyEnv);
    await until(world.done('late'), 'the batch');
    const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    try {
      const keys = () => dify.keys(`${prefix}:member_invite:token:*`);
      expect(await keys()).toEqual([]);
      const keyless = await runCli([...difyEnv, 'invite', 'late'], env.env);
      expect(keyless.code).toBe(1);
      expect(keyless.stderr).toContain('batch "late" has no seal key: give --seal-to operator-public.pem');

      const invited = await runCli([...difyEnv, 'invite', 'late', '--seal-to', join(dir, 'op.pub')], env.env);
      expect(invited.code, invited.stderr).toBe(0);
      expect(invited.stdout).toContain('2 pending person(s) of batch late got an invitation.');
      expect(invited.stdout).toContain('1 got none: they are in another workspace too');
      expect(invited.stdout).toContain('dify-provision secrets late --invites --key operator.pem --out links-late.csv');
      expect(await keys()).toHaveLength(2);
      const out = join(dir, 'late-links.csv');
      expect((await runCli(['secrets', 'late', '--invites', '--key', join(dir, 'op.key'), '--out', out], env.env)).code).toBe(0);
      const links = await readFile(out, 'utf8');
      expect(links).toContain(',Late Acme,ann@late.example,owner,https://dify.example.com/activate?email=ann%40late.example&token=');
      expect(links).toContain(',Late Acme,bob@late.example,admin,https://dify.example.com/activate?email=bob%40late.example&token=');
      expect(links).not.toContain('cid@');
      // Again: nobody new; the key is the batch's now, and --resend works on them.
      const again = await runCli([...difyEnv, 'invite', 'late'], env.env);
      expect(again.stdout, again.stderr).toContain('0 pending person(s) of batch late got an invitation.');
      expect(await keys()).toHaveLength(2);
      const resent = await runCli([...difyEnv, 'invite', '--resend', 'late'], env.env);
      expect(resent.stdout, resent.stderr).toContain('2 person(s) of batch late got a fresh invitation');
    } finally {
      dify.disconnect();
      await worker.stop();
    }
  });

  it('--trust-account EMAIL on ingest and retry: a row the pre-claim guard refuses is created with it, and the batch records the address', async () => {
    const env = world.env;
    const dir = env.dir;
    await operatorKeyFiles(dir);
    await writeFile(
      join(dir, 'dify.env'),
      [...difyRedisLines(DIFY_DB, `trust-${env.name}`), 'CONSOLE_WEB_URL=https://dify.example.com', ''].join('\n'),
    );
    const difyEnv = ['--dify-env', join(dir, 'dify.env')];
    const worker = world.worker(...difyEnv);
    try {
      // B's batch creates A's future owner as a member of B's workspace; B's operator reveals the
      // link and the account is activated (as whoever held the link would).
      const b = await world.file('b.csv', [
        { workspace_name: 'B Corp', owner_email: 'b-owner@b.example', members: 'ceo@a.example:normal' },
      ]);
      const seal = ['--seal-to', join(dir, 'op.pub')];
      // B's batch id is the file's (its name and content), as ingest derives it.
      const ingestB = await runCli([...difyEnv, 'ingest', b, '--create-missing-owners', '--invite', ...seal], env.env);
      expect(ingestB.code, ingestB.stderr).toBe(0);
      const custB = /^batch (\S+):/.exec(ingestB.stdout)![1]!;
      await until(world.done(custB), "B's batch");
      const out = join(dir, 'b-links.csv');
      expect((await runCli(['secrets', custB, '--invites', '--key', join(dir, 'op.key'), '--out', out], env.env)).code).toBe(0);
      expect(await readFile(out, 'utf8')).toContain(',B Corp,ceo@a.example,normal,');
      await env.db.query(`UPDATE accounts SET status = 'active', initialized_at = now() WHERE email = 'ceo@a.example'`);

      // The dry run plans the batch the same command would make: B's file again is B's batch (its
      // own link is no pre-claim: skipped as existing); under another batch id (no --seal-to of
      // B's), its row is refused as the worker would refuse it.
      const bAgain = await runCli([...difyEnv, 'ingest', b, '--dry-run'], env.env);
      expect(bAgain.stdout, bAgain.stderr).toContain('would create 0, skip 1 existing, reject 0 invalid, fail 0');
      expect(bAgain.code).toBe(0);
      const bOther = await runCli([...difyEnv, 'ingest', b, '--dry-run', '--batch-id', 'cust-other'], env.env);
      expect(bOther.code).toBe(2);
      expect(bOther.stderr).toMatch(
        /^line 2 \(owner_email\): b-owner@b\.example: this row's workspace exists already, and this account's link was given/,
      );

      // A's file naming the address as owner: planned would_fail (trusted: would_create), then refused without the flag, naming the line and field.
      const a = await world.file('a.csv', [{ workspace_name: 'A Corp', owner_email: 'ceo@a.example', members: '' }]);
      const planned = await runCli([...difyEnv, 'ingest', a, '--dry-run', '--batch-id', 'cust-a'], env.env);
      expect(planned.code).toBe(2);
      expect(planned.stdout).toContain('would create 0, skip 0 existing, reject 0 invalid, fail 1');
      expect(planned.stderr).toMatch(
        /^line 2 \(owner_email\): ceo@a\.example: this account was created or invited by another batch .*--trust-account ceo@a\.example/,
      );
      const plannedTrusted = await runCli([...difyEnv, 'ingest', a, '--dry-run', '--trust-account', 'CEO@a.example'], env.env);
      expect(plannedTrusted.stdout, plannedTrusted.stderr).toContain('would create 1, skip 0 existing, reject 0 invalid, fail 0');
      expect(plannedTrusted.code).toBe(0);
      expect((await runCli([...difyEnv, 'ingest', a, '--batch-id', 'cust-a'], env.env)).code).toBe(0);
      await until(world.done('cust-a'), "A's batch");
      const refused = await world.rowsOf('cust-a');
      expect(refused.map((r: { outcome: string }) => r.outcome)).toEqual(['failed']);
      expect(refused[0].error).toMatch(
        /^owner_email: ceo@a\.example: this account was created or invited by another batch .*--trust-account ceo@a\.example/,
      );
      expect(refused[0].error).not.toContain(custB);

      const notAnAddress = await runCli([...difyEnv, 'ingest', a, '--trust-account', 'ceo-at-a.example', '--batch-id', 'x'], env.env);
      expect(notAnAddress.code).not.toBe(0);
      expect(notAnAddress.stderr).toContain('--trust-account takes an email address');

      // The same file again with the flag: the same batch, which keeps its options: said, with what to run instead.
      const rerun = await runCli([...difyEnv, 'ingest', a, '--trust-account', 'ceo@a.example', '--batch-id', 'cust-a'], env.env);
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(rerun.stderr).toContain(
        "batch cust-a existed already, made without this run's --trust-account: a batch keeps the options it was made with, so it was not applied; for its failed rows run: dify-provision retry cust-a --trust-account ceo@a.example",
      );

      // retry: without the flag the row is refused again; with it, created, the batch recording the address.
      const outcomes = async (batch: string) => (await world.rowsOf(batch)).map((r: { outcome: string }) => r.outcome);
      expect((await runCli(['retry', 'cust-a'], env.env)).stdout).toContain('batch cust-a: 1 failed row(s) queued again\n');
      await until(world.done('cust-a'), 'the row retried');
      expect((await world.rowsOf('cust-a'))[0]).toMatchObject({ outcome: 'failed', error: refused[0].error });
      expect((await runCli(['retry', 'cust-a', '--trust-account', 'ceo-at-a.example'], env.env)).code).not.toBe(0);
      const retried = await runCli(['retry', 'cust-a', '--trust-account', 'ceo@a.example'], env.env);
      expect(retried.stdout, retried.stderr).toContain('batch cust-a: 1 failed row(s) queued again (the batch trusts ceo@a.example now)');
      await until(world.done('cust-a'), 'the row retried with --trust-account');
      expect(await outcomes('cust-a')).toEqual(['created']);
      const optionsOf = async (batch: string) =>
        (JSON.parse((await runCli(['status', batch, '--json'], env.env)).stdout) as { options: Record<string, unknown> }).options;
      expect((await optionsOf('cust-a'))['trustAccounts']).toEqual(['ceo@a.example']);

      // Another file naming the address, ingested with --trust-account (any case): created, and the batch says it was trusted.
      const a2 = await world.file('a2.csv', [{ workspace_name: 'A Two', owner_email: 'ceo@a.example', members: '' }]);
      const trusted = await runCli([...difyEnv, 'ingest', a2, '--trust-account', 'CEO@a.example', '--batch-id', 'cust-a-trusted'], env.env);
      expect(trusted.code, trusted.stderr).toBe(0);
      await until(world.done('cust-a-trusted'), "A's trusted batch");
      expect(await outcomes('cust-a-trusted')).toEqual(['created']);
      const joins = await env.db.query<{ name: string; role: string }>(
        `SELECT t.name, j.role FROM tenant_account_joins j JOIN tenants t ON t.id = j.tenant_id JOIN accounts ac ON ac.id = j.account_id
          WHERE ac.email = 'ceo@a.example' ORDER BY t.name`,
      );
      expect(joins.rows.map((r) => `${r.name}:${r.role}`)).toEqual(['A Corp:owner', 'A Two:owner', 'B Corp:normal']);
      expect((await optionsOf('cust-a-trusted'))['trustAccounts']).toEqual(['CEO@a.example']);
      const spec = await env.db.query<{ batch_id: string; spec: { trustAccounts?: string[] } }>(
        `SELECT batch_id, spec FROM dify_provision.rows WHERE batch_id LIKE 'cust-a%' ORDER BY batch_id`,
      );
      expect(spec.rows.map((r) => [r.batch_id, r.spec.trustAccounts])).toEqual([
        ['cust-a', ['ceo@a.example']],
        ['cust-a-trusted', ['ceo@a.example']],
      ]);

      // An owner with no account in a batch made without --create-missing-owners: retry with it creates the account.
      const c = await world.file('c.csv', [{ workspace_name: 'C Corp', owner_email: 'founder@c.example', members: '' }]);
      expect((await runCli([...difyEnv, 'ingest', c, '--batch-id', 'cust-c'], env.env)).code).toBe(0);
      await until(world.done('cust-c'), "C's batch");
      expect(await outcomes('cust-c')).toEqual(['failed']);
      const created = await runCli(['retry', 'cust-c', '--create-missing-owners'], env.env);
      expect(created.stdout, created.stderr).toContain(
        'batch cust-c: 1 failed row(s) queued again (they create the accounts they name that do not exist)',
      );
      await until(world.done('cust-c'), 'the row retried with --create-missing-owners');
      expect(await outcomes('cust-c')).toEqual(['created']);
      expect((await optionsOf('cust-c'))['createMissingOwners']).toBe(true);
    } finally {
      await worker.stop();
    }
  });
});
