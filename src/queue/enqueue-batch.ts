// Ingest: every row gets a durable result row (queued or rejected) before any job exists, then
// valid rows become BullMQ jobs in chunks. Re-running the same batch queues nothing twice.
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { CsvRow } from '../csv/read-rows.js';
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

export async function enqueueBatch(rows: AsyncIterable<CsvRow>, deps: { db: Db; queue: Queue }, opts: EnqueueOptions): Promise<EnqueueSummary> {
  const summary: EnqueueSummary = { batchId: opts.batchId, total: 0, queued: 0, rejected: 0, alreadyInBatch: 0 };
  await createBatch(deps.db, opts.batchId, opts.source, { retry: opts.retry ?? DEFAULT_RETRY });
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

async function enqueueChunk(chunk: CsvRow[], deps: { db: Db; queue: Queue }, opts: EnqueueOptions) {
  const planned = chunk.map((r) => (r.ok ? { r, tenantId: r.row.workspaceId ?? randomUUID() } : { r, tenantId: null }));
  const { rows: stored } = await deps.db.query<{ line: number; tenant_id: string; outcome: string; idempotency_key: string | null }>(
    `WITH input AS (
       SELECT * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[], $9::text[])
         AS t (line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error)
     ), inserted AS (
       INSERT INTO ${SCHEMA}.rows
         (batch_id, line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error, finished_at)
       SELECT $1, line, idempotency_key, external_id, workspace_name, owner_email, tenant_id, outcome, error,
              CASE WHEN outcome = 'rejected' THEN now() END
         FROM input
       ON CONFLICT (batch_id, line) DO NOTHING
     )
     SELECT r.line, r.tenant_id, r.outcome, r.idempotency_key
       FROM ${SCHEMA}.rows r JOIN input i ON i.line = r.line
      WHERE r.batch_id = $1 AND i.outcome = 'queued'`,
    [
      opts.batchId,
      planned.map((p) => p.r.line),
      planned.map((p) => (p.r.ok ? p.r.row.key : null)),
      planned.map((p) => (p.r.ok ? (p.r.row.externalId ?? null) : (p.r.raw.externalId ?? null))),
      planned.map((p) => (p.r.ok ? p.r.row.workspaceName : (p.r.raw.workspaceName ?? null))),
      planned.map((p) => (p.r.ok ? p.r.row.ownerEmail : (p.r.raw.ownerEmail ?? null))),
      planned.map((p) => p.tenantId),
      planned.map((p) => (p.r.ok ? 'queued' : 'rejected')),
      planned.map((p) => (p.r.ok ? null : p.r.errors.map((e) => `${e.field}: ${e.message}`).join('; '))),
    ],
  );
  // The SELECT shares the INSERT's snapshot, so it sees only rows this batch had before this call.
  const byLine = new Map(stored.map((s) => [s.line, s]));
  const jobs: { name: string; data: JobData; opts: ReturnType<typeof jobOptions> & { jobId: string } }[] = [];
  let alreadyInBatch = 0;
  for (const { r, tenantId } of planned) {
    if (!r.ok) continue;
    const existing = byLine.get(r.line);
    if (existing && existing.idempotency_key !== r.row.key) {
      throw new BatchConflictError(
        `batch "${opts.batchId}" already has a different row at line ${r.line}: use a new batch id for a different file`,
      );
    }
    if (existing && existing.outcome !== 'queued') {
      alreadyInBatch++;
      continue;
    }
    const data: JobData = {
      batchId: opts.batchId,
      line: r.line,
      key: r.row.key,
      tenantId: existing?.tenant_id ?? tenantId!,
      workspaceName: r.row.workspaceName,
      ownerEmail: r.row.ownerEmail,
      plan: r.row.plan,
      members: r.row.members,
      ...(r.row.externalId !== undefined ? { externalId: r.row.externalId } : {}),
    };
    // Still queued from an earlier run (which may have stopped before adding it): add again; the
    // job id makes that a no-op when the job exists.
    if (existing) alreadyInBatch++;
    jobs.push({ name: 'workspace', data, opts: { ...jobOptions(opts.retry ?? DEFAULT_RETRY), jobId: jobIdFor(opts.batchId, r.row.key) } });
  }
  if (jobs.length > 0) await deps.queue.addBulk(jobs);
  return { queued: jobs.filter((j) => !byLine.has(j.data.line)).length, alreadyInBatch };
}
