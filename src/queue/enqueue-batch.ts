// Ingest: every row gets a durable result row (queued or rejected) before any job exists, then
// valid rows become BullMQ jobs in chunks. Re-running the same batch queues nothing twice.
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { CsvRow } from '../csv/read-rows.js';
import type { WorkspaceRow } from '../csv/workspace-row.js';
import type { Db } from '../db/pool.js';
import { createBatch, finishIngest } from '../results/batches.js';
import { SCHEMA } from '../results/migrate.js';
import { DEFAULT_RETRY, jobIdFor, jobOptions, type JobData, type RetryPolicy } from './contract.js';

export interface EnqueueOptions {
  batchId: string;
  /** Where the rows came from (a file name), shown in listings. */
  source?: string;
  retry?: RetryPolicy;
  chunkSize?: number;
  /** Create owner/member accounts that don't exist yet, as Dify's invite flow does. */
  createMissingAccounts?: boolean;
  /** Called for each invalid row as it is found. */
  onRejected?: (row: Extract<CsvRow, { ok: false }>) => void;
}

export interface EnqueueSummary {
  batchId: string;
  /** Rows read (valid + rejected). */
  total: number;
  /** Jobs added to the queue by this call. */
  queued: number;
  rejected: number;
  /** Valid rows this batch had already queued or finished (a re-run of the same batch). */
  alreadyInBatch: number;
}

export class BatchConflictError extends Error {
  override readonly name = 'BatchConflictError';
}

export async function enqueueBatch(rows: AsyncIterable<CsvRow> | Iterable<CsvRow>, deps: { db: Db; queue: Queue }, opts: EnqueueOptions): Promise<EnqueueSummary> {
  const summary: EnqueueSummary = { batchId: opts.batchId, total: 0, queued: 0, rejected: 0, alreadyInBatch: 0 };
  await createBatch(deps.db, opts.batchId, opts.source, {
    retry: opts.retry ?? DEFAULT_RETRY,
    createMissingAccounts: opts.createMissingAccounts ?? false,
  });
  const chunkSize = opts.chunkSize ?? 500;
  let chunk: CsvRow[] = [];
  const flush = async () => {
    const added = await enqueueChunk(chunk, deps, opts);
    summary.queued += added.queued;
    summary.alreadyInBatch += added.alreadyInBatch;
    chunk = [];
  };
  for await (const row of rows) {
    summary.total++;
    if (!row.ok) {
      summary.rejected++;
      opts.onRejected?.(row);
    }
    chunk.push(row);
    if (chunk.length >= chunkSize) await flush();
  }
  if (chunk.length > 0) await flush();
  await finishIngest(deps.db, opts.batchId);
  return summary;
}

type Job = { name: string; data: JobData; opts: ReturnType<typeof jobOptions> & { jobId: string } };

async function enqueueChunk(chunk: CsvRow[], deps: { db: Db; queue: Queue }, opts: EnqueueOptions) {
  const specs = chunk.map((r) => (r.ok ? specOf(r.line, r.row, opts) : null));
  const { rows: before } = await deps.db.query<{ line: number; outcome: string; idempotency_key: string | null; spec: JobData | null }>(
    `WITH input AS (
       SELECT * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[], $9::text[], $10::jsonb[])
         AS t (line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error, spec)
     ), inserted AS (
       INSERT INTO ${SCHEMA}.rows
         (batch_id, line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error, spec, finished_at)
       SELECT $1, line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error, spec,
              CASE WHEN outcome = 'rejected' THEN now() END
         FROM input
       ON CONFLICT (batch_id, line) DO NOTHING
     )
     -- Shares the INSERT's snapshot: sees only the rows this batch had before this call.
     SELECT r.line, r.outcome, r.idempotency_key, r.spec
       FROM ${SCHEMA}.rows r JOIN input i ON i.line = r.line
      WHERE r.batch_id = $1`,
    [
      opts.batchId,
      chunk.map((r) => r.line),
      chunk.map((r) => (r.ok ? r.row.key : null)),
      chunk.map((r) => (r.ok ? (r.row.externalId ?? null) : (r.raw.externalId ?? null))),
      chunk.map((r) => (r.ok ? r.row.workspaceName : (r.raw.workspaceName ?? null))),
      chunk.map((r) => (r.ok ? r.row.ownerEmail : (r.raw.ownerEmail ?? null))),
      specs.map((s) => s?.tenantId ?? null),
      chunk.map((r) => (r.ok ? 'queued' : 'rejected')),
      chunk.map((r) => (r.ok ? null : r.errors.map((e) => `${e.field}: ${e.message}`).join('; '))),
      specs.map((s) => (s ? JSON.stringify(s) : null)),
    ],
  );
  const earlier = new Map(before.map((b) => [b.line, b]));
  const jobs: Job[] = [];
  let queued = 0;
  let alreadyInBatch = 0;
  chunk.forEach((r, i) => {
    const mine = specs[i];
    const had = earlier.get(r.line);
    if (had && had.idempotency_key !== (mine?.key ?? null)) {
      throw new BatchConflictError(`batch "${opts.batchId}" already has a different row at line ${r.line}: use a new batch id for a different file`);
    }
    if (!mine) return;
    if (!had) queued++;
    else alreadyInBatch++;
    // Still queued from an earlier run (which may have stopped before adding it): add it again;
    // its job id makes that a no-op when the job exists.
    if (!had || (had.outcome === 'queued' && had.spec)) jobs.push(jobFor(had?.spec ?? mine, opts.retry ?? DEFAULT_RETRY));
  });
  if (jobs.length > 0) await deps.queue.addBulk(jobs);
  return { queued, alreadyInBatch };
}

function specOf(line: number, row: WorkspaceRow, opts: EnqueueOptions): JobData {
  return {
    batchId: opts.batchId,
    line,
    key: row.key,
    tenantId: row.workspaceId ?? randomUUID(),
    workspaceName: row.workspaceName,
    ownerEmail: row.ownerEmail,
    plan: row.plan,
    members: row.members,
    ...(row.externalId !== undefined ? { externalId: row.externalId } : {}),
    createMissingAccounts: opts.createMissingAccounts ?? false,
  };
}

export function jobFor(spec: JobData, retry: RetryPolicy, round = 1): Job {
  return { name: 'workspace', data: spec, opts: { ...jobOptions(retry), jobId: jobIdFor(spec.batchId, spec.key, round) } };
}
