// Drive a batch in-process: ingest CSV text, run a worker until the batch is done. A batch that
// stops moving fails its test quickly, naming the rows that are stuck and what Redis holds for them.
import { Readable, Writable } from 'node:stream';
import { pino } from 'pino';
import { readRows } from '../../src/input/read-rows.js';
import { Queue } from 'bullmq';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { difyIdentity } from '../../src/store/instance.js';
import { enqueueBatch, type EnqueueSummary } from '../../src/ingest/enqueue-batch.js';
import { getBatchStatus, type BatchStatus } from '../../src/store/batches.js';
import { migrate } from '../../src/store/schema.js';
import type { KeySource } from '../../src/crypto/rsa-keys.js';
import { jobIdFor } from '../../src/queue/contract.js';
import { runWorker, type RunWorkerOptions } from '../../src/worker/run-worker.js';
import type { TestEnv } from './test-env.js';

export async function ingestCsv(
  env: TestEnv,
  csv: string,
  batchId: string,
  opts: { attempts?: number; backoffMs?: number; createMissingOwners?: boolean } = {},
): Promise<EnqueueSummary> {
  const rt = await openQueueRuntime(env.config, { logger: pino({ level: 'silent' }) });
  try {
    return await enqueueBatch(
      readRows(Readable.from([Buffer.from(csv)])),
      { db: env.db, queue: rt.queue, redis: rt.redis, lineage: () => rt.server.state.server.lineage },
      {
        batchId,
        retry: { attempts: opts.attempts ?? 5, backoffMs: opts.backoffMs ?? 50 },
        createMissingOwners: opts.createMissingOwners ?? false,
      },
    );
  } finally {
    await rt.close();
  }
}

/** The test env's own queue (named after its Dify database's identity), for tests that reach into Redis. */
export async function envQueue(env: TestEnv): Promise<Queue> {
  await migrate(env.db);
  const { queueName } = await difyIdentity(env.db);
  return new Queue(queueName, { connection: env.redis.duplicate(), prefix: env.config.queuePrefix });
}

export interface RunOptions {
  concurrency?: number;
  keys?: KeySource;
  /** Another configuration than the env's own (an object store, a key file owner). */
  config?: TestEnv['config'];
  /** Wraps the worker's key storage (a test that makes the deployed key wrong). */
  wrapStorage?: RunWorkerOptions['wrapStorage'];
  /** See waitUntilDone. */
  stallMs?: number;
}

export async function runUntilDone(env: TestEnv, batchIds: string[], opts: RunOptions = {}): Promise<BatchStatus[]> {
  const worker = await runWorker(opts.config ?? env.config, {
    concurrency: opts.concurrency ?? 4,
    logger: pino({ level: 'silent' }),
    ...(opts.keys ? { keys: opts.keys } : {}),
    ...(opts.wrapStorage ? { wrapStorage: opts.wrapStorage } : {}),
  });
  try {
    return await waitUntilDone(env, batchIds, opts.stallMs === undefined ? {} : { stallMs: opts.stallMs });
  } finally {
    await worker.close();
  }
}

/** Runs a worker (debug logs kept, sweeping every 200 ms) on `config` until the batches are done; returns its logs. */
export async function runLoggedUntilDone(env: TestEnv, config: TestEnv['config'], batchIds: string[]): Promise<string> {
  let logs = '';
  const worker = await runWorker(config, {
    concurrency: 2,
    logger: pino({ level: 'debug' }, new Writable({ write: (c, _e, cb) => ((logs += String(c)), cb()) })),
    sweep: { intervalMs: 200, idleSeconds: 0 },
  });
  try {
    await waitUntilDone(env, batchIds);
  } finally {
    await worker.close();
  }
  return logs;
}

/**
 * Waits for the batches to be done (every row answered, ingest finished). While rows keep moving
 * (a new outcome, a new attempt) it waits as long as it takes, however busy the machine; once no
 * row of these batches has changed for `stallMs` (default 20 s) it throws, listing each open row
 * with its state, attempts and last error, and its job's state in Redis.
 */
export async function waitUntilDone(env: TestEnv, batchIds: string[], opts: { stallMs?: number } = {}): Promise<BatchStatus[]> {
  const stallMs = opts.stallMs ?? 20_000;
  let seen = '';
  let movedAt = Date.now();
  for (;;) {
    const statuses = await Promise.all(batchIds.map((id) => getBatchStatus(env.db, id)));
    if (statuses.every((s) => s?.done)) return statuses as BatchStatus[];
    const now = await progressMark(env, batchIds, statuses);
    if (now !== seen) {
      seen = now;
      movedAt = Date.now();
    } else if (Date.now() - movedAt > stallMs) {
      throw new Error(`batch(es) stopped moving: no row changed for ${stallMs / 1000} s\n${await describeStuck(env, batchIds, statuses)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Changes whenever a row of these batches moves (outcome, attempt, any update) or ingest progresses. */
export async function progressMark(env: TestEnv, batchIds: string[], statuses: (BatchStatus | undefined)[]): Promise<string> {
  const { rows } = await env.db.query(
    `SELECT count(*)::int AS n, sum(attempts)::int AS attempts, max(updated_at) AS updated
       FROM dify_provision.rows WHERE batch_id = ANY($1)`,
    [batchIds],
  );
  return JSON.stringify([rows[0], statuses.map((s) => (s ? [s.ingested, s.counts] : null))]);
}

export async function describeStuck(env: TestEnv, batchIds: string[], statuses: (BatchStatus | undefined)[]): Promise<string> {
  const lines = batchIds.map((id, i) => {
    const s = statuses[i];
    if (!s) return `batch ${id}: not recorded at all (was it ingested?)`;
    const counts = Object.entries(s.counts)
      .filter(([, n]) => n > 0)
      .map(([o, n]) => `${o} ${n}`)
      .join(', ');
    return `batch ${id}: ${s.ingested ? 'ingested' : 'ingest not finished'}; ${counts || 'no rows'}`;
  });
  const { rows } = await env.db.query<{
    batch_id: string;
    line: number;
    outcome: string;
    attempts: number;
    error: string | null;
    idempotency_key: string | null;
    round: number;
    idle: number;
  }>(
    `SELECT batch_id, line, outcome, attempts, error, idempotency_key, round,
            extract(epoch FROM now() - updated_at)::int AS idle
       FROM dify_provision.rows WHERE batch_id = ANY($1) AND outcome IN ('queued', 'active')
      ORDER BY batch_id, line LIMIT 20`,
    [batchIds],
  );
  await migrate(env.db);
  const connection = env.redis.duplicate();
  const queue = new Queue((await difyIdentity(env.db)).queueName, { connection, prefix: env.config.queuePrefix });
  try {
    for (const r of rows) {
      const job = r.idempotency_key ? await queue.getJob(jobIdFor(r.batch_id, r.idempotency_key, r.round)) : undefined;
      const inRedis = job
        ? `job ${job.id} is ${await job.getState()} (attempts made ${job.attemptsMade}${job.failedReason ? `, failed: ${job.failedReason}` : ''})`
        : 'no job in Redis for it';
      lines.push(
        `  ${r.batch_id} line ${r.line}: ${r.outcome}, ${r.attempts} attempt(s), unchanged for ${r.idle} s` +
          `${r.error ? `, last error: ${r.error}` : ''}; ${inRedis}`,
      );
    }
    lines.push(`  queue ${queue.name}: ${JSON.stringify(await queue.getJobCounts())}`);
  } finally {
    await queue.close();
    connection.disconnect();
  }
  return lines.join('\n');
}

export function csvOf(rows: Record<string, string>[]): string {
  const cols = Object.keys(rows[0] ?? { workspace_name: '', owner_email: '' });
  const cell = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return [cols.join(','), ...rows.map((r) => cols.map((c) => cell(r[c] ?? '')).join(','))].join('\n') + '\n';
}
