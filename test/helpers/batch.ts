// Drive a batch in-process: ingest CSV text, run a worker until the batch is done.
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { readRows } from '../../src/csv/read-rows.js';
import { Queue } from 'bullmq';
import { openQueueRuntime } from '../../src/runtime.js';
import { difyIdentity } from '../../src/store/instance.js';
import { enqueueBatch, type EnqueueSummary } from '../../src/ingest/enqueue-batch.js';
import { waitForBatch, type BatchStatus } from '../../src/store/batches.js';
import { migrate } from '../../src/store/schema.js';
import type { KeySource } from '../../src/crypto/rsa-keys.js';
import { runWorker } from '../../src/worker/run-worker.js';
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
      { db: env.db, queue: rt.queue },
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

export async function runUntilDone(
  env: TestEnv,
  batchIds: string[],
  opts: { concurrency?: number; keys?: KeySource } = {},
): Promise<BatchStatus[]> {
  const worker = await runWorker(env.config, {
    concurrency: opts.concurrency ?? 4,
    logger: pino({ level: 'silent' }),
    ...(opts.keys ? { keys: opts.keys } : {}),
  });
  try {
    const out: BatchStatus[] = [];
    for (const id of batchIds) out.push(await waitForBatch(env.db, id, { intervalMs: 100 }));
    return out;
  } finally {
    await worker.close();
  }
}

export function csvOf(rows: Record<string, string>[]): string {
  const cols = Object.keys(rows[0] ?? { workspace_name: '', owner_email: '' });
  const cell = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return [cols.join(','), ...rows.map((r) => cols.map((c) => cell(r[c] ?? '')).join(','))].join('\n') + '\n';
}
