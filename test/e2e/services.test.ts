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
      await client.end();
      expect(rows[0].n).toBe(3);
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
