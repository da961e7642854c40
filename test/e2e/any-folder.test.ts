// The README's first command from a fresh clone in a private folder (0700, which the postgres
// user cannot traverse), with no services started by hand.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/common/project-files.js';

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
  it('npm run demo provisions the sample batch, starting its own Redis and PostgreSQL', async () => {
    const home = await mkdtemp(join(tmpdir(), 'dify-provision-clone-'));
    try {
      expect((await stat(home)).mode & 0o777).toBe(0o700);
      const clone = join(home, 'dify-provision');
      const git = await run('git', ['clone', '--quiet', '--no-hardlinks', PACKAGE_ROOT, clone], home, process.env);
      expect(git.code, git.out).toBe(0);
      // npm ci would fetch the same packages again; the clone shares this checkout's.
      await symlink(join(PACKAGE_ROOT, 'node_modules'), join(clone, 'node_modules'));
      const { REDIS_URL: _r, DATABASE_URL: _d, DIFY_STORAGE_DIR: _s, ...env } = process.env;
      const demo = await run('npm', ['run', 'demo'], clone, env);
      expect(demo.code, demo.out).toBe(0);
      expect(demo.out).toMatch(
        /batch demo \(done with failures\): 17\/17 rows finished \(100%\): .*created 10, existing 0, rejected 5, failed 2/,
      );
      expect(demo.out).toContain('local services stopped');
      // Clean lines only: no worker JSON log among them, no progress line twice in a row.
      const lines = demo.out.split('\n');
      expect(lines.filter((l) => l.trimStart().startsWith('{'))).toEqual([]);
      expect(lines.filter((l, i) => l.trim() !== '' && l === lines[i - 1])).toEqual([]);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }, 240_000);
});
