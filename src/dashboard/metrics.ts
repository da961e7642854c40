// Prometheus metrics, computed at scrape time from PostgreSQL (rows by outcome, durations of
// rows finished since the last scrape) and BullMQ (queue depth by state, workers serving the queue).
import type { Queue } from 'bullmq';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from '../db/pool.js';
import { finishedBetween, rowsByOutcome, type WorkerCensus } from '../store/batches.js';

export function createMetrics(db: Db, queue: Queue, workers: WorkerCensus): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'dify_provision_dashboard_' });
  new Gauge({
    name: 'dify_provision_rows',
    help: 'Input rows by outcome, across all batches',
    labelNames: ['outcome'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const r of await rowsByOutcome(db)) this.set({ outcome: r.outcome }, r.n);
    },
  });
  new Gauge({
    name: 'dify_provision_queue_jobs',
    help: 'BullMQ jobs in the provision queue by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'prioritized');
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'dify_provision_workers',
    help: "Workers serving this Dify's queue (absent when Redis does not list its clients)",
    registers: [registry],
    async collect() {
      this.reset();
      const n = await workers();
      if (typeof n === 'number') this.set(n);
    },
  });
  // Rows finished since the previous scrape are observed once per scrape, by whichever of these
  // three metrics is collected first (prom-client collects them concurrently): each awaits it.
  let since = new Date();
  let lag = 0;
  let syncing: Promise<void> | undefined;
  const sync = () =>
    (syncing ??= (async () => {
      const now = new Date();
      for (const r of await finishedBetween(db, since, now)) {
        finished.inc({ outcome: r.outcome });
        if (r.d !== null) durations.observe(r.d / 1000);
      }
      lag = (now.getTime() - since.getTime()) / 1000;
      since = now;
    })().finally(() => {
      syncing = undefined;
    }));
  const durations = new Histogram({
    name: 'dify_provision_job_duration_seconds',
    help: 'Time a worker spent on a row (its last attempt), observed as rows finish',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
    registers: [registry],
    collect: sync,
  });
  const finished = new Counter({
    name: 'dify_provision_rows_finished_total',
    help: 'Rows finished by workers since this dashboard started',
    labelNames: ['outcome'],
    registers: [registry],
    collect: sync,
  });
  new Gauge({
    name: 'dify_provision_metrics_scrape_lag_seconds',
    help: 'Seconds since the previous scrape (durations are observed between scrapes)',
    registers: [registry],
    async collect() {
      await sync();
      this.set(lag);
    },
  });
  return registry;
}
