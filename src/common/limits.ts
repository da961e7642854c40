// The documented bounds of one input and one batch, shared by the reading path and ingest, and of a killed worker's recovery.
import { InputTooLargeError } from './errors.js';

/** The default bounds of one batch (EnqueueOptions.maxRows, maxBytes; --max-rows, --max-bytes). */
export const BATCH_LIMITS = { rows: 1_000_000, bytes: 1 << 30 };

/** A byte count as people read it: "1 GiB", "64 MiB", or bytes. */
export const sizeWords = (n: number): string =>
  n % (1 << 30) === 0 ? `${n / (1 << 30)} GiB` : n % (1 << 20) === 0 ? `${n / (1 << 20)} MiB` : `${n} bytes`;

/** The bounds a reader holds an input to (the batch's --max-rows and --max-bytes). */
export interface HeldLimits {
  maxRows?: number;
  maxBytes?: number;
}

/**
 * What a reader keeps in memory across the rows of one input (the cross-row rules of a changes
 * file, the rows of a membership file sync reads whole), bounded by the batch's --max-rows and
 * --max-bytes: past either, InputTooLargeError names the line; nothing is queued.
 */
export class HeldRows {
  private rows = 0;
  private bytes = 0;
  private readonly maxRows: number;
  private readonly maxBytes: number;

  constructor(
    private readonly what: string,
    limits: HeldLimits = {},
  ) {
    this.maxRows = limits.maxRows ?? BATCH_LIMITS.rows;
    this.maxBytes = limits.maxBytes ?? BATCH_LIMITS.bytes;
  }

  /** One more row (line `line`) now held, and about `bytes` more bytes of it. */
  row(line: number, bytes = 0): void {
    this.rows++;
    if (this.rows > this.maxRows) throw new InputTooLargeError(this.what, line, `${this.maxRows} rows`, '--max-rows; library: maxRows');
    this.hold(line, bytes);
  }

  /** About `bytes` more bytes held for line `line`. */
  hold(line: number, bytes: number): void {
    this.bytes += bytes;
    if (this.bytes > this.maxBytes)
      throw new InputTooLargeError(this.what, line, `${sizeWords(this.maxBytes)} held in memory`, '--max-bytes; library: maxBytes');
  }
}

/** What one held string costs, roughly: its UTF-16 characters and a map entry's overhead. */
export const heldBytes = (...texts: (string | undefined)[]): number => texts.reduce((n, t) => n + 64 + 2 * (t?.length ?? 0), 0);

/**
 * BullMQ's lockDuration, and its stalledInterval (set to the same, D). A killed worker's job keeps
 * its lock until the lock expires (at most D after its last renewal, which happens every D / 2).
 * The stalled check runs every D in each worker, but at most once per D across them (a key in
 * Redis): it marks the jobs in the active list at one pass and moves those still without a lock
 * back to wait at a later one. The first check after the kill can be held back by the dead
 * worker's own key (up to 2D after the kill), it marks the job, and the next one (D later, by
 * then the lock has expired) moves it. So the job is back in the queue within 3D of the kill
 * (3 × 10 s = 30 s), taken at once by an idle worker; its row stays `active` until then. With
 * BullMQ's defaults (30 s each) that was up to 90 s; the ~75 s once seen was one of those.
 */
export const DEFAULT_LOCK_MS = 10_000;

/** Within how long a killed worker's jobs are back in the queue, for a lock duration (D above). */
export const recoveryBoundMs = (lockDurationMs = DEFAULT_LOCK_MS) => 3 * lockDurationMs;
