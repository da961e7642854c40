// For end-to-end tests that drive the CLI as separate processes: a fresh test env per test, the
// worker processes it starts (killed after each test), and the waits those tests share.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { csvOf } from './batch.js';
import { runCli, startCli, type Background } from './cli.js';
import { createTestEnv, type TestEnv } from './test-env.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(check: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(100);
  }
}

export function cliWorld(accounts = 40) {
  const procs: Background[] = [];
  const world = {
    env: undefined as unknown as TestEnv,
    /** A CSV of these rows in the test's folder. */
    async file(name: string, rows: Record<string, string>[]) {
      const path = join(world.env.dir, name);
      await writeFile(path, csvOf(rows));
      return path;
    },
    async rowsOf(batch: string) {
      const sql = `SELECT line, outcome, attempts, error, finished_at, updated_at FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`;
      return (await world.env.db.query(sql, [batch])).rows;
    },
    /** Whether `status --json` says the batch is done. */
    done: (batch: string) => async () =>
      (JSON.parse((await runCli(['status', batch, '--json'], world.env.env)).stdout) as { done: boolean }).done,
    worker(...args: string[]) {
      const w = startCli(['worker', ...args], world.env.env);
      procs.push(w);
      return w;
    },
  };
  beforeEach(async () => {
    world.env = await createTestEnv({ accounts });
  });
  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => p.stop('SIGKILL')));
    await world.env.cleanup();
  });
  return world;
}
