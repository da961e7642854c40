// What every attempt of a row's job begins with, a new workspace's (provision-workspace.ts) or a
// change's (apply-change.ts): the row's answer carries the attempt and its time, and a job runs
// only if its row was queued on this server and the job is exactly what was recorded for it.
import { RowError } from '../common/errors.js';
import type { Finished, Started } from '../store/rows.js';

/** The job is not one our ingest recorded (added or edited in Redis by someone else). */
export class ForeignJobError extends RowError {
  /** The key and round of the row ingest recorded at the job's batch and line, if any. */
  constructor(
    readonly recordedKey: string | undefined,
    readonly recordedRound?: number,
  ) {
    super(
      'job',
      recordedKey !== undefined
        ? 'the job in Redis does not match the row ingest recorded (it was edited): nothing was created; `retry` queues the row again from the record'
        : 'no row recorded by ingest matches this job (added or edited in Redis by someone else): nothing was created',
    );
  }
}

/** The job is its row's own, but the row is not waiting to run (it failed; a copy of its job was queued again). */
export class NotQueuedError extends RowError {
  constructor(outcome: string) {
    super(
      'job',
      `the row is ${outcome}, not queued: only a row queued in its current round runs; nothing was created (\`retry\` queues a failed row again)`,
    );
  }
}

/** How long a job whose row is not visible yet waits for its batch's ingest to commit before it is handed back. */
export const BATCH_WAIT_MS = 2000;

/** The job's batch is still being recorded by an ingest (its row is not visible until the COMMIT): handed back, attempts not counted. */
export class BatchRecordingError extends Error {
  override readonly name: string = 'BatchRecordingError';
  constructor(batchId: string) {
    super(`batch ${batchId} is still being recorded: the job waits for its ingest to commit`);
  }
}

/** The job's row was queued on another PostgreSQL server (the one this database was copied from): left to it. */
export class OtherServerError extends Error {
  override readonly name: string = 'OtherServerError';
}

export type Answer = Omit<Finished, 'batchId' | 'line' | 'attempts' | 'durationMs'>;

/**
 * An attempt begun now: `answer` makes the row's answer (this attempt, the time since), and
 * `check` throws unless the row is this job's to run here (OtherServerError, ForeignJobError);
 * it returns whether the row was cancelled (nothing to do).
 */
export function beginAttempt(job: { batchId: string; line: number }, attempt: number) {
  const begun = performance.now();
  return {
    answer: (f: Answer): Finished => ({
      batchId: job.batchId,
      line: job.line,
      attempts: attempt,
      durationMs: performance.now() - begun,
      ...f,
    }),
    check(start: Started): boolean {
      if (!start.ours) throw new OtherServerError(`row ${job.batchId}:${job.line} was queued on another PostgreSQL server`);
      if (!start.matches) throw new ForeignJobError(start.recordedKey, start.recordedRound);
      return start.outcome === 'cancelled';
    },
  };
}
