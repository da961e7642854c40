// Rows PostgreSQL holds open (queued or active) whose job Redis no longer has — a Redis flushed,
// or failed over without persistence, a queueing step that never ran — found by their job ids
// and queued again from the record: the spec and round stored for the row, under the same job id
// (adding an id that exists is a no-op), so a row is never queued twice.
import type { Queue } from 'bullmq';
import type { Db, Tx } from '../db/pool.js';
import type { RedisClient } from './connection.js';
import { failIfOpen, openRowsPage, settleLostRows, specsOf, type OpenRow } from '../store/rows.js';
import { DEFAULT_RETRY, jobFor, jobIdFor, type AnyJob } from './contract.js';

export interface LostJobs {
  /** Open rows looked at. */
  open: number;
  /** Open rows whose job Redis does not have (queued again, cancelled or counted, by mode). */
  lost: number;
  /** Open rows whose job Redis holds as failed (a failure never recorded): recorded failed now. */
  failed: number;
  /** With maxRows: the last row looked at, when rows after it were left for the next call. */
  next?: { batchId: string; line: number };
}

/** This Dify's queue and the Redis connection it uses (job keys are read directly, pipelined). */
export interface QueueDeps {
  queue: Queue;
  redis: RedisClient;
}

type JobState = { kind: 'missing' } | { kind: 'live' } | { kind: 'failed'; reason: string };

/** Each job's state, in one pipelined round trip (the keys share the queue's hash tag). */
async function jobStates({ queue, redis }: QueueDeps, ids: string[]): Promise<JobState[]> {
  const pipe = redis.pipeline();
  for (const id of ids) pipe.hmget(queue.toKey(id), 'timestamp', 'finishedOn', 'failedReason');
  const answers = (await pipe.exec()) ?? [];
  return answers.map(([err, value]: [Error | null, unknown]): JobState => {
    if (err) throw err;
    const [timestamp, finishedOn, failedReason] = value as [string | null, string | null, string | null];
    if (timestamp === null) return { kind: 'missing' };
    if (finishedOn !== null && failedReason !== null) return { kind: 'failed', reason: failedReason };
    return { kind: 'live' };
  });
}

/**
 * Finds the open rows (of one batch, or all) that have no live job and, by `mode`: queues them
 * again (`queue`), cancels them (`cancel`), or only counts them (`count`). Rows untouched for
 * less than `idleSeconds` are left alone. One PostgreSQL and one Redis round trip per page.
 */
export async function settleLostJobs(
  db: Db | Tx,
  deps: QueueDeps,
  opts: {
    batchId?: string;
    idleSeconds: number;
    mode: 'queue' | 'cancel' | 'count';
    pageSize?: number;
    /** Start after this row (a sweep's turn goes on where the last one stopped). */
    after?: { batchId: string; line: number };
    /** Look at this many open rows at most; `next` says where to go on. */
    maxRows?: number;
  },
): Promise<LostJobs> {
  const result: LostJobs = { open: 0, lost: 0, failed: 0 };
  let after = opts.after;
  for (;;) {
    if (opts.maxRows !== undefined && result.open >= opts.maxRows) return { ...result, ...(after ? { next: after } : {}) };
    const page = await openRowsPage(db, {
      ...(opts.batchId !== undefined ? { batchId: opts.batchId } : {}),
      ...(after ? { after } : {}),
      idleSeconds: opts.idleSeconds,
      limit: Math.min(opts.pageSize ?? 1000, (opts.maxRows ?? Infinity) - result.open),
    });
    if (page.length === 0) return result;
    const last = page[page.length - 1]!;
    after = { batchId: last.batchId, line: last.line };
    result.open += page.length;
    const states = await jobStates(
      deps,
      page.map((r) => jobIdFor(r.batchId, r.key, r.round)),
    );
    const lost: OpenRow[] = [];
    for (const [i, state] of states.entries()) {
      const row = page[i]!;
      if (state.kind === 'missing') lost.push(row);
      else if (state.kind === 'failed') {
        result.failed++;
        if (opts.mode !== 'count') await failIfOpen(db, row.batchId, row.line, `its job failed: ${state.reason}`, { round: row.round });
      }
    }
    result.lost += lost.length;
    if (lost.length === 0 || opts.mode === 'count') continue;
    if (opts.mode === 'cancel') {
      await settleLostRows(db, lost, 'cancelled');
      continue;
    }
    if (lost.some((r) => r.outcome === 'active')) await settleLostRows(db, lost, 'queued');
    for (const group of bySize(lost, SPECS_PER_READ)) {
      const specs = await specsOf<AnyJob>(db, group);
      await deps.queue.addBulk(group.map((r, i) => jobFor(specs[i]!, r.retry ?? DEFAULT_RETRY, r.round)));
    }
  }
}

/** Specs read and queued at once, in stored (compressed) bytes: rows of 500 members stay within the CLI's heap. */
const SPECS_PER_READ = 512 << 10;

/** Consecutive groups whose stored spec sizes add up to at most `budget` (at least one row each). */
function bySize(rows: OpenRow[], budget: number): OpenRow[][] {
  const groups: OpenRow[][] = [];
  let group: OpenRow[] = [];
  let bytes = 0;
  for (const row of rows) {
    if (group.length > 0 && bytes + row.specBytes > budget) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(row);
    bytes += row.specBytes;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}
