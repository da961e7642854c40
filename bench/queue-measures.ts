// Measures beside ingest, in a child process with the world's environment (bench.ts):
//   addbulk N: BullMQ's own addBulk of N small jobs (ids like ours, chunks of 1,000, 4 in flight)
//              on a queue of its own, removed afterwards: what a job per row costs at best here.
//   sweep:     one lost-job sweep's scan (every open row looked up in Redis, nothing changed) over
//              what the database and queue hold now.
// Prints one JSON line.
import { Queue } from 'bullmq';
import { loadConfig } from '../src/config/config.js';
import { openQueueRuntime } from '../src/runtime/runtime.js';
import { settleLostJobs } from '../src/queue/lost-jobs.js';
import { createLogger } from '../src/log/logger.js';

const [what, nArg] = process.argv.slice(2);
const rt = await openQueueRuntime(loadConfig(), { logger: createLogger('warn') });
try {
  if (what === 'addbulk') {
    const n = Number(nArg);
    const queue = new Queue(`addbulk-${Date.now()}`, { connection: rt.redis, prefix: rt.config.queuePrefix });
    const t0 = performance.now();
    const running = new Set<Promise<unknown>>();
    for (let i = 0; i < n; i += 1000) {
      const jobs = Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({
        name: 'bench',
        data: { i: i + j },
        opts: { jobId: `bench.${i + j}`, removeOnComplete: true },
      }));
      const p = queue.addBulk(jobs);
      running.add(p);
      void p.finally(() => running.delete(p));
      if (running.size >= 4) await Promise.race(running);
    }
    await Promise.all(running);
    const seconds = (performance.now() - t0) / 1000;
    await queue.obliterate({ force: true });
    await queue.close();
    process.stdout.write(`${JSON.stringify({ n, seconds, perSec: n / seconds })}\n`);
  } else if (what === 'sweep') {
    const t0 = performance.now();
    const found = await settleLostJobs(rt.db, rt, { idleSeconds: 0, mode: 'count' });
    const seconds = (performance.now() - t0) / 1000;
    process.stdout.write(`${JSON.stringify({ ...found, seconds })}\n`);
  } else throw new Error(`unknown measure ${what}`);
} finally {
  await rt.close();
}
