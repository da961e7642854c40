// apply: a changes batch is recorded like an ingest batch (store/batches.ts, kind 'changes'):
// every row, valid (queued, with the job spec it becomes) or not (rejected, with line and field),
// in one transaction under the batch's lock before any job exists; then exactly the stored specs
// are queued (queue/lost-jobs.ts settleLostJobs), one job per row, on this Dify's queue. The
// workers' processor runs a change job through worker/apply-change.ts. Re-running the same batch
// queues nothing twice; a different file under the same batch id is refused.
import type { RawRow } from '../input/row-checker.js';
import { sealKeyOf } from '../crypto/sealing.js';
import { storable } from '../input/row-checker.js';
import { withTransaction, type Tx } from '../db/pool.js';
import { BatchConflictError } from '../common/errors.js';
import { askedOptions, BatchTooLargeError, trustedOf, type EnqueueDeps } from '../ingest/enqueue-batch.js';
import { BATCH_LIMITS, sizeWords } from '../common/limits.js';
import { DEFAULT_RETRY, type ChangeJob, type RetryPolicy } from '../queue/contract.js';
import { settleLostJobs } from '../queue/lost-jobs.js';
import { createBatch, finishIngest } from '../store/batches.js';
import { lockBatch } from '../store/locks.js';
import { analyzeAfterLargeBatch, recordIngested, type IngestedRow } from '../store/rows.js';
import type { ChangeRow, CheckedChange } from './change-row.js';

/** How a changes batch is applied: the library's and the CLI's options (those of ingest that apply). */
export interface ApplyOptions {
  /** Default: a generated id. Re-using an id for the same rows queues nothing twice. */
  batchId?: string;
  /** Where the rows came from (a file name), shown in listings. */
  source?: string;
  retry?: RetryPolicy;
  /** add_member of an email with no Dify account creates it, pending, as Dify's invite (and ingest) does. */
  createMissingOwners?: boolean;
  /**
   * Each account add_member creates gets Dify's invitation token and a link sealed to `sealTo`
   * (required), revealed once with `secrets --invites`, as ingest's --invite. `sendInvites`:
   * also mail each link (implies invite).
   */
  invite?: boolean;
  sendInvites?: boolean;
  /** As ingest's (--trust-account): rows naming these may join an account another batch's operator had a link to. */
  trustAccounts?: string[];
  /** The operator's RSA public key (PEM), for invitation links. */
  sealTo?: string;
  /**
   * Sync mode: the rows list the complete membership of each workspace they name (workspace_id or
   * external_id, email, role — `owner` allowed); the batch is the difference (changes/sync.ts).
   */
  sync?: boolean;
  /**
   * The batch's scope (changes/scope.ts): the ingest batches whose workspaces its rows may name.
   * A row naming any other workspace is rejected when read and refused when it runs. A changes
   * file a customer supplies is applied within that customer's batches (docs/security.md).
   */
  within?: string[];
  /** Queue nothing if any row is invalid (throws StrictValidationError listing every one). */
  strict?: boolean;
  /** Called for each invalid row as it is found. */
  onRejected?: (row: Extract<CheckedChange, { ok: false }>) => void;
  /** A batch's bounds (as ingest's): rows and bytes of rows as recorded. */
  maxRows?: number;
  maxBytes?: number;
  /** Rows written per round trip (default 1000). */
  chunkSize?: number;
}

export interface ApplySummary {
  batchId: string;
  /** Rows read (valid + rejected). */
  total: number;
  /** Valid rows this call recorded for the first time (and queued). */
  queued: number;
  rejected: number;
  /** Valid rows this batch had recorded already (a re-run of the same batch). */
  alreadyInBatch: number;
}

export async function enqueueChanges(
  rows: AsyncIterable<CheckedChange> | Iterable<CheckedChange>,
  deps: EnqueueDeps,
  opts: ApplyOptions & { batchId: string },
): Promise<ApplySummary> {
  const summary: ApplySummary = { batchId: opts.batchId, total: 0, queued: 0, rejected: 0, alreadyInBatch: 0 };
  const invite = opts.invite || opts.sendInvites;
  const sealTo = sealKeyOf(opts);
  const settings = {
    createMissingAccounts: opts.createMissingOwners ?? false,
    ...(invite ? { invite: true as const } : {}),
    ...(opts.sendInvites ? { sendInvites: true as const } : {}),
    ...(opts.trustAccounts && opts.trustAccounts.length > 0 ? { trustAccounts: opts.trustAccounts } : {}),
    ...(opts.within ? { within: opts.within } : {}),
  };
  await withTransaction(deps.db, async (tx) => {
    await lockBatch(tx, opts.batchId);
    await createBatch(
      tx,
      opts.batchId,
      opts.source,
      // The options as asked (a file's reading ones too), shown on the batch's page, as ingest's.
      { retry: opts.retry ?? DEFAULT_RETRY, ...settings, ...(sealTo ? { sealTo } : {}), asked: askedOptions(opts, sealTo) },
      'changes',
    );
    const lineage = deps.lineage?.();
    const maxRows = opts.maxRows ?? BATCH_LIMITS.rows;
    const maxBytes = opts.maxBytes ?? BATCH_LIMITS.bytes;
    let bytes = 0;
    let chunk: CheckedChange[] = [];
    const flush = async () => {
      const specs = chunk.map((r) => (r.ok ? specOf(r.line, r.row, opts.batchId, settings, lineage) : null));
      const json = JSON.stringify(chunk.map((r, i) => recorded(r, specs[i] ?? null)));
      bytes += Buffer.byteLength(json);
      if (bytes > maxBytes)
        throw new BatchTooLargeError(opts.batchId, chunk[0]!.line, `${sizeWords(maxBytes)} of rows`, '--max-bytes; library: maxBytes');
      await record(tx, opts.batchId, chunk, specs, json, summary);
      chunk = [];
    };
    for await (const row of rows) {
      summary.total++;
      if (summary.total > maxRows) throw new BatchTooLargeError(opts.batchId, row.line, `${maxRows} rows`, '--max-rows; library: maxRows');
      if (!row.ok) {
        summary.rejected++;
        opts.onRejected?.(row);
      }
      chunk.push(row);
      if (chunk.length >= (opts.chunkSize ?? 1000)) await flush();
    }
    if (chunk.length > 0) await flush();
    await finishIngest(tx, opts.batchId);
  });
  // Its jobs are queued by the sweep's own paging, which wants the table analyzed after a large batch.
  await analyzeAfterLargeBatch(deps.db, summary.queued);
  await settleLostJobs(deps.db, deps, { batchId: opts.batchId, idleSeconds: 0, mode: 'queue' });
  return summary;
}

async function record(tx: Tx, batchId: string, chunk: CheckedChange[], specs: (ChangeJob | null)[], json: string, summary: ApplySummary) {
  const earlier = new Map((await recordIngested<ChangeJob>(tx, batchId, json)).map((b) => [b.line, b]));
  chunk.forEach((r, i) => {
    const before = earlier.get(r.line);
    if (before && before.idempotency_key !== (specs[i]?.key ?? null))
      throw new BatchConflictError(
        `batch "${batchId}" already has a different row at line ${r.line}: nothing was queued and the batch is as it was; use a new batch id for a different file`,
      );
    if (!specs[i]) return;
    if (before) summary.alreadyInBatch++;
    else summary.queued++;
  });
}

/** What a row's job carries: the row as validated and the batch's flags (never a secret). */
export function specOf(
  line: number,
  row: ChangeRow,
  batchId: string,
  settings: { createMissingAccounts: boolean; invite?: true; sendInvites?: true; trustAccounts?: string[]; within?: string[] },
  lineage: string | undefined,
): ChangeJob {
  return {
    kind: 'change',
    batchId,
    line,
    key: row.key,
    action: row.action,
    ...(row.workspaceId !== undefined ? { workspaceId: row.workspaceId } : {}),
    ...(row.externalId !== undefined ? { externalId: row.externalId } : {}),
    ...(row.email !== undefined ? { email: row.email } : {}),
    ...(row.role !== undefined ? { role: row.role } : {}),
    ...(row.name !== undefined ? { name: row.name } : {}),
    ...(row.afterLine !== undefined ? { afterLine: row.afterLine } : {}),
    createMissingAccounts: settings.createMissingAccounts,
    ...(settings.invite && row.action === 'add_member' ? { invite: true as const } : {}),
    ...(settings.sendInvites && row.action === 'add_member' ? { sendInvites: true as const } : {}),
    ...(row.email !== undefined ? trustedOf([row.email], settings.trustAccounts) : {}),
    ...(settings.within ? { within: settings.within } : {}),
    ...(lineage ? { lineage } : {}),
  };
}

function inputOf(raw: RawRow): { action?: string; workspace_id?: string; role?: string } | null {
  const input = {
    ...(raw.action !== undefined ? { action: raw.action } : {}),
    ...(raw.workspaceId !== undefined ? { workspace_id: raw.workspaceId } : {}),
    ...(raw.role !== undefined ? { role: raw.role } : {}),
  };
  return Object.keys(input).length > 0 ? input : null;
}

function recorded(r: CheckedChange, spec: ChangeJob | null): IngestedRow {
  return {
    line: r.line,
    idempotency_key: r.ok ? r.row.key : null,
    external_id: r.ok ? (r.row.externalId ?? null) : (r.raw.externalId ?? null),
    // A change row keeps its new name (rename) and its person's email in the columns reports read.
    workspace_name: r.ok ? (r.row.name ?? null) : (r.raw.workspaceName ?? null),
    owner_email: r.ok ? (r.row.email ?? null) : (r.raw.ownerEmail ?? null),
    tenant_id: r.ok ? (r.row.workspaceId ?? null) : null,
    outcome: r.ok ? 'queued' : 'rejected',
    error: r.ok ? null : storable(r.errors.map((e) => `${e.field}: ${e.message}`).join('; ')),
    spec,
    action: r.ok ? r.row.action : null,
    // What a rejected row said of its action, workspace and role, as written (the report shows it).
    input: r.ok ? null : inputOf(r.raw),
  };
}
