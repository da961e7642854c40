// Measures beside ingest, in a child process with the world's environment (bench.ts):
//   addbulk N: BullMQ's own addBulk of N small jobs (ids like ours, chunks of 1,000, 4 in flight)
//              on a queue of its own, removed afterwards: what a job per row costs at best here.
//   addbulk-ours N: the same with jobs shaped like ingest's (the job data and options jobFor makes
//              for a bench row), built in the loop as ingest builds them.
//   sweep:     one lost-job sweep's scan (every open row looked up in Redis, nothing changed) over
//              what the database and queue hold now.
// Prints one JSON line.
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { loadConfig } from '../src/config/config.js';
import { openQueueRuntime } from '../src/runtime/runtime.js';
import { settleLostJobs } from '../src/queue/lost-jobs.js';
import { DEFAULT_RETRY, jobFor } from '../src/queue/contract.js';
import { randomUUID } from 'node:crypto';
import { createLogger } from '../src/log/logger.js';

const [what, nArg] = process.argv.slice(2);
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
    const t0 = performance.now();
    const found = await settleLostJobs(rt.db, rt, { idleSeconds: 0, mode: 'count' });
    const seconds = (performance.now() - t0) / 1000;
    process.stdout.write(`${JSON.stringify({ ...found, seconds })}\n`);
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
