// The library API for migration scripts; the CLI uses the same calls.
//
//   const provisioner = await createProvisioner({ redisUrl, databaseUrl });
//   const batch = await provisioner.enqueue(rows, { batchId: 'wave-1' });
//   for await (const p of batch.progress()) console.log(p.counts);
//   const report = await batch.report();
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { ConfigSchema, requireConfig, type Config } from './config/config.js';
import { readRows, type CsvRow, type ReadOptions } from './csv/read-rows.js';
import { validateRow, type FieldError } from './csv/workspace-row.js';
import { createPool, withTransaction, type Db } from './db/pool.js';
import { describeError } from './errors.js';
import { detectScoping, listKeys, mintDatasetKey, type ListedKey, type MintedKey } from './provision/api-keys.js';
import { loadOpenKey } from './provision/sealing.js';
import { revealSecrets } from './results/sealed-secrets.js';
import { cancelBatch, retryFailed } from './queue/batch-control.js';
import { checkRedis, provisionQueue, redisConnection } from './queue/connection.js';
import type { RetryPolicy } from './queue/contract.js';
import { enqueueBatch, type EnqueueSummary } from './queue/enqueue-batch.js';
import { planBatch, type Plan } from './queue/plan.js';
import { batchProgress, getBatchStatus, listBatches, waitForBatch, type BatchListing, type BatchStatus } from './results/batches.js';
import { migrate } from './results/migrate.js';
import { allReportRows, type ReportRow } from './results/report.js';
import { csvHeader, csvLine, jsonChunks } from './results/report-format.js';
import { asBatchId, generatedBatchId, isStrictUuid } from './types.js';

/** A workspace to provision, as a script writes it (the CSV's columns, members as a list or string). */
export interface WorkspaceInput {
  workspace_name: string;
  owner_email: string;
  plan?: string;
  members?: string | { email: string; role: string }[];
  external_id?: string;
  workspace_id?: string;
}

export interface EnqueueOptions {
  /** Default: a generated id. Re-using an id for the same rows queues nothing twice. */
  batchId?: string;
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
  onRejected?: (row: { line: number; errors: FieldError[] }) => void;
}

export class StrictValidationError extends Error {
  override readonly name = 'StrictValidationError';
  constructor(readonly rejected: { line: number; errors: FieldError[] }[]) {
    super(`${rejected.length} invalid row(s); nothing was queued:\n${rejected.flatMap((r) => r.errors.map((e) => `  line ${r.line} (${e.field}): ${e.message}`)).join('\n')}`);
  }
}

export interface BatchHandle {
  readonly id: string;
  status(): Promise<BatchStatus>;
  /** Yields the batch's status every `intervalMs` until it is done (the last one is done). */
  progress(intervalMs?: number): AsyncGenerator<BatchStatus>;
  done(intervalMs?: number): Promise<BatchStatus>;
  /** Every row's answer, in input order. */
  report(): Promise<ReportRow[]>;
  /** The report as spreadsheet-safe CSV, streamed. */
  reportCsv(): AsyncGenerator<string>;
  /** The report as a JSON array, streamed. */
  reportJson(): AsyncGenerator<string>;
  retryFailed(): Promise<number>;
  cancel(): Promise<number>;
}

export interface Provisioner {
  enqueue(rows: AsyncIterable<WorkspaceInput> | Iterable<WorkspaceInput>, opts?: EnqueueOptions): Promise<BatchHandle & { summary: EnqueueSummary }>;
  enqueueCsv(file: string | Readable, opts?: EnqueueOptions & ReadOptions): Promise<BatchHandle & { summary: EnqueueSummary }>;
  /** What enqueueing these rows would do, read-only. */
  plan(file: string | Readable, opts?: ReadOptions & { createMissingOwners?: boolean }): Promise<Plan>;
  batch(id: string): BatchHandle;
  batches(limit?: number): Promise<BatchListing[]>;
  /**
   * Mints a dataset API key for each existing workspace (bound to the given knowledge bases, else
   * workspace-wide), each in its own transaction. The tokens are returned to you once, here: keep
   * them safe; dify-provision stores none of them.
   */
  mintApiKeys(requests: { tenantId: string; datasetIds?: string[] }[]): Promise<{ tenantId: string; key?: MintedKey; error?: string }[]>;
  /** A workspace's API keys, masked, with their scope. */
  listApiKeys(tenantId: string): Promise<ListedKey[]>;
  /** Writes a batch's sealed API keys to a new 0600 file, once. */
  revealSecrets(batchId: string, privateKeyPem: string, out: string): Promise<number>;
  close(): Promise<void>;
}

/** Lines of rows given as objects are their 1-based position. */
async function* asCsvRows(rows: AsyncIterable<WorkspaceInput> | Iterable<WorkspaceInput>): AsyncGenerator<CsvRow> {
  let line = 0;
  const seen = new Map<string, number>();
  for await (const input of rows) {
    line++;
    const members = Array.isArray(input.members) ? input.members.map((m) => `${m.email}:${m.role}`).join(';') : input.members;
    const checked = validateRow({ ...input, members } as Record<string, string>);
    const raw = { workspaceName: input.workspace_name, ownerEmail: input.owner_email, externalId: input.external_id };
    if (!checked.ok) {
      yield { line, ok: false, errors: checked.errors, raw };
      continue;
    }
    const earlier = seen.get(checked.row.key);
    if (earlier !== undefined) {
      yield { line, ok: false, errors: [{ field: checked.row.externalId ? 'external_id' : 'workspace_name', message: `duplicate: row ${earlier} has the same key` }], raw };
      continue;
    }
    seen.set(checked.row.key, line);
    yield { line, ok: true, row: checked.row };
  }
}

async function collectStrict(rows: AsyncIterable<CsvRow>): Promise<CsvRow[]> {
  const all: CsvRow[] = [];
  const bad: { line: number; errors: FieldError[] }[] = [];
  for await (const r of rows) {
    all.push(r);
    if (!r.ok) bad.push({ line: r.line, errors: r.errors });
  }
  if (bad.length > 0) throw new StrictValidationError(bad);
  return all;
}

export async function createProvisioner(settings: Partial<Config> & { redisUrl: string; databaseUrl: string }): Promise<Provisioner> {
  const config = requireConfig(ConfigSchema.parse(settings), 'redisUrl', 'databaseUrl');
  const db: Db = createPool(config.databaseUrl, 4);
  let redis: Redis | undefined;
  let queue: Queue | undefined;
  try {
    await migrate(db);
    redis = redisConnection(config.redisUrl, 'producer');
    await checkRedis(redis, config.redisUrl);
    queue = provisionQueue(redis, config.queuePrefix);
  } catch (err) {
    await db.end();
    redis?.disconnect();
    throw err;
  }
  const q = queue;

  const handle = (id: string): BatchHandle => ({
    id,
    async status() {
      const s = await getBatchStatus(db, id);
      if (!s) throw new Error(`no batch "${id}"`);
      return s;
    },
    progress: (intervalMs = 1000) => batchProgress(db, id, intervalMs),
    done: (intervalMs = 1000) => waitForBatch(db, id, { intervalMs }),
    async report() {
      const out: ReportRow[] = [];
      for await (const r of allReportRows(db, id)) out.push(r);
      return out;
    },
    async *reportCsv() {
      yield csvHeader();
      for await (const r of allReportRows(db, id)) yield csvLine(r);
    },
    reportJson: () => jsonChunks(allReportRows(db, id)),
    retryFailed: () => retryFailed(db, q, id),
    cancel: () => cancelBatch(db, q, id),
  });

  const enqueueRows = async (source: AsyncIterable<CsvRow>, opts: EnqueueOptions) => {
    const batchId = asBatchId(opts.batchId ?? generatedBatchId());
    const rows = opts.strict ? await collectStrict(source) : source;
    const summary = await enqueueBatch(rows, { db, queue: q }, {
      batchId,
      ...(opts.source ? { source: opts.source } : {}),
      ...(opts.retry ? { retry: opts.retry } : {}),
      createMissingAccounts: opts.createMissingOwners ?? false,
      mintDatasetKeys: opts.mintDatasetKeys ?? false,
      ...(opts.sealTo ? { sealTo: opts.sealTo } : {}),
      ...(opts.onRejected ? { onRejected: opts.onRejected } : {}),
    });
    return Object.assign(handle(batchId), { summary });
  };
  const open = (file: string | Readable) => (typeof file === 'string' ? createReadStream(file) : file);

  return {
    enqueue: (rows, opts = {}) => enqueueRows(asCsvRows(rows), opts),
    enqueueCsv: (file, opts = {}) =>
      enqueueRows(readRows(open(file), opts), { ...opts, ...(typeof file === 'string' && !opts.source ? { source: file } : {}) }),
    plan: (file, opts = {}) => planBatch(readRows(open(file), opts), db, { createMissingAccounts: opts.createMissingOwners ?? false }),
    batch: handle,
    batches: (limit) => listBatches(db, limit),
    async mintApiKeys(requests) {
      const scoping = await detectScoping(db);
      const out = [];
      for (const r of requests) {
        try {
          if (!isStrictUuid(r.tenantId.toLowerCase())) throw new Error(`tenant "${r.tenantId}" is not a strict UUID`);
          const key = await withTransaction(db, async (tx) => {
            const { rows } = await tx.query(`SELECT 1 FROM tenants WHERE id = $1`, [r.tenantId.toLowerCase()]);
            if (rows.length === 0) throw new Error(`no Dify workspace has the id ${r.tenantId}`);
            return mintDatasetKey(tx, r.tenantId.toLowerCase(), r.datasetIds ?? [], scoping);
          });
          out.push({ tenantId: r.tenantId, key });
        } catch (err) {
          out.push({ tenantId: r.tenantId, error: describeError(err) });
        }
      }
      return out;
    },
    listApiKeys: (tenantId) => listKeys(db, tenantId),
    revealSecrets: (batchId, pem, out) => revealSecrets(db, batchId, loadOpenKey(pem), out),
    async close() {
      await q.close();
      await Promise.allSettled([redis!.quit(), db.end()]);
    },
  };
}
