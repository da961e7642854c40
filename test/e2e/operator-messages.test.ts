// What an operator sees when something is wrong or they stop early, through the CLI as separate
// processes: the OS's own cause for a storage folder the worker cannot use (EACCES with owner,
// mode and user), a wrong PostgreSQL password naming host, database, user and variable, Ctrl-C on
// `ingest --wait`, a reader that closes the pipe (`| head -1`), an input file that is not there, and
// `--version`.
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import { startLocalServices, type LocalServices } from '../../src/services/local-services.js';
import { CLI, runCli, runProgram, startCli } from '../helpers/cli.js';
import { cliWorld, until } from '../helpers/cli-world.js';
import { cliAsUser } from '../helpers/as-user.js';
import { PACKAGE_ROOT } from '../../src/common/project-files.js';

const world = cliWorld();
const isRoot = process.getuid?.() === 0;
const STACK = /\n\s+at /;
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Runs a shell pipeline (bash, pipefail: the exit code is the CLI's unless a later stage fails). */
const pipeline = (command: string, env: NodeJS.ProcessEnv) => runProgram('bash', ['-c', `set -o pipefail; ${command}`], env);

describe('CLI hygiene', () => {
  it('--version prints the package version, and --help answers without any configuration', async () => {
    const pkg = JSON.parse(await readFile(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
    const bare = { PATH: process.env.PATH };
    expect(await runCli(['--version'], bare)).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
    const help = await runCli(['--help'], bare);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--version');
  });

  it('an input file that is missing (or a folder) is one line naming it, for ingest and apply, with and without --dry-run', async () => {
    const missing = join(world.env.dir, 'nofile.csv');
    for (const args of [['ingest'], ['ingest', '--dry-run'], ['apply'], ['apply', '--dry-run']]) {
      const [command, ...flags] = args;
      expect(await runCli([command!, missing, ...flags], world.env.env), args.join(' ')).toEqual({
        code: 1,
        stdout: '',
        stderr: `dify-provision: cannot read ${missing}: no such file\n`,
      });
      expect((await runCli([command!, world.env.dir, ...flags], world.env.env)).stderr).toBe(
        `dify-provision: cannot read ${world.env.dir}: a folder, not a file\n`,
      );
    }
    // A key file a flag names: the flag, the file and why.
    const csv = join(world.env.dir, 'one.csv');
    await writeFile(csv, 'workspace_name,owner_email\nOne,owner1@example.com\n');
    const noKey = join(world.env.dir, 'op.pub');
    expect(await runCli(['ingest', csv, '--mint-dataset-keys', '--seal-to', noKey], world.env.env)).toEqual({
      code: 1,
      stdout: '',
      stderr: `dify-provision: --seal-to ${noKey}: cannot read it: no such file\n`,
    });
  });

  it('a reader that stops early (`| head -1`) ends `batches` and `report` quietly: no EPIPE, no stack trace', async () => {
    // 3000 rejected rows: a report far larger than a pipe's buffer, so the CLI is still writing when head exits.
    const rows = Array.from({ length: 3000 }, (_, i) => ({ workspace_name: `W${i}`, owner_email: 'not-an-email' }));
    const path = await world.file('big.csv', rows);
    expect((await runCli(['ingest', path, '--batch-id', 'big'], world.env.env)).code).toBe(0);
    const q = (s: string) => `'${s}'`;
    const cli = `${q(process.execPath)} ${q(CLI)}`;

    const report = await pipeline(`${cli} report big | head -1`, world.env.env);
    expect(report).toMatchObject({ code: 0, stderr: '' });
    expect(report.stdout).toMatch(/^line,/);
    // `true` has exited before the CLI writes its first byte: every write meets a closed pipe.
    for (const command of [`${cli} batches | head -1`, `${cli} batches | true`, `${cli} report big --format json | true`]) {
      const r = await pipeline(command, world.env.env);
      expect(r.stderr, command).toBe('');
      expect(r.code, command).toBe(0);
    }
  });

  it('Ctrl-C on `ingest --wait` says the batch goes on and how to wait for or cancel it, and exits 130', async () => {
    const path = await world.file('wait.csv', [{ workspace_name: 'Waiting', owner_email: 'owner1@example.com' }]);
    // No worker runs: the batch waits until Ctrl-C.
    const ingest = startCli(['ingest', path, '--batch-id', 'stopped', '--wait', '--report-dir', world.env.dir], world.env.env);
    await until(async () => ingest.output().includes('batch stopped: 1 row read, 1 queued'), 'ingest to queue its row');
    const code = await ingest.stop('SIGINT');
    expect(ingest.output()).toContain('interrupted: batch stopped goes on (the workers keep processing its rows)');
    expect(ingest.output()).toContain('to follow it again: dify-provision wait stopped');
    expect(ingest.output()).toContain('to cancel the rest: dify-provision cancel stopped');
    expect(ingest.output()).not.toMatch(STACK);
    expect(code).toBe(130);
    // The batch did go on: its row still waits for a worker.
    const status = JSON.parse((await runCli(['status', 'stopped', '--json'], world.env.env)).stdout) as { done: boolean; total: number };
    expect(status).toMatchObject({ done: false, total: 1 });
    // And a test waiting on it fails on the stall, naming the stuck row, not on a wall-clock limit.
    await expect(until(world.done('stopped'), 'the stopped batch', 2000)).rejects.toThrow(
      /stalled: the stopped batch: nothing moved for 2 s\n[\s\S]*stopped line 2: queued, 0 attempt\(s\)/,
    );
  });
});

describe('errors name the target, the cause and the variable to check', () => {
  it.skipIf(!isRoot)(
    'a worker (not root) that cannot write the storage folder says EACCES with its owner, mode and the running user',
    async () => {
      // Dify's user (uid 1001) owns the storage, mode 0755; the worker runs as `nobody`.
      await chmod(world.env.dir, 0o755); // nobody may reach the storage folder, not write it
      const storage = world.env.config.storageDir;
      await chown(storage, 1001, 1001);
      await chmod(storage, 0o755);
      const [program, args] = await cliAsUser('nobody', 'nogroup', ['worker']); // from any clone, however private its folder
      const asNobody = () => runProgram(program, args, world.env.env);
      // uid 1001's name is whatever this machine calls it (test/prerequisites.ts makes it "dify").
      const owned = (path: string, mode: string) =>
        new RegExp(`${escapeRegExp(path)} is owned by uid 1001( \\([^)]+\\))?, group 1001, mode ${mode}`);

      const create = await asNobody(); // privkeys/ does not exist: the worker cannot make it
      expect(create.code).toBe(1);
      expect(create.stderr).toContain(`${join(storage, 'privkeys')}: cannot create: EACCES (permission denied): ${storage} is owned`);
      expect(create.stderr).toMatch(owned(storage, '0755'));
      expect(create.stderr).toMatch(/this process runs as uid 65534 \(nobody\)/);
      expect(create.stderr).toContain('check DIFY_STORAGE_DIR');
      expect(create.stderr).not.toMatch(STACK);

      // Dify made privkeys/ 0700: the worker cannot even open it (this was "a symbolic link?").
      await mkdir(join(storage, 'privkeys'), { mode: 0o700 });
      await chown(join(storage, 'privkeys'), 1001, 1001);
      const open = await asNobody();
      expect(open.code).toBe(1);
      expect(open.stderr).toContain(`cannot open: EACCES (permission denied): ${join(storage, 'privkeys')} is owned`);
      expect(open.stderr).toMatch(owned(join(storage, 'privkeys'), '0700'));
      expect(open.stderr).toMatch(/this process runs as uid 65534 \(nobody\)/);
      expect(open.stderr).not.toContain('symbolic link');
      expect(open.stderr).not.toMatch(STACK);
    },
  );

  describe('a wrong PostgreSQL password', () => {
    let pg: LocalServices;
    let port: string;
    beforeAll(async () => {
      // A server of its own whose pg_hba.conf asks this role for a password over TCP (scram).
      pg = await startLocalServices({});
      port = new URL(pg.databaseUrl).port;
      const hba = join(pg.dir, 'pg', 'pg_hba.conf');
      await writeFile(hba, `host all operator 127.0.0.1/32 scram-sha-256\n${await readFile(hba, 'utf8')}`);
      const admin = createPool(pg.databaseUrl, 1);
      await admin.query(`CREATE ROLE operator LOGIN PASSWORD 'the-right-one'`);
      await admin.query(`SELECT pg_reload_conf()`);
      await admin.end();
    });
    afterAll(async () => {
      await pg?.stop();
    });

    it('names host, database, user and DATABASE_URL (or DB_PASSWORD from a Dify .env), never the password nor a stack trace', async () => {
      const env = { ...world.env.env, DATABASE_URL: `postgres://operator:wrong-secret@127.0.0.1:${port}/dify` };
      const viaUrl = await runCli(['status', 'any'], env);
      expect(viaUrl.code).toBe(1);
      expect(viaUrl.stderr).toBe(
        `dify-provision: cannot use PostgreSQL at 127.0.0.1:${port}, database "dify" as user "operator": ` +
          `password authentication failed for user "operator" (28P01) — check DATABASE_URL\n`,
      );

      const difyEnv = join(world.env.dir, 'dify.env');
      await writeFile(difyEnv, `DB_USERNAME=operator\nDB_PASSWORD=wrong-secret\nDB_HOST=127.0.0.1\nDB_PORT=${port}\nDB_DATABASE=dify\n`);
      const { DATABASE_URL: _, ...withoutUrl } = world.env.env;
      for (const args of [['batches'], ['worker']]) {
        const viaDify = await runCli([...args, '--dify-env', difyEnv], { ...withoutUrl, DEBUG: 'express:*' });
        expect(viaDify.code).toBe(1);
        expect(viaDify.stderr).toContain(`database "dify" as user "operator": password authentication failed`);
        expect(viaDify.stderr).toContain("check DB_PASSWORD (Dify's settings)");
        expect(viaDify.stderr).not.toContain('wrong-secret');
        expect(viaDify.stderr).not.toMatch(STACK);
      }
    });
  });
});
