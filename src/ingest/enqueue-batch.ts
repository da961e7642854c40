// Ingest: every row gets a durable result row (queued or rejected) before any job exists, then
// valid rows become BullMQ jobs in chunks. Re-running the same batch queues nothing twice.
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { CheckedRow, RejectedRow } from '../csv/row-checker.js';
import type { WorkspaceRow } from '../csv/workspace-row.js';
import { storable } from '../csv/row-checker.js';
import { loadSealKey, publicPemOf } from '../crypto/sealing.js';
import type { Db } from '../db/pool.js';
import { BatchConflictError, UsageError } from '../errors.js';
import { DEFAULT_RETRY, jobFor, type JobData, type RetryPolicy } from '../queue/contract.js';
import { createBatch, finishIngest } from '../store/batches.js';
import { recordIngested, type IngestedRow } from '../store/rows.js';

/** How a batch is ingested: the library's and the CLI's one options type. */
export interface EnqueueOptions {
  /** Default: a generated id. Re-using an id for the same rows queues nothing twice. */
  batchId?: string;
  /** Where the rows came from (a file name), shown in listings. */
  source?: string;
  retry?: RetryPolicy;
  /** Create owners/members that have no Dify account, as pending accounts (Dify's invite flow). */
  createMissingOwners?: boolean;
  /** Mint a workspace-wide dataset API key with each new workspace (a row's dataset_api_key overrides). */
  mintDatasetKeys?: boolean;
  /** The operator's RSA public key (PEM): minted keys are sealed to it; required to mint. */
  sealTo?: string;
  /** Enqueue nothing if any row is invalid (throws StrictValidationError listing every one). */
  strict?: boolean;
  /** Called for each invalid row as it is found. */
  onRejected?: (row: RejectedRow) => void;
  /** Rows written per round trip (default 1000, and at most about `chunkBytes` of them) and chunks in flight at once (default 4). */
  chunkSize?: number;
  chunkBytes?: number;
  chunksInFlight?: number;
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

export class SealRequiredError extends UsageError {
  override readonly name: string = 'SealRequiredError';
  constructor() {
    super(
      'minting API keys needs --seal-to operator-public.pem: each token is sealed to that key and revealed once with `dify-provision secrets`',
    );
  }
}

const CHUNK_BYTES = 4 << 20;
/** About what a row costs in a chunk's JSON and its job (a member is an email and a role). */
const approxBytes = (r: CheckedRow) =>
  r.ok ? 400 + 2 * (r.row.workspaceName.length + r.row.members.reduce((n, m) => n + m.email.length + 24, 0)) : 600;

function needsSeal(row: Extract<CheckedRow, { ok: true }>): RejectedRow {
  const raw = { workspaceName: row.row.workspaceName, ownerEmail: row.row.ownerEmail, externalId: row.row.externalId };
  return {
    line: row.line,
    ok: false,
    raw,
    errors: [{ field: 'dataset_api_key', message: 'asks for an API key but the batch has no --seal-to key to seal it to' }],
  };
}

type Settings = EnqueueOptions & { batchId: string };

export async function enqueueBatch(
  rows: AsyncIterable<CheckedRow> | Iterable<CheckedRow>,
  deps: { db: Db; queue: Queue },
  opts: Settings,
): Promise<EnqueueSummary> {
  const summary: EnqueueSummary = { batchId: opts.batchId, total: 0, queued: 0, rejected: 0, alreadyInBatch: 0 };
  if (opts.mintDatasetKeys && !opts.sealTo) throw new SealRequiredError();
  // Only the public half is ever kept (a private key given by mistake is refused by loadSealKey).
  const sealTo = opts.sealTo ? publicPemOf(loadSealKey(opts.sealTo)) : undefined;
  await createBatch(deps.db, opts.batchId, opts.source, {
    retry: opts.retry ?? DEFAULT_RETRY,
    createMissingAccounts: opts.createMissingOwners ?? false,
    mintDatasetKeys: opts.mintDatasetKeys ?? false,
    ...(sealTo ? { sealTo } : {}),
  });
  const chunkSize = opts.chunkSize ?? 1000;
  // Chunks are written while the next ones are parsed: a few in flight keeps PostgreSQL, Redis
  // and the parser busy at once instead of taking turns.
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  const send = (rowsOfChunk: CheckedRow[]) => {
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
  let chunk: CheckedRow[] = [];
  let chunkBytes = 0;
  for await (const input of rows) {
    const row = sealTo || !(input.ok && input.row.datasetApiKey) ? input : needsSeal(input);
    summary.total++;
    if (!row.ok) {
      summary.rejected++;
      opts.onRejected?.(row);
    }
    chunk.push(row);
    chunkBytes += approxBytes(row);
    // A chunk is bounded in rows and in bytes: rows naming hundreds of members are large.
    if (chunk.length >= chunkSize || chunkBytes >= (opts.chunkBytes ?? CHUNK_BYTES)) {
      send(chunk);
      chunk = [];
      chunkBytes = 0;
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

async function enqueueChunk(chunk: CheckedRow[], deps: { db: Db; queue: Queue }, opts: Settings) {
  const specs = chunk.map((r) => (r.ok ? specOf(r.line, r.row, opts) : null));
  const input: IngestedRow[] = chunk.map((r, i) => ({
    line: r.line,
    idempotency_key: r.ok ? r.row.key : null,
    external_id: r.ok ? (r.row.externalId ?? null) : (r.raw.externalId ?? null),
    workspace_name: r.ok ? r.row.workspaceName : (r.raw.workspaceName ?? null),
    owner_email: r.ok ? r.row.ownerEmail : (r.raw.ownerEmail ?? null),
    tenant_id: specs[i]?.tenantId ?? null,
    outcome: r.ok ? 'queued' : 'rejected',
    error: r.ok ? null : storable(r.errors.map((e) => `${e.field}: ${e.message}`).join('; ')),
    spec: specs[i] ?? null,
  }));
  const earlier = new Map((await recordIngested<JobData>(deps.db, opts.batchId, input)).map((b) => [b.line, b]));
  const jobs: ReturnType<typeof jobFor>[] = [];
  let queued = 0;
  let alreadyInBatch = 0;
  chunk.forEach((r, i) => {
    const mine = specs[i];
    const had = earlier.get(r.line);
    if (had && had.idempotency_key !== (mine?.key ?? null)) {
      throw new BatchConflictError(
        `batch "${opts.batchId}" already has a different row at line ${r.line}: use a new batch id for a different file`,
      );
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

function specOf(line: number, row: WorkspaceRow, opts: Settings): JobData {
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
    createMissingAccounts: opts.createMissingOwners ?? false,
    mintDatasetKey: row.datasetApiKey ?? opts.mintDatasetKeys ?? false,
  };
}
