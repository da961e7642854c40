// Measures beside ingest, in a child process with the world's environment (bench.ts):
//   addbulk N: BullMQ's own addBulk of N small jobs (ids like ours, chunks of 1,000, 4 in flight)
//              on a queue of its own, removed afterwards: what a job per row costs at best here.
//   addbulk-ours N: the same with jobs shaped like ingest's (the job data and options jobFor makes
//              for a bench row), built in the loop as ingest builds them.
//   sweep N BATCH: one lost-job sweep's scan (every open row looked up in Redis, nothing changed)
//              over what the database and queue hold now, then the same scan again at once: a
//              second scan much faster than the first says the first paid a one-time cost (setting
//              the hint bits of freshly committed rows). Before each: the rows table's size and
//              autovacuum/autoanalyze counts, and one page of the scan in the middle of BATCH
//              (N rows) under EXPLAIN (ANALYZE, BUFFERS): its plan and the buffers it dirtied.
//              BENCH_SWEEP_TOUCH=count: first a sequential count(*) of the rows table (timed), as
//              an ingest touching its rows after COMMIT would (sets their hint bits); =analyze:
//              first ANALYZE of the rows table (fresh planner statistics, few hint bits).
// Prints one JSON line.
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Db } from '../src/db/pool.js';
import { loadConfig } from '../src/config/config.js';
import { openQueueRuntime } from '../src/runtime/runtime.js';
import { settleLostJobs } from '../src/queue/lost-jobs.js';
import { openRowsPage } from '../src/store/rows.js';
import { DEFAULT_RETRY, jobFor } from '../src/queue/contract.js';
import { randomUUID } from 'node:crypto';
import { createLogger } from '../src/log/logger.js';

const [what, nArg, batchArg] = process.argv.slice(2);
const rt = await openQueueRuntime(loadConfig(), { logger: createLogger('warn') });
try {
  if (what === 'addbulk' || what === 'addbulk-ours') {
    const ours = what === 'addbulk-ours';
    const n = Number(nArg);
    const queue = new Queue(`addbulk-${Date.now()}`, { connection: rt.redis, prefix: rt.config.queuePrefix });
    const redisCpu = async () => {
      const info = (await (rt.redis as Redis).info('cpu')) as string;
      const num = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
      return num('used_cpu_user') + num('used_cpu_sys');
    };
    const redis0 = await redisCpu();
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const running = new Set<Promise<unknown>>();
    for (let i = 0; i < n; i += 1000) {
      const jobs = Array.from({ length: Math.min(1000, n - i) }, (_, j) =>
        ours
          ? jobFor(benchSpec(i + j + 1), DEFAULT_RETRY)
          : { name: 'bench', data: { i: i + j }, opts: { jobId: `bench.${i + j}`, removeOnComplete: true } },
      );
      const p = queue.addBulk(jobs);
      running.add(p);
      void p.finally(() => running.delete(p));
      if (running.size >= 4) await Promise.race(running);
    }
    await Promise.all(running);
    const seconds = (performance.now() - t0) / 1000;
    const u = process.cpuUsage(cpu0);
    const redisSeconds = (await redisCpu()) - redis0;
    await queue.obliterate({ force: true });
    await queue.close();
    process.stdout.write(
      `${JSON.stringify({ n, seconds, perSec: n / seconds, clientCpu: (u.user + u.system) / 1e6, redisCpu: redisSeconds })}\n`,
    );
  } else if (what === 'sweep') {
    const middle = { batchId: batchArg ?? '', line: Math.floor(Number(nArg) / 2) };
    const timed = async <T>(f: () => Promise<T>) => {
      const t0 = performance.now();
      const r = await f();
      return { ...r, seconds: (performance.now() - t0) / 1000 };
    };
    const touching = process.env.BENCH_SWEEP_TOUCH;
    const touch = touching
      ? await timed(async () => ({
          kind: touching,
          table: await tableStats(rt.db),
          done: await rt.db.query(touching === 'analyze' ? `ANALYZE dify_provision.rows` : `SELECT count(*) FROM dify_provision.rows`),
        }))
      : undefined;
    const scans = [];
    for (let i = 0; i < 2; i++) {
      const table = await tableStats(rt.db);
      const page = await explainPage(rt.db, middle);
      scans.push({ ...(await timed(() => settleLostJobs(rt.db, rt, { idleSeconds: 0, mode: 'count' }))), table, page });
    }
    const [first, again] = scans;
    process.stdout.write(
      `${JSON.stringify({ ...first, again, after: await tableStats(rt.db), ...(touch ? { touch: { kind: touch.kind, seconds: touch.seconds, table: touch.table } } : {}) })}\n`,
    );
  } else throw new Error(`unknown measure ${what}`);
} finally {
  await rt.close();
}

/** A job spec as ingest makes it for a bench row (bench.ts writeCsv), for the addbulk-ours measure. */
function benchSpec(line: number) {
  return {
    batchId: 'addbulk-ours',
    line,
    key: `external:addbulk-${line}`,
    tenantId: randomUUID(),
    workspaceName: `Bench addbulk ${line}`,
    ownerEmail: `owner${((line - 1) % 200) + 1}@example.com`,
    plan: 'basic',
    members: [],
    externalId: `addbulk-${line}`,
    createMissingAccounts: false,
    mintDatasetKey: false,
    lineage: randomUUID(),
  };
}

/** The rows table's size, PostgreSQL's shared_buffers, and how often autovacuum and autoanalyze have run on it. */
async function tableStats(db: Db) {
  const { rows } = await db.query(
    `SELECT pg_table_size(relid) AS bytes, current_setting('shared_buffers') AS shared_buffers, n_live_tup,
            autovacuum_count, autoanalyze_count, n_mod_since_analyze
       FROM pg_stat_user_tables WHERE relid = 'dify_provision.rows'::regclass`,
  );
  return rows[0];
}

/** One page of the sweep's scan (openRowsPage, 1,000 rows after `after`) under EXPLAIN (ANALYZE, BUFFERS). */
async function explainPage(db: Db, after: { batchId: string; line: number }) {
  const explaining = {
    query: (text: string, values: unknown[]) => db.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`, values),
  } as unknown as Db;
  const [row] = await openRowsPage(explaining, { after, idleSeconds: 0, limit: 1000 });
  const plan = (row as unknown as { 'QUERY PLAN': { Plan: Record<string, unknown> }[] })['QUERY PLAN'][0]!.Plan;
  const nodes: string[] = [];
  const walk = (p: Record<string, unknown>) => {
    nodes.push(`${p['Node Type']}${p['Index Name'] ? ` ${p['Index Name']}` : ''}${p['Relation Name'] ? ` on ${p['Relation Name']}` : ''}`);
    for (const c of (p['Plans'] as Record<string, unknown>[] | undefined) ?? []) walk(c);
  };
  walk(plan);
  return {
    ms: plan['Actual Total Time'],
    nodes,
    hit: plan['Shared Hit Blocks'],
    read: plan['Shared Read Blocks'],
    dirtied: plan['Shared Dirtied Blocks'],
    written: plan['Shared Written Blocks'],
  };
}
