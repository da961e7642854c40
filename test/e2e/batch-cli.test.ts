import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectFile } from '../../src/common/project-files.js';
import { csvOf, envQueue } from '../helpers/batch.js';
import { NO_WORKER } from '../../src/store/batches.js';
import { runCli, startCli } from '../helpers/cli.js';
import { until } from '../helpers/cli-world.js';
import { useCliWorld } from '../helpers/cli-env.js';
import { spawn } from 'node:child_process';

const world = useCliWorld();

const dir = () => world.env.dir;
async function file(name: string, rows: Record<string, string>[]): Promise<string> {
  const path = join(dir(), `${world.env.name}-${name}.csv`);
  await writeFile(path, csvOf(rows));
  return path;
}

describe('batch commands from the CLI', () => {
  it('ingest --wait exits 0 when every row is created, 3 when one fails, and writes the reports', async () => {
    world.worker = startCli(['worker', '--concurrency', '4'], world.env.env);
    const good = await file('good', [
      { workspace_name: 'One', owner_email: 'owner1@example.com' },
      { workspace_name: 'Two', owner_email: 'owner2@example.com' },
    ]);
    const ok = await runCli(['ingest', good, '--wait', '--report-dir', dir(), '--batch-id', 'good'], world.env.env);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toContain('batch good done:');
    expect(ok.stdout).toMatch(/created\s+2/);
    expect(ok.stdout).toMatch(/^progress good: 2\/2 \(100%\)/m); // not a TTY: plain lines
    const report = JSON.parse(await readFile(join(dir(), 'good-report.json'), 'utf8'));
    expect(report.map((r: { outcome: string }) => r.outcome)).toEqual(['created', 'created']);

    const bad = await file('bad', [{ workspace_name: 'Ghost', owner_email: 'ghost@example.com' }]);
    const failed = await runCli(['ingest', bad, '--wait', '--json', '--report-dir', dir(), '--batch-id', 'bad'], world.env.env);
    expect(failed.code).toBe(3);
    expect(JSON.parse(failed.stdout)).toMatchObject({ batchId: 'bad', done: true, counts: { failed: 1 } });

    // wait on a finished batch answers at once, with the same exit code; it never writes over
    // the reports of an earlier run unless asked
    // the reports of an earlier run unless asked, saying the batch finished and the way out
    const kept = `dify-provision: ${join(dir(), 'good-report.csv')} exists already: batch good finished (done) but its report was not written: pass --overwrite to replace it, or --report-dir for another folder\n`;
    const again = await runCli(['wait', 'good', '--report-dir', dir()], world.env.env);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(kept);
    const reingested = await runCli(['ingest', good, '--wait', '--report-dir', dir(), '--batch-id', 'good'], world.env.env);
    expect(reingested.code).toBe(1);
    expect(reingested.stderr.endsWith(kept), reingested.stderr).toBe(true);
    expect((await runCli(['wait', 'good', '--report-dir', dir(), '--overwrite'], world.env.env)).code).toBe(0);
    expect((await runCli(['wait', 'bad', '--report-dir', dir(), '--overwrite'], world.env.env)).code).toBe(3);

    const csv = await runCli(['report', 'good', '--format', 'csv'], world.env.env);
    expect(csv.stdout.split('\r\n')[0]).toMatch(/^line,external_id,workspace_name/);
    const list = await runCli(['batches', '--json'], world.env.env);
    expect(
      JSON.parse(list.stdout)
        .map((b: { batchId: string; state: string }) => `${b.batchId}:${b.state}`)
        .sort(),
    ).toEqual(['bad:done-with-failures', 'good:done']);
    const human = await runCli(['status', 'bad'], world.env.env);
    expect(human.stdout).toMatch(/^batch bad \(done with failures\): 1\/1 rows finished/);
    expect(human.stdout).toMatch(/; 1 worker$/m);
  });

  it('a batch with no worker says so in status, batches and wait; stopping the worker stalls it again; cancel reads "cancelled"', async () => {
    const rows = [1, 2, 3].map((i) => ({ workspace_name: `Idle ${i}`, owner_email: `owner${i}@example.com` }));
    expect((await runCli(['ingest', await file('idle', rows), '--batch-id', 'idle'], world.env.env)).code).toBe(0);
    const status = async (batch: string) => JSON.parse((await runCli(['status', batch, '--json'], world.env.env)).stdout);
    expect(await status('idle')).toMatchObject({ state: 'stalled', workers: 0, done: false, advice: NO_WORKER });
    const human = await runCli(['status', 'idle'], world.env.env);
    expect(human.stdout).toContain(`batch idle (stalled): 0/3 rows finished (0%)`);
    expect(human.stdout).toContain(`\n${NO_WORKER}\n`);
    expect(human.stdout).toMatch(/; 0 workers$/m);
    const list = await runCli(['batches', '--json'], world.env.env);
    expect(JSON.parse(list.stdout)).toMatchObject([{ batchId: 'idle', state: 'stalled', workers: 0 }]);
    expect((await runCli(['batches'], world.env.env)).stdout).toContain(NO_WORKER);

    // wait says it (no rate, no ETA) and goes on once a worker starts.
    const waiting = startCli(['wait', 'idle', '--report-dir', dir()], world.env.env);
    try {
      await until(async () => waiting.output().includes(`progress idle: 0/3 (0%), stalled: ${NO_WORKER}, failed 0`), 'wait to say so');
      expect(waiting.output()).not.toMatch(/ETA/);
      world.worker = startCli(['worker', '--concurrency', '2'], world.env.env);
      expect(await waiting.exited).toBe(0);
    } finally {
      await waiting.stop('SIGKILL');
    }
    expect(waiting.output()).toContain('batch idle done:');
    expect(waiting.output()).toMatch(/^progress idle: 3\/3 \(100%\), [\d.]+\/s, ETA \S+ \(1 worker\), failed 0$/m);
    expect(await status('idle')).toMatchObject({ state: 'done', workers: 1, advice: null });

    // The only worker stops: a new batch is stalled again within a few seconds (its connection is gone at once).
    expect(await world.worker.stop('SIGTERM')).toBe(0);
    expect((await runCli(['ingest', await file('later', rows.slice(0, 2)), '--batch-id', 'later'], world.env.env)).code).toBe(0);
    expect(await status('later')).toMatchObject({ state: 'stalled', workers: 0 });
    expect(await status('idle')).toMatchObject({ state: 'done', workers: 0, advice: null }); // finished: nothing to wait for
    expect((await runCli(['cancel', 'later'], world.env.env)).code).toBe(0);
    expect(await status('later')).toMatchObject({ state: 'cancelled', done: true, advice: null });
  });

  it('ingest --max-rows/--max-bytes refuse a larger batch, queueing nothing; status says how many rows wait without a job', async () => {
    const rows = [1, 2, 3].map((i) => ({ workspace_name: `Capped ${i}`, owner_email: `owner${i}@example.com` }));
    const three = await file('capped', rows);
    const refused = await runCli(['ingest', three, '--batch-id', 'capped', '--max-rows', '2'], world.env.env);
    expect(refused.code, refused.stderr).toBe(1);
    expect(refused.stderr).toMatch(/batch "capped" is over its limit of 2 rows at line 4: nothing was queued/);
    const bytes = await runCli(['ingest', three, '--batch-id', 'capped', '--max-bytes', '1KiB'], world.env.env);
    expect(bytes.stderr).toMatch(/over its limit of 1024 bytes of rows at line 2: nothing was queued/);
    expect((await runCli(['ingest', three, '--max-bytes', 'lots'], world.env.env)).stderr).toMatch(/--max-bytes takes a size in bytes/);
    expect(JSON.parse((await runCli(['batches', '--json'], world.env.env)).stdout)).toEqual([]);

    expect((await runCli(['ingest', three, '--batch-id', 'capped', '--max-rows', '3'], world.env.env)).code).toBe(0);
    // Redis loses one of the jobs (no worker runs here).
    const queue = await envQueue(world.env);
    try {
      const [job] = await queue.getWaiting();
      await job!.remove();
    } finally {
      await queue.close();
    }
    const status = await runCli(['status', 'capped'], world.env.env);
    expect(status.stdout).toMatch(/^1 row\(s\) wait without a job in Redis/m);
    expect(JSON.parse((await runCli(['status', 'capped', '--json'], world.env.env)).stdout)).toMatchObject({ withoutJob: 1 });
  });

  it('ingest --strict from stdin queues nothing when a row is invalid', async () => {
    const r = await runCli(
      ['ingest', '-', '--strict', '--batch-id', 'strict'],
      world.env.env,
      'workspace_name,owner_email\nA,owner1@example.com\nB,bad\nC,\n',
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('line 3 (owner_email): is not a valid email address\nline 4 (owner_email): is not a valid email address\n');
    expect(r.stdout).toBe('--strict: 2 invalid row(s); nothing was queued\n');
    const status = await runCli(['status', 'strict'], world.env.env);
    expect(status.code).toBe(1);
    expect(status.stderr).toBe('dify-provision: no batch "strict"\n');
  });

  it('an ingest killed while recording leaves jobs without rows; the next ingest of the batch replaces them, so every job is its row', async () => {
    const rows = Array.from({ length: 1200 }, (_, i) => ({
      workspace_name: `Killed ${i + 1}`,
      owner_email: `owner${(i % 20) + 1}@example.com`,
    }));
    const csv = csvOf(rows);
    const queue = await envQueue(world.env);
    try {
      // The first 1,100 rows from stdin, which stays open: the first chunk (1,000 rows) is written
      // in the open transaction and its jobs are in Redis when the process is killed.
      const child = spawn(process.execPath, [projectFile('dist', 'src', 'cli', 'main.js'), 'ingest', '-', '--batch-id', 'killed'], {
        env: world.env.env,
        stdio: ['pipe', 'ignore', 'ignore'],
      });
      const exited = new Promise((r) => child.on('exit', r));
      child.stdin.write(csv.split('\n').slice(0, 1101).join('\n') + '\n');
      await until(async () => (await queue.getJobCounts('waiting')).waiting! >= 1000, 'the first chunk queued');
      child.kill('SIGKILL');
      await exited;
      // Nothing was committed; the dead ingest's jobs stay, under the ids its rows would have.
      await until(
        async () =>
          (await world.env.db.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'`))
            .rows.length === 0,
        'the killed ingest rolled back',
      );
      expect((await world.env.db.query(`SELECT count(*)::int AS n FROM dify_provision.rows`)).rows[0].n).toBe(0);
      const left = await queue.getWaiting(0, 2000);
      expect(left).toHaveLength(1000);

      const again = await runCli(['ingest', await file('killed', rows), '--batch-id', 'killed'], world.env.env);
      expect(again.code, again.stderr).toBe(0);
      const stored = new Map(
        (await world.env.db.query(`SELECT line, spec FROM dify_provision.rows WHERE batch_id = 'killed'`)).rows.map((r) => [
          r.line,
          r.spec,
        ]),
      );
      expect(stored.size).toBe(1200);
      const jobs = await queue.getWaiting(0, 2000);
      expect(jobs).toHaveLength(1200);
      for (const j of jobs) expect(j.data).toEqual(stored.get(j.data.line));
    } finally {
      await queue.close();
    }
  }, 120_000);

  it('runs the library example from samples/', async () => {
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [projectFile('dist', 'samples', 'library-example.js'), 'lib-example'], {
        env: { ...world.env.env, DIFY_PROVISION_LOG_LEVEL: 'warn' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain('queued 2, rejected 1');
    expect(out.stdout).toMatch(/^cust-1: created [0-9a-f-]{36}$/m);
    expect(out.stdout).toMatch(/^cust-2: created [0-9a-f-]{36}$/m);
    expect(out.stdout).toMatch(/^cust-3: rejected owner_email: is not a valid email address$/m);
  });
});
