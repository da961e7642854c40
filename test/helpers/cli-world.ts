// For end-to-end tests that drive the CLI as separate processes: a fresh test env per test, the
// worker processes it starts (killed after each test), and the waits those tests share.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { getBatchStatus } from '../../src/store/batches.js';
import { csvOf, describeStuck, progressMark } from './batch.js';
import { runCli, startCli, type Background } from './cli.js';
import { createTestEnv, type TestEnv } from './test-env.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A condition to wait for; with `progress`, the wait lasts as long as progress keeps changing. */
export type Condition = (() => Promise<boolean>) & {
  /** A mark that changes whenever the awaited work moves (rows answered, attempts made). */
  progress?: () => Promise<string>;
  /** What is stuck, for the failure message. */
  stuck?: () => Promise<string>;
};

/**
 * Waits until `check` holds. Without `progress`, for at most `ms`; with it, for as long as the
 * progress mark keeps changing: only `ms` without any change fails, naming what is stuck.
 */
export async function until(check: Condition, what: string, ms = 60_000): Promise<void> {
  let mark = await check.progress?.();
  let end = Date.now() + ms;
  while (!(await check())) {
    const now = await check.progress?.();
    if (now !== mark) {
      mark = now;
      end = Date.now() + ms;
    }
    if (Date.now() > end) {
      if (!check.progress) throw new Error(`timed out: ${what}`);
      throw new Error(`stalled: ${what}: nothing moved for ${ms / 1000} s\n${(await check.stuck?.()) ?? ''}`);
    }
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
    /** Whether `status --json` says the batch is done; a wait on it lasts while its rows move. */
    done: (batch: string): Condition =>
      Object.assign(async () => (JSON.parse((await runCli(['status', batch, '--json'], world.env.env)).stdout) as { done: boolean }).done, {
        progress: () => progressMark(world.env, [batch], []),
        stuck: async () => describeStuck(world.env, [batch], [await getBatchStatus(world.env.db, batch)]),
      }),
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
