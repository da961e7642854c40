// What an operator does to a running or finished batch: retry its failed rows, cancel what is
// still waiting, undo a cancel. PostgreSQL is the record; Redis only gets the jobs.
import type { Queue } from 'bullmq';
import type { Db } from '../db/pool.js';
import { batchOptions, markCancelled, reopenBatch } from '../store/batches.js';
import { cancelQueued, requeue, requeueLines } from '../store/rows.js';
import { DEFAULT_RETRY, jobFor, jobIdFor, type AnyJob, type RetryPolicy } from './contract.js';
import { settleLostJobs, type QueueDeps } from './lost-jobs.js';

async function retryPolicyOf(db: Db, batchId: string): Promise<RetryPolicy> {
  return (await batchOptions<{ retry: RetryPolicy }>(db, batchId)).retry ?? DEFAULT_RETRY;
}

async function requeueRows(db: Db, queue: Queue, batchId: string, from: 'failed' | 'cancelled'): Promise<number> {
  const retry = await retryPolicyOf(db, batchId);
  const rows = await requeue<AnyJob>(db, batchId, from);
  if (rows.length > 0) await queue.addBulk(rows.map((r) => jobFor(r.spec, retry, r.round)));
  await reopenBatch(db, batchId);
  return rows.length;
}

/** Queues the batch's failed rows again, as a new round (fresh job ids, fresh attempts). */
export const retryFailed = (db: Db, queue: Queue, batchId: string) => requeueRows(db, queue, batchId, 'failed');

/**
 * Queues these rows of the batch again (one row, or a selection), those failed or cancelled, as a
 * new round; returns the lines queued (a line of another outcome, or none of the batch's, is not).
 */
export async function retryRows(db: Db, queue: Queue, batchId: string, lines: number[]): Promise<number[]> {
  const retry = await retryPolicyOf(db, batchId);
  const rows = await requeueLines<AnyJob>(db, batchId, lines);
  if (rows.length > 0) {
    await queue.addBulk(rows.map((r) => jobFor(r.spec, retry, r.round)));
    await reopenBatch(db, batchId);
  }
  return rows.map((r) => r.line).sort((a, b) => a - b);
}

/** Queues the batch's cancelled rows again (undoes a cancel), as a new round. */
export const resumeCancelled = (db: Db, queue: Queue, batchId: string) => requeueRows(db, queue, batchId, 'cancelled');

/**
 * Cancels every row still waiting, and every row left active without a job (Redis lost it: no
 * worker will ever answer it); rows being processed finish. Returns how many were cancelled.
 */
export async function cancelBatch(db: Db, jobs: QueueDeps, batchId: string): Promise<number> {
  await retryPolicyOf(db, batchId); // the batch exists
  await markCancelled(db, batchId);
  const rows = await cancelQueued<AnyJob>(db, batchId);
  // A worker that still picks one of these up sees the row cancelled and skips it.
  for (const r of rows) await jobs.queue.remove(jobIdFor(r.spec.batchId, r.spec.key, r.round)).catch(() => 0);
  const lost = await settleLostJobs(db, jobs, { batchId, idleSeconds: 0, mode: 'cancel' });
  return rows.length + lost.lost;
}
