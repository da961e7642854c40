// Ingest: every row gets a durable result row (queued or rejected) before any job exists, then
// valid rows become BullMQ jobs in chunks. Re-running the same batch queues nothing twice.
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { CsvRow } from '../csv/read-rows.js';
import type { WorkspaceRow } from '../csv/workspace-row.js';
import { loadSealKey } from '../provision/sealing.js';
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
  /** Chunks being written at once (default 4). */
  chunksInFlight?: number;
  /** Create owner/member accounts that don't exist yet, as Dify's invite flow does. */
  createMissingAccounts?: boolean;
  /** Mint a dataset API key with every new workspace (a row's dataset_api_key column overrides). */
  mintDatasetKeys?: boolean;
  /** The operator's RSA public key (PEM) that minted keys are sealed to; required to mint. */
  sealTo?: string;
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

export class SealRequiredError extends Error {
  override readonly name = 'SealRequiredError';
  constructor() {
    super('minting API keys needs --seal-to operator-public.pem: each token is sealed to that key and revealed once with `dify-provision secrets`');
  }
}

function needsSeal(row: Extract<CsvRow, { ok: true }>): CsvRow {
  const raw = { workspaceName: row.row.workspaceName, ownerEmail: row.row.ownerEmail, externalId: row.row.externalId };
  return { line: row.line, ok: false, raw, errors: [{ field: 'dataset_api_key', message: 'asks for an API key but the batch has no --seal-to key to seal it to' }] };
}

export async function enqueueBatch(rows: AsyncIterable<CsvRow> | Iterable<CsvRow>, deps: { db: Db; queue: Queue }, opts: EnqueueOptions): Promise<EnqueueSummary> {
  const summary: EnqueueSummary = { batchId: opts.batchId, total: 0, queued: 0, rejected: 0, alreadyInBatch: 0 };
  if (opts.mintDatasetKeys && !opts.sealTo) throw new SealRequiredError();
  if (opts.sealTo) loadSealKey(opts.sealTo);
  await createBatch(deps.db, opts.batchId, opts.source, {
    retry: opts.retry ?? DEFAULT_RETRY,
    createMissingAccounts: opts.createMissingAccounts ?? false,
    mintDatasetKeys: opts.mintDatasetKeys ?? false,
    ...(opts.sealTo ? { sealTo: opts.sealTo } : {}),
  });
  const chunkSize = opts.chunkSize ?? 1000;
  // Chunks are written while the next ones are parsed: a few in flight keeps PostgreSQL, Redis
  // and the parser busy at once instead of taking turns.
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  const send = (rowsOfChunk: CsvRow[]) => {
    const p: Promise<void> = enqueueChunk(rowsOfChunk, deps, opts).then(
      (added) => {
        summary.queued += added.queued;
        summary.alreadyInBatch += added.alreadyInBatch;
      },
      (err) => {
        failure ??= err;
      },
    );
    const tracked = p.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  };
  let chunk: CsvRow[] = [];
  for await (const input of rows) {
    const row = opts.sealTo || !(input.ok && input.row.datasetApiKey) ? input : needsSeal(input);
    summary.total++;
    if (!row.ok) {
      summary.rejected++;
      opts.onRejected?.(row);
    }
    chunk.push(row);
    if (chunk.length >= chunkSize) {
      send(chunk);
      chunk = [];
      if (inFlight.size >= (opts.chunksInFlight ?? 4)) await Promise.race(inFlight);
      if (failure) break;
    }
  }
  if (chunk.length > 0 && !failure) send(chunk);
  await Promise.all(inFlight);
  if (failure) throw failure;
  await finishIngest(deps.db, opts.batchId);
  return summary;
}

type Job = { name: string; data: JobData; opts: ReturnType<typeof jobOptions> & { jobId: string } };

async function enqueueChunk(chunk: CsvRow[], deps: { db: Db; queue: Queue }, opts: EnqueueOptions) {
  const specs = chunk.map((r) => (r.ok ? specOf(r.line, r.row, opts) : null));
  // The chunk travels as one JSON document: far cheaper than one escaped array per column.
  const input = chunk.map((r, i) => ({
    line: r.line,
    idempotency_key: r.ok ? r.row.key : null,
    external_id: r.ok ? (r.row.externalId ?? null) : (r.raw.externalId ?? null),
    workspace_name: r.ok ? r.row.workspaceName : (r.raw.workspaceName ?? null),
    owner_email: r.ok ? r.row.ownerEmail : (r.raw.ownerEmail ?? null),
    tenant_id: specs[i]?.tenantId ?? null,
    outcome: r.ok ? 'queued' : 'rejected',
    error: r.ok ? null : r.errors.map((e) => `${e.field}: ${e.message}`).join('; '),
    spec: specs[i],
  }));
  const { rows: before } = await deps.db.query<{ line: number; outcome: string; idempotency_key: string | null; spec: JobData | null }>(
    `WITH input AS (
       SELECT * FROM jsonb_to_recordset($2::jsonb)
         AS t (line int, idempotency_key text, external_id text, workspace_name text, owner_email text,
               tenant_id uuid, outcome text, error text, spec jsonb)
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
    [opts.batchId, JSON.stringify(input)],
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
    mintDatasetKey: row.datasetApiKey ?? opts.mintDatasetKeys ?? false,
  };
}

export function jobFor(spec: JobData, retry: RetryPolicy, round = 1): Job {
  return { name: 'workspace', data: spec, opts: { ...jobOptions(retry), jobId: jobIdFor(spec.batchId, spec.key, round) } };
}
