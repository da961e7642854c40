// The BullMQ processor: validates a job, provisions its workspace, and decides what a failure
// means: permanent (UnrecoverableError, recorded at once) or transient (retried with backoff).
import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';
import { answerWithin, isConnectionError, NO_ANSWER, type RedisClient } from '../queue/connection.js';
import { isPostgresUnreachable, type Db } from '../db/pool.js';
import type { Logger } from 'pino';
import { describeError, RowError } from '../common/errors.js';
import { ChangeJobSchema, JobDataSchema, jobIdFor, roundOfJobId, type AnyJob, type JobResult } from '../queue/contract.js';
import { failIfOpen, noteRetry, recordOutcome } from '../store/rows.js';
import type { ServerWatch } from '../queue/server-watch.js';
import { provisionWorkspace } from './provision-workspace.js';
import { BatchRecordingError, ForeignJobError, NotQueuedError, OtherServerError } from './attempt.js';
import { applyChange, WaitForRowError, type ChangeDeps } from './apply-change.js';
import { DEFAULT_LOCK_MS } from '../common/limits.js';

/** A job's data, by its kind: a change (apply) or a workspace to create (ingest). */
const parseJob = (data: unknown) =>
  typeof data === 'object' && data !== null && (data as { kind?: unknown }).kind === 'change'
    ? ChangeJobSchema.safeParse(data)
    : JobDataSchema.safeParse(data);

export interface ProcessorOptions {
  connection: RedisClient;
  prefix: string;
  /** This Dify's queue (store/instance.ts). */
  queueName: string;
  concurrency: number;
  /** Global rate limit across all workers: at most `max` jobs per `durationMs`. */
  limiter?: { max: number; durationMs: number };
  /** How long a job's lock lasts (DEFAULT_LOCK_MS); a killed worker's jobs are back in the queue within three times this (limits.ts). */
  lockDurationMs?: number;
  logger: Logger;
  /**
   * The server this worker runs on and who else claims the queue (queue/server-watch.ts): the
   * worker starts paused and takes jobs only while the gate is open; a job queued on another
   * server is handed back (delayed by `leaveMs`), neither run nor failed.
   */
  watch?: ServerWatch;
  /** How long a job left for another server waits before any worker sees it again (default 10 s). */
  leaveMs?: number;
}

/**
 * BullMQ's errors for a job whose lock vanished (Redis restarted or lost the key, or was away
 * longer than the lock): its bookkeeping, not the row's. The row's answer is in PostgreSQL by
 * then; the job goes back to the queue and runs again, and the ledger answers it.
 */
const LOST_LOCK = /^(?:Missing lock for job (\S+)\. (\w+)|could not renew lock for job (\S+)|Lock mismatch for job (\S+)\. Cmd (\w+))/;

/** What a lost lock means, for the log (undefined: another error). */
export function lostLockWords(err: unknown): { jobId: string; message: string } | undefined {
  const m = LOST_LOCK.exec((err as Error | undefined)?.message ?? '');
  if (!m) return undefined;
  const jobId = (m[1] ?? m[3] ?? m[4])!;
  const step = m[2] ?? m[5];
  return {
    jobId,
    message:
      `job ${jobId} lost its lock in Redis (Redis restarted or lost the key, or was away longer than the lock)` +
      (step ? `, so BullMQ could not record its ${step}` : ', so this worker could not keep it') +
      ": not data loss: the row's answer is in PostgreSQL; the job goes back to the queue and runs again, and the ledger answers it without writing anything twice",
  };
}

/** How long the probe after a failed attempt waits for PostgreSQL (postgresAway). */
const PROBE_MS = 5_000;

/**
 * Whether PostgreSQL does not answer now (a restart, a failover, a cut network): asked after an
 * attempt failed, so that an outage longer than a row's retries costs the row none of them.
 */
async function postgresAway(db: Db): Promise<boolean> {
  try {
    await answerWithin(db.query('SELECT 1'), PROBE_MS);
    return false;
  } catch (err) {
    return (err as Error).message === NO_ANSWER || isPostgresUnreachable(err);
  }
}

// PostgreSQL errors that no retry can fix: bad data (22…) and integrity violations (23…).
function isPermanent(err: unknown): boolean {
  if (err instanceof RowError) return true;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^2[23][0-9A-Z]{3}$/.test(code);
}

/** A job under its row's own id for the row's current round, but edited: the row fails, so `retry` can requeue it. */
const isOwnJob = (job: Job, batchId: string, err: ForeignJobError) =>
  err.recordedKey !== undefined && job.id === jobIdFor(batchId, err.recordedKey, err.recordedRound);

export function createProvisionWorker(deps: ChangeDeps, opts: ProcessorOptions): Worker<unknown, JobResult> {
  const log = opts.logger;
  const watch = opts.watch;
  // Back to the queue untouched (attempts not counted), for the server it was queued on.
  const leave = async (job: Job, token: string | undefined, why: string, ms = opts.leaveMs ?? 10_000): Promise<never> => {
    log.debug({ jobId: job.id, outcome: 'left' }, why);
    await job.moveToDelayed(Date.now() + ms, token);
    throw new DelayedError();
  };
  const processor = async (job: Job<unknown, JobResult>, token?: string): Promise<JobResult> => {
    const parsed = parseJob(job.data);
    if (!parsed.success) {
      const reason = `job ${job.id} carries malformed data (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}): refused, nothing was created`;
      log.warn({ jobId: job.id, outcome: 'refused' }, reason);
      // A row must always get an answer: if ingest recorded exactly this job (ingest and the
      // contract disagree), its row fails with the reason; a job nobody recorded answers nothing.
      const { batchId, line, key } = (job.data ?? {}) as { batchId?: unknown; line?: unknown; key?: unknown };
      const round = typeof batchId === 'string' && typeof key === 'string' ? roundOfJobId(job.id, batchId, key) : undefined;
      if (typeof batchId === 'string' && Number.isSafeInteger(line) && round !== undefined)
        await failIfOpen(deps.db, batchId, line as number, reason, { spec: job.data as object, round });
      throw new UnrecoverableError(reason);
    }
    const data: AnyJob = parsed.data;
    if (watch) {
      const { gate, server } = watch.state;
      if (gate !== 'open') return leave(job, token, `not taking jobs: ${gate}`);
      if (data.lineage && !server.chain.includes(data.lineage)) return leave(job, token, 'queued on another PostgreSQL server');
    }
    const attempt = job.attemptsMade + 1;
    const started = performance.now();
    const change = 'kind' in data;
    const what = change ? `change ${data.action}` : 'workspace';
    const fields = { batchId: data.batchId, line: data.line, tenantId: change ? data.workspaceId : data.tenantId, attempt };
    try {
      // Only the job id of the row's current round runs it (0: not one of this row's ids).
      const round = roundOfJobId(job.id, data.batchId, data.key) ?? 0;
      const outcome = change ? await applyChange(data, attempt, deps, round) : await provisionWorkspace(data, attempt, deps, round);
      const ms = Math.round(performance.now() - started);
      if (outcome.kind === 'cancelled') {
        log.info({ ...fields, ms, outcome: 'cancelled' }, `${what} skipped: batch row cancelled`);
        return { outcome: 'cancelled' };
      }
      log.info({ ...fields, tenantId: outcome.tenantId, ms, outcome: outcome.kind }, `${what} ${outcome.kind}`);
      return { outcome: outcome.kind, ...(outcome.tenantId ? { tenantId: outcome.tenantId } : {}) };
    } catch (err) {
      const reason = describeError(err);
      const ms = Math.round(performance.now() - started);
      // A change waiting for an earlier row of its file: back to the queue for a second, attempts not counted.
      if (err instanceof WaitForRowError) return leave(job, token, err.message, 1000);
      // Queued while its batch is recorded: back to the queue until the ingest's COMMIT.
      if (err instanceof BatchRecordingError) return leave(job, token, err.message, 3000);
      if (err instanceof OtherServerError) {
        // This server may have just restarted or taken over: look again before the next job.
        void watch?.refresh().catch(() => {});
        return leave(job, token, err.message);
      }
      if (err instanceof ForeignJobError || err instanceof NotQueuedError) {
        if (err instanceof ForeignJobError && isOwnJob(job, data.batchId, err)) await failIfOpen(deps.db, data.batchId, data.line, reason);
        log.warn({ jobId: job.id, batchId: data.batchId, line: data.line, outcome: 'refused' }, reason);
        throw new UnrecoverableError(reason);
      }
      const permanent = isPermanent(err);
      // PostgreSQL does not answer: not the row's failure, and nothing about the row can be written
      // now. Back to the queue, this attempt not counted, until it answers (the ledger makes the
      // run that follows harmless, whatever this one left behind).
      if (!permanent && (await postgresAway(deps.db))) {
        log.info({ ...fields, ms, error: reason }, `${what}: PostgreSQL does not answer; back to the queue, this attempt not counted`);
        return leave(job, token, 'PostgreSQL does not answer');
      }
      if (permanent || attempt >= (job.opts.attempts ?? 1)) {
        await recordOutcome(deps.db, {
          batchId: data.batchId,
          line: data.line,
          outcome: 'failed',
          attempts: attempt,
          durationMs: ms,
          error: reason,
          // A change refused in the workspace it found: the row names it (as one applied does).
          ...(err instanceof RowError && err.tenantId ? { tenantId: err.tenantId } : {}),
        });
        log.warn({ ...fields, ms, outcome: 'failed', error: reason }, `${what} failed`);
        throw permanent ? new UnrecoverableError(reason) : err;
      }
      // The database may be what failed; the row stays active until the retry.
      await noteRetry(deps.db, data.batchId, data.line, attempt, reason).catch(() => {});
      log.info({ ...fields, ms, error: reason }, `${what} attempt failed; will retry`);
      throw err;
    }
  };

  const worker = new Worker<unknown, JobResult>(opts.queueName, processor, {
    connection: opts.connection,
    prefix: opts.prefix,
    concurrency: opts.concurrency,
    ...(opts.limiter ? { limiter: { max: opts.limiter.max, duration: opts.limiter.durationMs } } : {}),
    // A job is safe to run twice (the ledger), so a worker killed mid-job may hand it back often.
    maxStalledCount: 10,
    // With a server watch, jobs are taken only once the gate opens (run-worker resumes it).
    ...(watch ? { autorun: false } : {}),
    lockDuration: opts.lockDurationMs ?? DEFAULT_LOCK_MS,
    stalledInterval: opts.lockDurationMs ?? DEFAULT_LOCK_MS,
  });
  // A job can also fail outside the processor (stalled too often): its row still needs an answer,
  // if the row holds exactly this job, in this round.
  worker.on('failed', (job, err) => {
    if (!job) return;
    const parsed = parseJob(job.data);
    const round = parsed.success ? roundOfJobId(job.id, parsed.data.batchId, parsed.data.key) : undefined;
    if (!parsed.success || round === undefined) return;
    void (async () => {
      if (await job.isFailed())
        await failIfOpen(deps.db, parsed.data.batchId, parsed.data.line, describeError(err), { spec: parsed.data, round });
    })().catch((e) => log.error({ jobId: job.id, error: describeError(e) }, 'could not record failure'));
  });
  // Connection errors repeat with every reconnection attempt: the worker's Redis watch says them once.
  worker.on('error', (err) => {
    const lost = lostLockWords(err);
    if (lost) log.warn({ jobId: lost.jobId, outcome: 'lock-lost' }, lost.message);
    else if (!isConnectionError(err)) log.error({ error: describeError(err) }, 'worker error');
  });
  return worker;
}
