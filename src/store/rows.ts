// The durable answer for every input row and its state machine, as named transitions:
//
//   (ingest) ──► queued ──► active ──► created | existing | applied | unchanged | failed
//      │           ▲  │       │ noteRetry ▲          │ requeue (a new round)
//      ▼           │  ▼       └──► queued │          ▼
//   rejected       │ cancelled ◄── cancelQueued    queued
//                  └─ requeue (undo a cancel)
//
// A row answered created/existing (applied/unchanged for a change) keeps that answer whatever runs later. Each call here is one
// round trip: several are on the worker's hot path.
import { inlined, type Db, type Statement, type Tx } from '../db/pool.js';
import { accountCandidates, type AccountRules } from '../dify/accounts.js';
import { difyNormalizedEmailSql } from '../dify/normalized-email.js';
import type { Account, Outcome } from '../common/types.js';
import { knownOf, type KnownColumns, type KnownEntry } from './ledger.js';
import { SCHEMA } from './schema.js';

/** One input row as ingest records it: queued with the job it becomes, or rejected with why. */
export interface IngestedRow {
  line: number;
  idempotency_key: string | null;
  external_id: string | null;
  workspace_name: string | null;
  owner_email: string | null;
  tenant_id: string | null;
  outcome: 'queued' | 'rejected';
  error: string | null;
  /** A change row's action (apply); absent on a provisioning row. */
  action?: string | null;
  /** A rejected change row's action, workspace_id and role as written (apply); absent otherwise. */
  input?: object | null;
  /** What the job needs (the validated row, no secrets), so retry can queue it again. */
  spec: object | null;
}

export interface EarlierRow<Spec> {
  line: number;
  outcome: string;
  idempotency_key: string | null;
  spec: Spec | null;
}

/**
 * Records a chunk of input rows (a row the batch has at that line already is left as it is) and
 * returns what the batch had at those lines before this call.
 */
export async function recordIngested<Spec>(db: Db | Tx, batchId: string, rowsJson: string): Promise<EarlierRow<Spec>[]> {
  // The chunk travels as one JSON document (IngestedRow[]): far cheaper than one escaped array per column.
  const { rows: before } = await db.query<EarlierRow<Spec>>(
    `WITH input AS (
       SELECT * FROM jsonb_to_recordset($2::jsonb)
         AS t (line int, idempotency_key text, external_id text, workspace_name text, owner_email text,
               tenant_id uuid, outcome text, error text, spec jsonb, action text, input jsonb)
     ), inserted AS (
       INSERT INTO ${SCHEMA}.rows
         (batch_id, line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error, spec, action, input, finished_at)
       SELECT $1, line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error, spec, action, input,
              CASE WHEN outcome = 'rejected' THEN now() END
         FROM input
       ON CONFLICT (batch_id, line) DO NOTHING
     )
     -- Shares the INSERT's snapshot: sees only the rows this batch had before this call.
     SELECT r.line, r.outcome, r.idempotency_key, r.spec
       FROM ${SCHEMA}.rows r JOIN input i ON i.line = r.line
      WHERE r.batch_id = $1`,
    [batchId, rowsJson],
  );
  return before;
}

/** What ingest recorded for a row: the job a worker may run for it must match this exactly. */
export async function recordedSpec<Spec>(db: Db, batchId: string, line: number): Promise<{ spec: Spec | null; round: number } | undefined> {
  const { rows } = await db.query<{ spec: Spec | null; round: number }>(
    `SELECT spec, round FROM ${SCHEMA}.rows WHERE batch_id = $1 AND line = $2`,
    [batchId, line],
  );
  return rows[0];
}

/** What an attempt starts from (startAttempt for a new workspace, startStatement for a change). */
export interface Started {
  /** The job is exactly what ingest (or apply) recorded for its row, in the row's current round. */
  matches: boolean;
  /**
   * The row was queued under this server's lineage (or one before it) and the server still has
   * that lineage: false for a row of the server this database was copied from (nothing was done).
   */
  ours: boolean;
  /** The key and round of the row recorded at the job's batch and line, if any. */
  recordedKey?: string;
  recordedRound?: number;
  /** The row's outcome before this attempt: only a queued or active row was started. */
  outcome?: Outcome;
}

export interface AttemptStart extends Started {
  known?: KnownEntry;
  /** A Dify tenant with the row's tenant id exists already. */
  tenantTaken: boolean;
  /** The candidate accounts for the emails asked for (dify/accounts.ts accountCandidates). */
  accounts: Account[];
}

/** The server a worker runs on, as it last saw it (store/server.ts). */
export interface OwnLineage {
  lineage: string;
  chain: string[];
}

/** The columns startStatement selects for every attempt. */
export interface StartedColumns {
  matches: boolean;
  ours: boolean;
  recorded_key: string | null;
  recorded_round: number | null;
  outcome: Outcome | null;
}

/**
 * queued/active → active (one more attempt), only for a job that is exactly what was recorded
 * for its row (its spec), in the row's current round (a copy of an earlier round's job, or of a
 * failed one, starts nothing), and queued on this server (`own`: a row of another server's
 * lineage is left as it is); selects StartedColumns. The rules of startAttempt's function
 * (store/schema.ts), for a change row: every parameter is typed by a cast or a column, so the
 * statement can be sent inlined (db/pool.ts) with the change's transaction.
 */
export function startStatement(job: { batchId: string; line: number }, round: number, attempt: number, own?: OwnLineage): Statement {
  return {
    text: `WITH mine AS (
       SELECT outcome, idempotency_key, round, spec = $4::jsonb AND round = $5 AS matches,
              $6::text IS NULL OR ((NOT spec ? 'lineage' OR spec->>'lineage' = ANY($7::text[]))
                                   AND EXISTS (SELECT 1 FROM ${SCHEMA}.server WHERE lineage::text = $6)) AS ours
         FROM ${SCHEMA}.rows WHERE batch_id = $1 AND line = $2
     ), started AS (
       UPDATE ${SCHEMA}.rows SET outcome = 'active', attempts = $3, updated_at = now()
        WHERE batch_id = $1 AND line = $2 AND outcome IN ('queued', 'active') AND spec = $4::jsonb AND round = $5
          AND (SELECT ours FROM mine)
     )
     SELECT COALESCE((SELECT matches FROM mine), false) AS matches, COALESCE((SELECT ours FROM mine), true) AS ours,
            (SELECT idempotency_key FROM mine) AS recorded_key, (SELECT round FROM mine) AS recorded_round,
            (SELECT outcome FROM mine) AS outcome`,
    values: [job.batchId, job.line, attempt, JSON.stringify(job), round, own?.lineage ?? null, own?.chain ?? []],
  };
}

/** What startStatement's row says. */
export function startedOf(r: StartedColumns): Started {
  return {
    matches: r.matches,
    ours: r.ours,
    ...(r.recorded_key ? { recordedKey: r.recorded_key } : {}),
    ...(r.recorded_round !== null ? { recordedRound: r.recorded_round } : {}),
    ...(r.outcome ? { outcome: r.outcome } : {}),
  };
}

/**
 * The start of a new workspace's attempt (startStatement's rules, in our function), with the
 * ledger entry for its key, whether its tenant id is taken, and the accounts behind its emails.
 */
export async function startAttempt(
  db: Db,
  job: { batchId: string; line: number; key: string; tenantId: string },
  round: number,
  attempt: number,
  emails: string[],
  rules: AccountRules,
  own?: OwnLineage,
): Promise<AttemptStart> {
  const candidates = accountCandidates(emails, rules, 10);
  // Our function (store/schema.ts startAttemptFunction), planned once per connection: the rows
  // of the job's row (its recorded spec and round, this server's lineage), queued/active →
  // active, the ledger entry of its key with what KNOWN_COLUMNS reads, whether the tenant id is
  // taken, and the Dify accounts of its emails (accountCandidates' rule).
  const fn = rules.normalized ? 'start_attempt_normalized_v1' : 'start_attempt_v1';
  const statement: Statement = {
    text: `SELECT * FROM ${SCHEMA}.${fn}($1::text, $2::integer, $3::integer, $4::text, $5::uuid, $6::jsonb, $7::integer, $8::text, $9::text[], $10::text[]${
      rules.normalized ? ', $11::text[]' : ''
    })`,
    values: [
      job.batchId,
      job.line,
      attempt,
      job.key,
      job.tenantId,
      JSON.stringify(job),
      round,
      own?.lineage ?? null,
      own?.chain ?? [],
      ...candidates.params,
    ],
  };
  const results = (await db.query(inlined('SET LOCAL synchronous_commit = off', statement))) as unknown as { rows: unknown[] }[];
  const rows = results[1]!.rows as ({
    matches: boolean;
    ours: boolean;
    recorded_key: string | null;
    recorded_round: number | null;
    outcome: Outcome | null;
    tenant_taken: boolean;
    accounts: Account[] | null;
  } & KnownColumns)[];
  const r = rows[0]!;
  const known = knownOf(r);
  return { ...startedOf(r), tenantTaken: r.tenant_taken, accounts: r.accounts ?? [], ...(known ? { known } : {}) };
}

/**
 * The start of a change row's attempt (startStatement), without the ledger and accounts a new
 * workspace needs: a change reads what it needs in its workspace's transaction.
 */
export async function startChange(
  db: Db,
  job: { batchId: string; line: number },
  round: number,
  attempt: number,
  own?: OwnLineage,
): Promise<Started> {
  const s = startStatement(job, round, attempt, own);
  const { rows } = await db.query<StartedColumns>(s.text, s.values);
  return startedOf(rows[0]!);
}

/**
 * active → queued, with the attempt's error: it failed and will be retried. A change's start is
 * inside its transaction, so a failed change is still queued (its start rolled back): noted too.
 */
export async function noteRetry(db: Db, batchId: string, line: number, attempt: number, reason: string): Promise<void> {
  await db.query(
    `UPDATE ${SCHEMA}.rows SET outcome = 'queued', attempts = $3, error = $4, updated_at = now()
      WHERE batch_id = $1 AND line = $2 AND outcome IN ('active', 'queued')`,
    [batchId, line, attempt, reason],
  );
}

/**
 * queued/active → failed: the row's job failed outside the processor (stalled too often), or was
 * edited in Redis. `own`: only if the row holds this job, in this round (a job added by someone
 * else never answers a real row); omitted when the caller has checked that the job is the row's own.
 */
export async function failIfOpen(
  db: Db | Tx,
  batchId: string,
  line: number,
  reason: string,
  own?: { spec?: object; round: number },
): Promise<void> {
  await db.query(
    `UPDATE ${SCHEMA}.rows SET outcome = 'failed', error = $3, updated_at = now(), finished_at = now()
      WHERE batch_id = $1 AND line = $2 AND outcome IN ('queued', 'active')
        AND ($5::int IS NULL OR round = $5) AND ($4::jsonb IS NULL OR spec = $4::jsonb)`,
    [batchId, line, reason, own?.spec === undefined ? null : JSON.stringify(own.spec), own?.round ?? null],
  );
}

export interface Finished {
  batchId: string;
  line: number;
  outcome: 'created' | 'existing' | 'applied' | 'unchanged' | 'failed';
  tenantId?: string;
  fingerprint?: string;
  attempts: number;
  durationMs: number;
  error?: string;
  createdAccounts?: string[];
  apiKeyMasked?: string;
  /** Who the row did not invite and why (a person in other workspaces too: docs/security.md). */
  inviteNote?: string;
}

/**
 * The row's answer, and for a created workspace (`key`) its ledger row, as our function
 * (store/schema.ts record_answer_v1, planned once per connection): a row answered
 * created/existing (applied/unchanged for a change) keeps that answer whatever runs later.
 */
const answerStatement = (f: Finished, key: string | null = null): Statement => ({
  text: `SELECT ${SCHEMA}.record_answer_v1($1::text, $2::text, $3::integer, $4::text, $5::uuid, $6::text, $7::integer,
           $8::integer, $9::text, $10::text[], $11::text, $12::text)`,
  values: [
    key,
    f.batchId,
    f.line,
    f.outcome,
    f.tenantId ?? null,
    f.fingerprint ?? null,
    f.attempts,
    Math.round(f.durationMs),
    f.error ?? null,
    f.createdAccounts ?? null,
    f.apiKeyMasked ?? null,
    f.inviteNote ?? null,
  ],
});

/** → existing | applied | unchanged | failed: the row's final answer (a change's applied in its workspace's transaction). */
export async function recordOutcome(db: Db | Tx, f: Finished): Promise<void> {
  const s = answerStatement(f);
  await db.query(s.text, s.values);
}

/** recordOutcome as a statement, to send with a change's writes and COMMIT in one round trip (db/pool.ts inlined). */
export const recordOutcomeStatement = (f: Finished): Statement => answerStatement(f);

/**
 * → created, with the ledger row that makes a second run of the same key a no-op: in the
 * workspace's transaction, one round trip.
 */
export async function recordCreated(tx: Tx, key: string, f: Finished): Promise<void> {
  const s = recordCreatedStatement(key, f);
  await tx.query(s.text, s.values);
}

/** recordCreated as a statement, to send with the workspace's rows and COMMIT in one round trip (db/pool.ts inlined). */
export const recordCreatedStatement = (key: string, f: Finished): Statement => answerStatement(f, key);

/**
 * failed → queued (retry) or cancelled → queued (undo a cancel), as a new round: fresh job ids,
 * fresh attempts. With `trusted` (--trust-account, lower-case): each row's spec trusts those of
 * them it names, besides those it trusted already. Returns what to queue.
 */
export const requeue = <Spec>(
  db: Db,
  batchId: string,
  from: 'failed' | 'cancelled',
  trusted: string[] = [],
  createMissing = false,
): Promise<{ spec: Spec; round: number; line: number }[]> =>
  requeueWhere<Spec>(db, 'outcome = $2', [batchId, from], trusted, createMissing);

/**
 * failed or cancelled → queued, for these lines only (retry of one row or a selection), as a new
 * round, like requeue (`trusted` too). Lines of other outcomes are left as they are. Returns what to queue.
 */
export const requeueLines = <Spec>(
  db: Db,
  batchId: string,
  lines: number[],
  trusted: string[] = [],
  createMissing = false,
): Promise<{ spec: Spec; round: number; line: number }[]> =>
  requeueWhere<Spec>(db, `line = ANY($2::int[]) AND outcome IN ('failed', 'cancelled')`, [batchId, lines], trusted, createMissing);

/**
 * The batch's rows `where` ($1 the batch, $2 `values[1]`) queued again as a new round; `trusted` is
 * $3. `createMissing` (retry --create-missing-owners): each row creates the accounts it names that
 * do not exist, as an ingest or apply with the flag would (both specs carry createMissingAccounts).
 */
async function requeueWhere<Spec>(
  db: Db,
  where: string,
  values: [string, unknown],
  trusted: string[],
  createMissing: boolean,
): Promise<{ spec: Spec; round: number; line: number }[]> {
  const { rows } = await db.query<{ spec: Spec; round: number; line: number }>(
    // Queued again here, so it is this server's now: its spec takes the server's lineage.
    `UPDATE ${SCHEMA}.rows
        SET outcome = 'queued', round = round + 1, error = NULL, attempts = 0, finished_at = NULL, updated_at = now(),
            spec = spec${trusted.length > 0 ? ` || ${TRUSTED_OF_SPEC('$3')}` : ''}${createMissing ? ` || '{"createMissingAccounts": true}'::jsonb` : ''}
              || COALESCE((SELECT jsonb_build_object('lineage', lineage::text) FROM ${SCHEMA}.server), '{}')
      WHERE batch_id = $1 AND ${where} AND spec IS NOT NULL
      RETURNING spec, round, line`,
    trusted.length > 0 ? [...values, trusted] : values,
  );
  return rows;
}

/**
 * The spec's trustAccounts as ingest's trustedOf makes them, from those it trusted already and
 * `param` (a text[] of lower-case addresses): the addresses the row names (owner, members; a
 * change's email), lower-cased, once each, in the order named; then, ordered by code unit, any
 * other whose Dify normalised email is one of the named addresses'; '{}' when there are none.
 */
const TRUSTED_OF_SPEC = (param: string) => `COALESCE((
       WITH named AS (
              SELECT lower(e.email) AS email, min(e.n) AS n
                FROM (SELECT spec ->> 'ownerEmail', 0::bigint UNION ALL SELECT spec ->> 'email', 0
                      UNION ALL SELECT m ->> 'email', k FROM jsonb_array_elements(COALESCE(spec -> 'members', '[]')) WITH ORDINALITY AS a(m, k)
                     ) AS e(email, n)
               WHERE e.email IS NOT NULL
               GROUP BY lower(e.email)),
            asked AS (
              SELECT ${param}::text[] || ARRAY(SELECT jsonb_array_elements_text(COALESCE(spec -> 'trustAccounts', '[]'))) AS emails)
       SELECT jsonb_build_object('trustAccounts', jsonb_agg(t.email ORDER BY t.n, t.email COLLATE "C"))
         FROM (SELECT named.email, named.n FROM named, asked WHERE named.email = ANY(asked.emails)
               UNION
               SELECT other.email, NULL FROM asked, unnest(asked.emails) AS other(email)
                WHERE other.email NOT IN (SELECT email FROM named)
                  AND ${difyNormalizedEmailSql('other.email')} IN (SELECT ${difyNormalizedEmailSql('named.email')} FROM named)) AS t
       HAVING count(*) > 0), '{}')`;

/** queued → cancelled; returns the cancelled rows' jobs (to remove them from the queue). */
export async function cancelQueued<Spec>(db: Db, batchId: string): Promise<{ spec: Spec; round: number }[]> {
  const { rows } = await db.query<{ spec: Spec; round: number }>(
    `UPDATE ${SCHEMA}.rows SET outcome = 'cancelled', error = 'cancelled before it ran', finished_at = now(), updated_at = now()
      WHERE batch_id = $1 AND outcome = 'queued'
      RETURNING spec, round`,
    [batchId],
  );
  return rows;
}

/** An open row (queued or active) with the job it should have: its spec, round and batch's retry policy. */
export interface OpenRow {
  batchId: string;
  line: number;
  round: number;
  outcome: 'queued' | 'active';
  /** The row's idempotency key (its job id's part); the spec itself is read only for rows that need a job. */
  key: string;
  /** The stored size of the row's spec (bytes, as PostgreSQL keeps it), to bound what one read loads. */
  specBytes: number;
  retry: { attempts: number; backoffMs: number } | null;
}

/**
 * The sweep's side of analyzeAfterLargeBatch (below), for changes no single batch made large
 * (many smaller batches, retries, the workers' own updates): analyzes the rows table when it
 * changed since its last analysis by autovacuum's own measure (a tenth of its rows) and by at
 * least `minChanged` rows, so that openRowsPage takes the open-rows index: a fixed
 * sample (0.4 s on a million rows), under the sweep's lock (one worker at a time). A database user
 * that does not own the table gets PostgreSQL's warning and nothing else. True when it analyzed.
 */
export async function analyzeRowsIfStale(db: Db, minChanged = 10_000): Promise<boolean> {
  const { rows } = await db.query<{ stale: boolean }>(
    `SELECT coalesce(n_mod_since_analyze >= greatest($1::bigint, 0.1 * n_live_tup), false) AS stale
       FROM pg_stat_user_tables WHERE relid = '${SCHEMA}.rows'::regclass`,
    [minChanged],
  );
  if (!rows[0]?.stale) return false;
  await db.query(`ANALYZE ${SCHEMA}.rows`);
  return true;
}

/**
 * A page of open rows in (batch, line) order after `after`, of one batch or of all; only rows
 * untouched for `idleSeconds`, of batches whose ingest finished at least that long ago (rows
 * just queued, or being queued, are left to whoever queues them). Specs are not read here: a
 * sweep looks at every open row, and only the few without a job need theirs (`specsOf`).
 */
export async function openRowsPage(
  db: Db | Tx,
  opts: { batchId?: string; after?: { batchId: string; line: number }; idleSeconds: number; limit: number },
): Promise<OpenRow[]> {
  const { rows } = await db.query<OpenRow>(
    `SELECT r.batch_id AS "batchId", r.line, r.round, r.outcome, r.idempotency_key AS key,
            pg_column_size(r.spec) AS "specBytes", b.options -> 'retry' AS retry
       FROM ${SCHEMA}.rows r JOIN ${SCHEMA}.batches b ON b.id = r.batch_id
      WHERE r.outcome IN ('queued', 'active') AND r.spec IS NOT NULL
        AND ($1::text IS NULL OR r.batch_id = $1)
        AND (r.batch_id, r.line) > ($2::text, $3::int)
        AND r.updated_at <= now() - make_interval(secs => $4)
        AND (b.ingest_finished_at IS NULL OR b.ingest_finished_at <= now() - make_interval(secs => $4))
      ORDER BY r.batch_id, r.line
      LIMIT $5`,
    [opts.batchId ?? null, opts.after?.batchId ?? '', opts.after?.line ?? 0, opts.idleSeconds, opts.limit],
  );
  return rows;
}

/** A batch of this many rows or more leaves the rows table analyzed (analyzeAfterLargeBatch). */
export const ANALYZE_AFTER_ROWS = 100_000;

/**
 * Fresh planner statistics for the rows table once a batch of `rows` rows (at least `atLeast`) is
 * committed. Until autovacuum analyzes the table (its launcher wakes every minute), PostgreSQL
 * plans openRowsPage through the batches first and sorts each batch's rows, so every page of a
 * sweep reads the rest of the batch instead of 1,000 rows (BENCHMARKS.md, 2026-12-06 session 7:
 * 52–85 s for the first scan of a million rows, 10 s once analyzed). ANALYZE samples a fixed
 * number of rows: 0.4 s on a million. A failure (a role that may not analyze it) is ignored:
 * autovacuum still does it.
 */
export async function analyzeAfterLargeBatch(db: Db, rows: number, atLeast = ANALYZE_AFTER_ROWS): Promise<void> {
  if (rows < atLeast) return;
  await db.query(`ANALYZE ${SCHEMA}.rows`).catch(() => undefined);
}

/** The stored specs of these rows, in the same order. */
export async function specsOf<Spec>(db: Db | Tx, rows: { batchId: string; line: number }[]): Promise<Spec[]> {
  const { rows: found } = await db.query<{ spec: Spec }>(
    `SELECT r.spec
       FROM jsonb_to_recordset($1::jsonb) AS want ("batchId" text, line int, n int)
       JOIN ${SCHEMA}.rows r ON r.batch_id = want."batchId" AND r.line = want.line
      ORDER BY want.n`,
    [JSON.stringify(rows.map((r, n) => ({ batchId: r.batchId, line: r.line, n })))],
  );
  return found.map((r) => r.spec);
}

/**
 * Open rows whose job Redis lost, in the round they hold: active → queued (their job is queued
 * again), or with `to: 'cancelled'` queued/active → cancelled. Returns the rows changed.
 */
export async function settleLostRows(
  db: Db | Tx,
  rows: { batchId: string; line: number; round: number }[],
  to: 'queued' | 'cancelled',
): Promise<{ batchId: string; line: number }[]> {
  const { rows: changed } = await db.query<{ batchId: string; line: number }>(
    `UPDATE ${SCHEMA}.rows r
        SET outcome = $2, updated_at = now(),
            error = CASE WHEN $2 = 'cancelled' THEN 'cancelled before it ran' ELSE r.error END,
            finished_at = CASE WHEN $2 = 'cancelled' THEN now() END
       FROM jsonb_to_recordset($1::jsonb) AS lost ("batchId" text, line int, round int)
      WHERE r.batch_id = lost."batchId" AND r.line = lost.line AND r.round = lost.round
        AND r.outcome IN ('queued', 'active') AND r.outcome <> $2
      RETURNING r.batch_id AS "batchId", r.line`,
    [JSON.stringify(rows.map((r) => ({ batchId: r.batchId, line: r.line, round: r.round }))), to],
  );
  return changed;
}

/** Whether any open row asks for invitations (a worker that cannot issue them says so at start). */
export async function rowsWaitForInvitations(db: Db): Promise<boolean> {
  const { rows } = await db.query<{ waiting: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM ${SCHEMA}.rows WHERE outcome IN ('queued', 'active') AND spec ? 'invite') AS waiting`,
  );
  return rows[0]?.waiting ?? false;
}

/** A row's outcome now, as a statement (no row: no answer), to send with others (db/pool.ts inlined). */
export const outcomeStatement = (batchId: string, line: number): Statement => ({
  text: `SELECT outcome FROM ${SCHEMA}.rows WHERE batch_id = $1::text AND line = $2::int`,
  values: [batchId, line],
});
