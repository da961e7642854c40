// The README's first command, and the tests that run the CLI as another user, from a fresh clone in
// a private folder (0700, which the postgres user, Dify's uid 1001 and nobody cannot traverse), with
// no services started by hand.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/common/project-files.js';

const isRoot = process.getuid?.() === 0;

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('a fresh clone in a private folder', () => {
  let home: string;
  let clone: string;
  // This process's environment without the services and without the outer vitest's own variables.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !['REDIS_URL', 'DATABASE_URL', 'DIFY_STORAGE_DIR'].includes(k) && !k.startsWith('VITEST')),
  );
  /**
   * Runs a command in the clone. npm ci would fetch the same packages again: the clone has this
   * checkout's node_modules, as root mounted in a namespace of the command's own (a real folder in
   * the clone, as npm ci leaves it, whatever this checkout's own folder lets other users through),
   * else by a symbolic link.
   */
  const inClone = (cmd: string, args: string[]) =>
    isRoot
      ? run(
          'unshare',
          [
            '--mount',
            '--',
            'sh',
            '-c',
            'mount --bind "$1" node_modules && shift && exec "$@"',
            'sh',
            join(PACKAGE_ROOT, 'node_modules'),
            cmd,
            ...args,
          ],
          clone,
          env,
        )
      : run(cmd, args, clone, env);

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'dify-provision-clone-'));
    expect((await stat(home)).mode & 0o777).toBe(0o700);
    clone = join(home, 'dify-provision');
    const git = await run('git', ['clone', '--quiet', '--no-hardlinks', PACKAGE_ROOT, clone], home, process.env);
    expect(git.code, git.out).toBe(0);
    if (isRoot) await mkdir(join(clone, 'node_modules'));
    else await symlink(join(PACKAGE_ROOT, 'node_modules'), join(clone, 'node_modules'));
  }, 120_000);
  afterAll(async () => {
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('npm run demo provisions the sample batch, starting its own Redis and PostgreSQL', async () => {
    const demo = await inClone('npm', ['run', 'demo']);
    expect(demo.code, demo.out).toBe(0);
    expect(demo.out).toMatch(
      /batch demo \(done with failures\): 17\/17 rows finished \(100%\): .*created 10, existing 0, rejected 5, failed 2/,
    );
    expect(demo.out).toContain('local services stopped');
    // Clean lines only: no worker JSON log among them, no progress line twice in a row.
    const lines = demo.out.split('\n');
    expect(lines.filter((l) => l.trimStart().startsWith('{'))).toEqual([]);
    expect(lines.filter((l, i) => l.trim() !== '' && l === lines[i - 1])).toEqual([]);
  }, 240_000);

  // Only root can switch users: elsewhere those tests are skipped in the clone as here.
  it.skipIf(!isRoot)(
    'the tests that run the CLI as another user (nobody, uid 1001) pass from it',
    async () => {
      const results = join(home, 'results.json');
      const tests = await inClone('npx', [
        'vitest',
        'run',
        'test/e2e/operator-messages.test.ts',
        'test/e2e/dify-env-cli.test.ts',
        '-t',
        "cannot write the storage folder|the README's compose steps",
        '--reporter=json',
        `--outputFile=${results}`,
      ]);
      const report = JSON.parse(await readFile(results, 'utf8').catch(() => '{}')) as {
        numPassedTests?: number;
        testResults?: { assertionResults: { fullName: string; status: string; failureMessages: string[] }[] }[];
      };
      const outcomes = (report.testResults ?? [])
        .flatMap((f) => f.assertionResults.filter((t) => t.status !== 'skipped'))
        .sort((a, b) => a.fullName.localeCompare(b.fullName));
      expect(
        outcomes.map((t) => ({ test: t.fullName, status: t.status, failure: t.failureMessages.join('\n').slice(0, 2000) })),
        tests.out.slice(-4000),
      ).toEqual([
        expect.objectContaining({ test: expect.stringMatching(/cannot write the storage folder/), status: 'passed' }),
        expect.objectContaining({ test: expect.stringMatching(/the README's compose steps/), status: 'passed' }),
      ]);
      expect(tests.code, tests.out.slice(-4000)).toBe(0);
    },
    600_000,
  );
});
