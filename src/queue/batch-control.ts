// What an operator does to a running or finished batch: retry its failed rows, cancel what is
// still waiting. PostgreSQL is the record; Redis only gets the jobs.
import type { Queue } from 'bullmq';
import type { Db } from '../db/pool.js';
import { SCHEMA } from '../results/migrate.js';
import { DEFAULT_RETRY, jobIdFor, type JobData, type RetryPolicy } from './contract.js';
import { jobFor } from './enqueue-batch.js';

async function retryPolicyOf(db: Db, batchId: string): Promise<RetryPolicy> {
  const { rows } = await db.query<{ retry: RetryPolicy | null }>(`SELECT options -> 'retry' AS retry FROM ${SCHEMA}.batches WHERE id = $1`, [batchId]);
  if (rows.length === 0) throw new Error(`no batch "${batchId}"`);
  return rows[0]!.retry ?? DEFAULT_RETRY;
}

/** Queues the batch's failed rows again, as a new round (fresh job ids, fresh attempts). */
export async function retryFailed(db: Db, queue: Queue, batchId: string): Promise<number> {
  const retry = await retryPolicyOf(db, batchId);
  const { rows } = await db.query<{ spec: JobData; round: number }>(
    `UPDATE ${SCHEMA}.rows
        SET outcome = 'queued', round = round + 1, error = NULL, attempts = 0, finished_at = NULL, updated_at = now()
      WHERE batch_id = $1 AND outcome = 'failed' AND spec IS NOT NULL
      RETURNING spec, round`,
    [batchId],
  );
  if (rows.length > 0) await queue.addBulk(rows.map((r) => jobFor(r.spec, retry, r.round)));
  await db.query(`UPDATE ${SCHEMA}.batches SET finished_at = NULL WHERE id = $1`, [batchId]);
  return rows.length;
}

/** Cancels every row still waiting; rows being processed finish. Returns how many were cancelled. */
export async function cancelBatch(db: Db, queue: Queue, batchId: string): Promise<number> {
  await retryPolicyOf(db, batchId); // the batch exists
  await db.query(`UPDATE ${SCHEMA}.batches SET cancelled_at = COALESCE(cancelled_at, now()) WHERE id = $1`, [batchId]);
  const { rows } = await db.query<{ spec: JobData; round: number }>(
    `UPDATE ${SCHEMA}.rows SET outcome = 'cancelled', error = 'cancelled before it ran', finished_at = now(), updated_at = now()
      WHERE batch_id = $1 AND outcome = 'queued'
      RETURNING spec, round`,
    [batchId],
  );
  // A worker that still picks one of these up sees the row cancelled and skips it.
  for (const r of rows) await queue.remove(jobIdFor(r.spec.batchId, r.spec.key, r.round)).catch(() => 0);
  return rows.length;
}
