// Workers look for rows that wait without a job (Redis flushed, or failed over without
// persistence, after they were queued) and queue them again: every `intervalMs`, one worker at a
// time (an advisory lock; the others skip their turn), for rows untouched for `idleSeconds`.
import type { Logger } from 'pino';
import { withTransaction, type Db } from '../db/pool.js';
import { describeError } from '../common/errors.js';
import { settleLostJobs, type LostJobs, type QueueDeps } from '../queue/lost-jobs.js';
import { trySweepLock } from '../store/locks.js';
import { analyzeRowsIfStale } from '../store/rows.js';
import type { Inviter } from '../invite/inviter.js';
import type { Revoker } from '../invite/revoke.js';
import type { DifyTasks } from './dify-tasks.js';

export interface SweepOptions {
  /** Default 60 s. */
  intervalMs?: number;
  /** Rows untouched for less than this are left to whoever is queueing them. Default 60 s. */
  idleSeconds?: number;
  /**
   * Open rows looked at in one turn, at most (default 100,000: a few seconds of PostgreSQL and
   * Redis a minute); the next turn goes on after the last one looked at, so a backlog of a
   * million waiting rows is looked through every ten turns instead of whole every minute.
   */
  rowsPerTurn?: number;
}

/** One sweep (or a turn of one: `maxRows` after `after`); undefined when another worker is sweeping. */
export async function sweepLostJobs(
  db: Db,
  jobs: QueueDeps,
  idleSeconds: number,
  turn: { after?: { batchId: string; line: number }; maxRows?: number } = {},
): Promise<LostJobs | undefined> {
  return withTransaction(db, async (tx) => {
    if (!(await trySweepLock(tx))) return undefined;
    // Fresh statistics first: a large batch's rows are paged through the open-rows index only then.
    await analyzeRowsIfStale(db).catch(() => false);
    // The lock's transaction only holds the lock: the rows are read and changed on the pool,
    // so no row stays locked while Redis is asked.
    return settleLostJobs(db, jobs, { idleSeconds, mode: 'queue', ...turn });
  });
}

/**
 * `inviter`: in its turn, the worker also stores the invitation tokens that a crash or an outage
 * of Dify's Redis left recorded but not stored (src/invite/inviter.ts); `revoker`, it deletes the
 * tokens of revocations left recorded (a removal on a worker without Dify's Redis, revoked links:
 * src/invite/revoke.ts); `difyTasks`, it queues the Celery tasks left recorded but not queued
 * (src/worker/dify-tasks.ts).
 */
export function startSweeping(
  db: Db,
  jobs: QueueDeps,
  log: Logger,
  opts: SweepOptions = {},
  inviter?: Inviter,
  difyTasks?: DifyTasks,
  revoker?: Revoker,
): { stop(): Promise<void> } {
  const intervalMs = opts.intervalMs ?? 60_000;
  let running: Promise<void> | undefined;
  let cursor: { batchId: string; line: number } | undefined;
  const sweep = () => {
    running ??= sweepLostJobs(db, jobs, opts.idleSeconds ?? 60, {
      ...(cursor ? { after: cursor } : {}),
      maxRows: opts.rowsPerTurn ?? 100_000,
    })
      .then(async (found) => {
        if (found) cursor = found.next;
        if (found && found.lost + found.failed > 0)
          log.warn(
            { requeued: found.lost, failed: found.failed },
            `${found.lost} row(s) waited without a job (Redis lost it) and were queued again; ${found.failed} whose failed job was never recorded were recorded failed`,
          );
        if (!found) return;
        if (difyTasks) {
          const queued = await difyTasks.completePending(db, { idleSeconds: opts.idleSeconds ?? 60 }).catch((err: unknown) => {
            log.warn({ error: describeError(err) }, "could not queue Dify's waiting default-plugin tasks on its broker; will try again");
            return 0;
          });
          if (queued > 0)
            log.warn({ queued }, `${queued} default-plugin task(s) recorded with their workspace were queued on Dify's broker now`);
        }
        if (revoker) {
          // Before storing waiting tokens: a link whose person joined another workspace outside our
          // rows (Dify's console) must not stay valid (docs/security.md).
          const stray = await revoker.revokeStray().catch((err: unknown) => {
            log.warn(
              { error: describeError(err) },
              'could not revoke invitation links whose person joined another workspace; will try again',
            );
            return 0;
          });
          if (stray > 0)
            log.warn(
              { revoked: stray },
              `${stray} invitation link(s) revoked: their person joined another workspace outside dify-provision`,
            );
          const revoked = await revoker.completeDue({ idleSeconds: opts.idleSeconds ?? 60 }).catch((err: unknown) => {
            log.warn({ error: describeError(err) }, "could not delete revoked invitation tokens from Dify's Redis; will try again");
            return 0;
          });
          if (revoked > 0) log.warn({ revoked }, `${revoked} recorded revocation(s) of invitation tokens were done in Dify's Redis now`);
        }
        if (!inviter) return;
        const stored = await inviter.completePending(db, { idleSeconds: opts.idleSeconds ?? 60 }).catch((err: unknown) => {
          log.warn({ error: describeError(err) }, "could not store waiting invitation tokens in Dify's Redis; will try again");
          return 0;
        });
        if (stored > 0) log.warn({ stored }, `${stored} invitation token(s) recorded with their workspace were stored in Dify's Redis now`);
      })
      .catch((err: unknown) => log.warn({ error: describeError(err) }, 'could not look for rows without a job; will try again'))
      .finally(() => {
        running = undefined;
      });
  };
  sweep();
  const timer = setInterval(sweep, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
