// What an operator does to a running or finished batch: retry its failed rows, cancel what is
// still waiting, undo a cancel. PostgreSQL is the record; Redis only gets the jobs.
import type { Queue } from 'bullmq';
import type { Db } from '../db/pool.js';
import { batchOptions, markCancelled, recordAsked, reopenBatch } from '../store/batches.js';
import { cancelQueued, requeue, requeueLines } from '../store/rows.js';
import { DEFAULT_RETRY, jobFor, jobIdFor, type AnyJob, type RetryPolicy } from './contract.js';
import { settleLostJobs, type QueueDeps } from './lost-jobs.js';

async function retryPolicyOf(db: Db, batchId: string): Promise<RetryPolicy> {
  return (await batchOptions<{ retry: RetryPolicy }>(db, batchId)).retry ?? DEFAULT_RETRY;
}

/** What retry and resume may add to the batch. */
export interface RequeueOptions {
  /**
   * Addresses the operator confirmed are their person (--trust-account, as ingest's and apply's):
   * recorded with the batch, and each row queued again trusts those of them it names.
   */
  trustAccounts?: string[];
  /**
   * Create the accounts the rows name that do not exist (--create-missing-owners, as ingest's and
   * apply's: pending, as Dify's invite makes them): recorded with the batch, and every row queued
   * again by this call creates them.
   */
  createMissingOwners?: boolean;
}

/**
 * The batch's retry policy; the addresses for the rows (lower-case, once each), each row queued
 * again trusting those of them it names; and `record`, run once rows were queued: the options
 * asked recorded with the batch (trustAccounts as asked, after those it trusted already, an
 * address once ignoring case; createMissingOwners). A call that queues nothing records nothing.
 */
async function prepareRequeue(
  db: Db,
  batchId: string,
  opts: RequeueOptions,
): Promise<{ retry: RetryPolicy; trusted: string[]; createMissing: boolean; record: () => Promise<void> }> {
  const options = await batchOptions<{ retry: RetryPolicy; asked: { trustAccounts?: string[] } }>(db, batchId);
  const added = opts.trustAccounts ?? [];
  const createMissing = opts.createMissingOwners === true;
  const record = async () => {
    const patch: { trustAccounts?: string[]; createMissingOwners?: true } = {};
    const had = options.asked?.trustAccounts ?? [];
    const known = new Set(had.map((e) => e.toLowerCase()));
    const more: string[] = [];
    for (const e of added) {
      if (known.has(e.toLowerCase())) continue;
      known.add(e.toLowerCase());
      more.push(e);
    }
    if (more.length > 0) patch.trustAccounts = [...had, ...more];
    if (createMissing) patch.createMissingOwners = true;
    // One statement for both.
    if (Object.keys(patch).length > 0) await recordAsked(db, batchId, patch);
  };
  return { retry: options.retry ?? DEFAULT_RETRY, trusted: [...new Set(added.map((e) => e.toLowerCase()))], createMissing, record };
}

async function requeueRows(
  db: Db,
  queue: Queue,
  batchId: string,
  from: 'failed' | 'cancelled',
  opts: RequeueOptions = {},
): Promise<number> {
  const { retry, trusted, createMissing, record } = await prepareRequeue(db, batchId, opts);
  const rows = await requeue<AnyJob>(db, batchId, from, trusted, createMissing);
  if (rows.length > 0) {
    await record();
    await queue.addBulk(rows.map((r) => jobFor(r.spec, retry, r.round)));
  }
  await reopenBatch(db, batchId);
  return rows.length;
}

/** Queues the batch's failed rows again, as a new round (fresh job ids, fresh attempts). */
export const retryFailed = (db: Db, queue: Queue, batchId: string, opts?: RequeueOptions) =>
  requeueRows(db, queue, batchId, 'failed', opts);

/**
 * Queues these rows of the batch again (one row, or a selection), those failed or cancelled, as a
 * new round; returns the lines queued (a line of another outcome, or none of the batch's, is not).
 * `trustAccounts` as retryFailed's: recorded with the batch, each of these rows trusting those it names.
 */
export async function retryRows(db: Db, queue: Queue, batchId: string, lines: number[], opts: RequeueOptions = {}): Promise<number[]> {
  const { retry, trusted, createMissing, record } = await prepareRequeue(db, batchId, opts);
  const rows = await requeueLines<AnyJob>(db, batchId, lines, trusted, createMissing);
  if (rows.length > 0) {
    await record();
    await queue.addBulk(rows.map((r) => jobFor(r.spec, retry, r.round)));
    await reopenBatch(db, batchId);
  }
  return rows.map((r) => r.line).sort((a, b) => a - b);
}

/** What a retry or resume that queued `queued` rows says of the options it recorded (the CLI's and the API's answer). */
export const trustingWords = (opts: RequeueOptions, queued: number) =>
  queued === 0
    ? ''
    : (opts.trustAccounts?.length ? ` (the batch trusts ${opts.trustAccounts.join(', ')} now)` : '') +
      (opts.createMissingOwners ? ' (they create the accounts they name that do not exist)' : '');

/** Queues the batch's cancelled rows again (undoes a cancel), as a new round. */
export const resumeCancelled = (db: Db, queue: Queue, batchId: string, opts?: RequeueOptions) =>
  requeueRows(db, queue, batchId, 'cancelled', opts);

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
