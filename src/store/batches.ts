// Batches and their progress, from PostgreSQL: they outlive Redis' job cleanup and restarts.
import { isPostgresUnreachable, type Db, type Tx } from '../db/pool.js';
import { BatchConflictError, BatchNotFoundError } from '../common/errors.js';
import { OUTCOMES, SUCCEEDED, type BatchKind, type Outcome } from '../common/types.js';
import { SCHEMA } from './schema.js';

export type OutcomeCounts = Record<Outcome, number>;

/** Rows not answered yet: the one definition of "open". */
export const openRows = (counts: OutcomeCounts): number => counts.queued + counts.active;

/**
 * What a batch is doing: `stalled` has rows to answer and no worker serving its queue; a finished
 * batch is `done` (every row created, existing, applied or unchanged), `done-with-failures` (some row failed or was
 * rejected) or `cancelled` (some row was cancelled and not queued again).
 */
export const BATCH_STATES = ['ingesting', 'running', 'stalled', 'done', 'done-with-failures', 'cancelled'] as const;
export type BatchState = (typeof BATCH_STATES)[number];

export const NO_WORKER = 'no worker is running for this Dify: start `dify-provision worker`';
/** Said wherever a batch's progress is shown while Redis does not answer (the counts are PostgreSQL's). */
export const REDIS_UNREACHABLE = 'Redis is unreachable: no worker can take rows';

/**
 * Workers serving this Dify's queue, as the census found them: a count, null (Redis answers but
 * does not list its clients) or 'unreachable' (Redis does not answer: no worker can take a row).
 */
export type Workers = number | null | 'unreachable';

/** `workers`: how many serve this Dify's queue now (null: Redis does not say, never "stalled"). */
export function batchState(ingested: boolean, counts: OutcomeCounts, workers: Workers): BatchState {
  if (openRows(counts) > 0) return workers === 0 || workers === 'unreachable' ? 'stalled' : ingested ? 'running' : 'ingesting';
  if (!ingested) return 'ingesting';
  if (counts.cancelled > 0) return 'cancelled';
  return counts.failed + counts.rejected > 0 ? 'done-with-failures' : 'done';
}

/** The states in words, for people. */
export const STATE_WORDS: Record<BatchState, string> = {
  ingesting: 'ingesting',
  running: 'running',
  stalled: 'stalled',
  done: 'done',
  'done-with-failures': 'done with failures',
  cancelled: 'cancelled',
};

export interface BatchStatus {
  batchId: string;
  /** provision (ingest) or changes (apply). */
  kind: BatchKind;
  source: string | null;
  createdAt: Date;
  ingested: boolean;
  total: number;
  counts: OutcomeCounts;
  /** Rows still to be answered (queued or active). */
  open: number;
  /** Rows with their final answer. */
  finished: number;
  /** Every row has a final outcome and ingest has finished. */
  done: boolean;
  /** Every row succeeded: created or existing (provision), applied or unchanged (changes). */
  succeeded: boolean;
  state: BatchState;
  /** Workers serving this Dify's queue when the status was read (null: Redis does not say, or does not answer). */
  workers: number | null;
  /** Redis did not answer when the status was read: nothing moves, whatever the counts say. */
  redisUnreachable: boolean;
  /**
   * Rows `active` while Redis does not answer: not running for all anyone can tell (a worker may
   * still finish the job it holds, and its answer is in PostgreSQL); they wait for Redis. 0 while Redis answers.
   */
  waitingForRedis: number;
  /** What to do about the state, when something is needed (the missing worker, Redis down). */
  advice: string | null;
  /** The options the batch was made with (the library's names), as recorded; {} for a batch recorded before they were. */
  options: Record<string, unknown>;
  /** How its file was read (format, encoding, delimiter, sheet, empty rows), when it came from one. */
  input: Record<string, unknown> | null;
}

/**
 * Records a batch (a batch id that exists is left as it is). A batch id is one kind for good: a
 * change batch under the id of a provision batch (or the reverse) is refused.
 */
export async function createBatch(
  db: Db | Tx,
  batchId: string,
  source: string | undefined,
  options: object,
  kind: BatchKind = 'provision',
): Promise<boolean> {
  const { rows } = await db.query<{ created: boolean; kind: BatchKind }>(
    `WITH ins AS (
       INSERT INTO ${SCHEMA}.batches (id, source, options, kind) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING RETURNING kind
     )
     SELECT true AS created, kind FROM ins
     UNION ALL SELECT false, kind FROM ${SCHEMA}.batches WHERE id = $1`,
    [batchId, source ?? null, JSON.stringify(options), kind],
  );
  const had = rows[0]!;
  if (had.kind !== kind)
    throw new BatchConflictError(
      `batch "${batchId}" is a ${had.kind === 'changes' ? 'change' : 'provisioning'} batch already: nothing was queued; use a new batch id`,
    );
  return had.created;
}

/** What a batch does: provision (ingest) or changes (apply); provision for a batch not recorded. */
export async function batchKind(db: Db, batchId: string): Promise<BatchKind> {
  const { rows } = await db.query<{ kind: BatchKind }>(`SELECT kind FROM ${SCHEMA}.batches WHERE id = $1`, [batchId]);
  return rows[0]?.kind ?? 'provision';
}

/** The kind of each of these batches that is recorded (a batch not recorded is absent). */
export async function batchKinds(db: Db | Tx, batchIds: readonly string[]): Promise<Map<string, BatchKind>> {
  const { rows } = await db.query<{ id: string; kind: BatchKind }>(`SELECT id, kind FROM ${SCHEMA}.batches WHERE id = ANY($1::text[])`, [
    [...batchIds],
  ]);
  return new Map(rows.map((r) => [r.id, r.kind]));
}

/** The options a batch was ingested with (retry policy, seal key, …). */
export async function batchOptions<T extends object>(db: Db | Tx, batchId: string): Promise<Partial<T>> {
  const { rows } = await db.query<{ options: Partial<T> }>(`SELECT options FROM ${SCHEMA}.batches WHERE id = $1`, [batchId]);
  if (rows.length === 0) throw new BatchNotFoundError(batchId);
  return rows[0]!.options;
}

/**
 * Options a retry or resume added to the batch (`retry --trust-account`: the addresses it trusts now;
 * `--create-missing-owners`), recorded as asked: shown with its options like ingest's.
 */
export async function recordAsked(db: Db | Tx, batchId: string, patch: Record<string, unknown>): Promise<void> {
  await db.query(
    `UPDATE ${SCHEMA}.batches
        SET options = options || jsonb_build_object('asked', COALESCE(options -> 'asked', '{}') || $2::jsonb)
      WHERE id = $1`,
    [batchId, JSON.stringify(patch)],
  );
}

/** The batch runs again (rows were queued again): it is no longer finished nor cancelled. */
export async function reopenBatch(db: Db, batchId: string): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.batches SET finished_at = NULL, cancelled_at = NULL WHERE id = $1`, [batchId]);
}

/** The seal key a batch's links are sealed to, given after the fact (`invite <batch> --seal-to`): kept for resend. */
export async function keepSealKey(db: Db | Tx, batchId: string, publicPem: string): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.batches SET options = options || jsonb_build_object('sealTo', $2::text) WHERE id = $1`, [
    batchId,
    publicPem,
  ]);
}

/** How the batch's file was read (format, encoding, delimiter, sheet, empty rows): shown with its options. */
export async function recordInput(db: Db, batchId: string, input: object): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.batches SET options = options || jsonb_build_object('input', $2::jsonb) WHERE id = $1`, [
    batchId,
    JSON.stringify(input),
  ]);
}

export async function markCancelled(db: Db, batchId: string): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.batches SET cancelled_at = COALESCE(cancelled_at, now()) WHERE id = $1`, [batchId]);
}

/** Rows by outcome across all batches (metrics). */
export async function rowsByOutcome(db: Db): Promise<{ outcome: string; n: number }[]> {
  const { rows } = await db.query<{ outcome: string; n: number }>(
    `SELECT outcome, count(*)::int AS n FROM ${SCHEMA}.rows GROUP BY outcome`,
  );
  return rows;
}

/** Rows that workers finished in (since, until], with their last attempt's duration (metrics). */
export async function finishedBetween(db: Db, since: Date, until: Date): Promise<{ outcome: string; d: number | null }[]> {
  const { rows } = await db.query<{ outcome: string; d: number | null }>(
    `SELECT outcome, duration_ms AS d FROM ${SCHEMA}.rows
      WHERE finished_at > $1 AND finished_at <= $2 AND outcome IN ('created', 'existing', 'applied', 'unchanged', 'failed')`,
    [since, until],
  );
  return rows;
}

/** In the ingest's transaction; the clock's time, not the transaction's start (lost-job sweeps wait from it). */
export async function finishIngest(db: Db | Tx, batchId: string): Promise<void> {
  await db.query(
    `UPDATE ${SCHEMA}.batches
        SET ingest_finished_at = COALESCE(ingest_finished_at, clock_timestamp()),
            total_rows = (SELECT count(*) FROM ${SCHEMA}.rows WHERE batch_id = $1)
      WHERE id = $1`,
    [batchId],
  );
}

/** `workers`: how many serve the batch's queue now (null: unknown), for its state. */
export async function getBatchStatus(db: Db, batchId: string, workers: Workers = null): Promise<BatchStatus | undefined> {
  const { rows: batches } = await db.query<{
    id: string;
    kind: BatchKind;
    source: string | null;
    created_at: Date;
    ingest_finished_at: Date | null;
    asked: Record<string, unknown> | null;
    input: Record<string, unknown> | null;
  }>(
    `SELECT id, kind, source, created_at, ingest_finished_at, options -> 'asked' AS asked, options -> 'input' AS input
       FROM ${SCHEMA}.batches WHERE id = $1`,
    [batchId],
  );
  const batch = batches[0];
  if (!batch) return undefined;
  const { rows } = await db.query<{ outcome: Outcome; n: string }>(
    `SELECT outcome, count(*) AS n FROM ${SCHEMA}.rows WHERE batch_id = $1 GROUP BY outcome`,
    [batchId],
  );
  const counts = Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as OutcomeCounts;
  for (const r of rows) counts[r.outcome] = Number(r.n);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const open = openRows(counts);
  const ingested = batch.ingest_finished_at !== null;
  const done = ingested && open === 0;
  const state = batchState(ingested, counts, workers);
  return {
    batchId: batch.id,
    kind: batch.kind,
    source: batch.source,
    createdAt: batch.created_at,
    ingested,
    total,
    counts,
    open,
    finished: total - open,
    done,
    succeeded: done && SUCCEEDED.reduce((n, o) => n + counts[o], 0) === total,
    state,
    workers: workers === 'unreachable' ? null : workers,
    redisUnreachable: workers === 'unreachable',
    waitingForRedis: workers === 'unreachable' ? counts.active : 0,
    advice: state === 'stalled' ? (workers === 'unreachable' ? REDIS_UNREACHABLE : NO_WORKER) : null,
    options: batch.asked ?? {},
    input: batch.input,
  };
}

/** Counts the workers serving a queue (null: unknown); polled with every status. */
export type WorkerCensus = () => Promise<Workers>;
const unknownWorkers: WorkerCensus = async () => null;

/** Called on each poll PostgreSQL did not answer (a restart, a failover): why, in words. */
export type OnPostgresUnreachable = (why: string) => void;

/**
 * The batch's status every `intervalMs`, until (and including) the first one that is done. A
 * poll PostgreSQL does not answer (restarting, failing over, a dropped connection) is no end:
 * the batch goes on in the workers once it is back, so following it does too; `onUnreachable`
 * hears each such poll.
 */
export async function* batchProgress(
  db: Db,
  batchId: string,
  intervalMs = 500,
  workers: WorkerCensus = unknownWorkers,
  onUnreachable?: OnPostgresUnreachable,
): AsyncGenerator<BatchStatus> {
  for (;;) {
    let status: BatchStatus | undefined;
    try {
      status = await getBatchStatus(db, batchId, await workers());
    } catch (err) {
      if (!isPostgresUnreachable(err)) throw err;
      onUnreachable?.(`PostgreSQL does not answer (${(err as Error).message}): no row can move until it does; still waiting`);
      await new Promise((r) => setTimeout(r, intervalMs));
      continue;
    }
    if (!status) throw new BatchNotFoundError(batchId);
    yield status;
    if (status.done) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolves when the batch is done, calling `onProgress` on every poll. */
export async function waitForBatch(
  db: Db,
  batchId: string,
  opts: { intervalMs?: number; onProgress?: (s: BatchStatus) => void; workers?: WorkerCensus; onUnreachable?: OnPostgresUnreachable } = {},
): Promise<BatchStatus> {
  let last: BatchStatus | undefined;
  for await (const status of batchProgress(db, batchId, opts.intervalMs, opts.workers, opts.onUnreachable)) {
    opts.onProgress?.(status);
    last = status;
  }
  return last!;
}

export interface BatchListing {
  batchId: string;
  kind: BatchKind;
  source: string | null;
  createdAt: Date;
  state: BatchState;
  total: number;
  counts: OutcomeCounts;
  /** Workers serving this Dify's queue when the list was read (null: Redis does not say, or does not answer). */
  workers: number | null;
  /** Redis did not answer when the list was read. */
  redisUnreachable: boolean;
}

export async function listBatches(db: Db, limit = 100, workers: Workers = null): Promise<BatchListing[]> {
  return (await pageBatches(db, { limit }, workers)).batches;
}

/** Which batches a list shows (all filters together), and where a page starts. */
export interface BatchFilter {
  limit: number;
  /** Batches older than this one (the `next` of the previous page): keyset paging, newest first. */
  before?: BatchCursor;
  kind?: BatchKind;
  state?: BatchState;
  /** Part of the batch id or source (case-insensitive). */
  search?: string;
  createdAfter?: Date;
  createdBefore?: Date;
}

/** Where a page of batches ends: the last batch's creation time (PostgreSQL's text, to the microsecond) and id. */
export interface BatchCursor {
  createdAt: string;
  batchId: string;
}

/** Batches in the store a page reads at a time while a state filter skips some. */
const SCAN = 500;

/**
 * A page of batches, newest first, with the cursor of the next (null: the last page). The state
 * is computed (it depends on the workers now), so a state filter skips batches as they are read.
 */
export async function pageBatches(
  db: Db,
  filter: BatchFilter,
  workers: Workers = null,
): Promise<{ batches: BatchListing[]; next: BatchCursor | null }> {
  const out: { b: BatchListing; at: BatchCursor }[] = [];
  let before = filter.before;
  for (;;) {
    const want = filter.state ? SCAN : filter.limit + 1;
    const page = await readBatches(db, { ...filter, ...(before ? { before } : {}) }, want, workers);
    for (const p of page) {
      if (filter.state && p.b.state !== filter.state) continue;
      if (out.length === filter.limit) return { batches: out.map((o) => o.b), next: out[out.length - 1]!.at };
      out.push(p);
    }
    if (page.length < want) return { batches: out.map((o) => o.b), next: null };
    before = page[page.length - 1]!.at;
  }
}

async function readBatches(db: Db, filter: BatchFilter, limit: number, workers: Workers): Promise<{ b: BatchListing; at: BatchCursor }[]> {
  const { rows } = await db.query<{
    at: string;
    id: string;
    kind: BatchKind;
    source: string | null;
    created_at: Date;
    ingest_finished_at: Date | null;
    counts: Record<string, number> | null;
  }>(
    `SELECT b.id, b.kind, b.source, b.created_at, b.created_at::text AS at, b.ingest_finished_at,
            (SELECT jsonb_object_agg(outcome, n) FROM (SELECT outcome, count(*) AS n FROM ${SCHEMA}.rows r WHERE r.batch_id = b.id GROUP BY outcome) c) AS counts
       FROM ${SCHEMA}.batches b
      WHERE ($2::timestamptz IS NULL OR (b.created_at, b.id) < ($2, $3::text))
        AND ($4::text IS NULL OR b.kind = $4)
        AND ($5::text IS NULL OR strpos(lower(b.id), lower($5)) > 0 OR strpos(lower(COALESCE(b.source, '')), lower($5)) > 0)
        AND ($6::timestamptz IS NULL OR b.created_at >= $6)
        AND ($7::timestamptz IS NULL OR b.created_at < $7)
      ORDER BY b.created_at DESC, b.id DESC
      LIMIT $1`,
    [
      limit,
      filter.before?.createdAt ?? null,
      filter.before?.batchId ?? '',
      filter.kind ?? null,
      filter.search ?? null,
      filter.createdAfter ?? null,
      filter.createdBefore ?? null,
    ],
  );
  return rows.map((b) => {
    const counts = Object.fromEntries(OUTCOMES.map((o) => [o, Number(b.counts?.[o] ?? 0)])) as OutcomeCounts;
    const listing: BatchListing = {
      batchId: b.id,
      kind: b.kind,
      source: b.source,
      createdAt: b.created_at,
      state: batchState(b.ingest_finished_at !== null, counts, workers),
      total: Object.values(counts).reduce((a, n) => a + n, 0),
      counts,
      workers: workers === 'unreachable' ? null : workers,
      redisUnreachable: workers === 'unreachable',
    };
    return { b: listing, at: { createdAt: b.at, batchId: b.id } };
  });
}

export interface Throughput {
  /** Rows finished per second over the last minute. */
  perSecond: number;
  /** Seconds until every row is finished at that rate (null: unknown). */
  etaSeconds: number | null;
  /** Completions over time: bucket start (ms since epoch) and rows finished in it. */
  timeline: { t: number; n: number }[];
  bucketSeconds: number;
}

export async function getThroughput(db: Db, batchId: string, open: number): Promise<Throughput> {
  const { rows: span } = await db.query<{ first: Date | null; last: Date | null; recent: number }>(
    `SELECT min(finished_at) AS first, max(finished_at) AS last,
            count(*) FILTER (WHERE finished_at > now() - interval '60 seconds')::int AS recent
       FROM ${SCHEMA}.rows WHERE batch_id = $1 AND finished_at IS NOT NULL AND outcome <> 'rejected'`,
    [batchId],
  );
  const { first, last, recent } = span[0]!;
  if (!first || !last) return { perSecond: 0, etaSeconds: null, timeline: [], bucketSeconds: 1 };
  const window = Math.min(60, Math.max(1, (Date.now() - first.getTime()) / 1000));
  const perSecond = recent / window;
  const bucketSeconds = Math.max(1, Math.ceil((last.getTime() - first.getTime()) / 1000 / 60));
  const { rows } = await db.query<{ t: Date; n: number }>(
    `SELECT to_timestamp(floor(extract(epoch FROM finished_at) / $2) * $2) AS t, count(*)::int AS n
       FROM ${SCHEMA}.rows WHERE batch_id = $1 AND finished_at IS NOT NULL AND outcome <> 'rejected'
      GROUP BY 1 ORDER BY 1`,
    [batchId, bucketSeconds],
  );
  return {
    perSecond,
    etaSeconds: open === 0 ? 0 : perSecond > 0 ? open / perSecond : null,
    timeline: rows.map((r) => ({ t: r.t.getTime(), n: r.n })),
    bucketSeconds,
  };
}
