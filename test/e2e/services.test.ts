import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { startCli } from '../helpers/cli.js';

describe('dify-provision services', () => {
  it("runs Redis and PostgreSQL with Dify's schema until signalled, then stops both and removes its folder", async () => {
    const parent = await mkdtemp(join(tmpdir(), 'svc-'));
    await chmod(parent, 0o755);
    const dir = join(parent, 'services');
    const svc = startCli(['services', '--dir', dir], process.env);
    try {
      for (let i = 0; i < 300 && !svc.output().includes('export DIFY_STORAGE_DIR'); i++) await new Promise((r) => setTimeout(r, 100));
      const url = /export DATABASE_URL=(\S+)/.exec(svc.output())?.[1];
      expect(url, svc.output()).toBeDefined();
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const { rows } = await client.query(
        `SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('tenants', 'accounts', 'tenant_account_joins')`,
      );
      expect(rows[0].n).toBe(3);
      // The printed way to get the demo's sample accounts, run as a shell runs it with the exported URL.
      const seed = /^# the demo's ten sample accounts[^:]*: (psql .+)$/m.exec(svc.output())?.[1];
      expect(seed, svc.output()).toBeDefined();
      execFileSync('sh', ['-c', seed!], { env: { ...process.env, DATABASE_URL: url }, stdio: 'pipe' });
      const seeded = await client.query(`SELECT count(*)::int AS n FROM accounts WHERE email = 'ana@acme.example'`);
      await client.end();
      expect(seeded.rows[0].n).toBe(1);
      await new Promise((r) => setTimeout(r, 500));
      expect(svc.child.exitCode).toBeNull(); // still serving
      expect(await svc.stop('SIGTERM')).toBe(0);
      expect(existsSync(dir)).toBe(false);
    } finally {
      await svc.stop('SIGKILL');
      await rm(parent, { recursive: true, force: true });
    }
  });
});

describe('dify-provision services --dify-schema', () => {
  it("starts an older Dify's schema in a folder of its own under the temp dir, and names the band", async () => {
    const svc = startCli(['services', '--dify-schema', '1.9'], process.env);
    try {
      for (let i = 0; i < 300 && !svc.output().includes('Ctrl-C stops'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(svc.output()).toContain('Dify schema: 1.7.0 – 1.10.0 (one auto-upgrade strategy row, varchar[] lists)');
      const url = /export DATABASE_URL=(\S+)/.exec(svc.output())![1]!;
      const dir = /removes (\S+)/.exec(svc.output())![1]!;
      expect(dir.startsWith(tmpdir())).toBe(true);
      expect(existsSync(join(dir, 'storage'))).toBe(true);
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const { rows } = await client.query(
        `SELECT data_type FROM information_schema.columns WHERE table_name = 'tenant_plugin_auto_upgrade_strategies' AND column_name IN ('exclude_plugins', 'category')`,
      );
      await client.end();
      expect(rows).toEqual([{ data_type: 'ARRAY' }]);
      expect(await svc.stop('SIGTERM')).toBe(0);
      expect(existsSync(dir)).toBe(false);
    } finally {
      await svc.stop('SIGKILL');
    }
  });
});
