// Ingest: every row gets a durable result row (queued or rejected) in one transaction, and each
// chunk's jobs are added as soon as its rows are written (workers wait for the COMMIT to see a
// row: queue/ingest-jobs.ts). Re-running the same batch queues nothing twice; a refused run takes
// back what it added and queues nothing at all.
import { createHash, randomUUID } from 'node:crypto';
import type { InputInfo } from '../input/decode.js';
import type { CheckedRow, RejectedRow } from '../input/row-checker.js';
import type { WorkspaceRow } from '../input/workspace-row.js';
import { storable } from '../input/row-checker.js';
import { isLikelyDuplicate } from '../input/same-customer.js';
import { sameCustomerInDify } from '../store/owned-workspaces.js';
import { sealKeyOf } from '../crypto/sealing.js';
import { withTransaction, type Db, type Tx } from '../db/pool.js';
import { BatchConflictError, ProvisionError } from '../common/errors.js';
import { DEFAULT_RETRY, type JobData, type RetryPolicy } from '../queue/contract.js';
import { settleLostJobs, type QueueDeps } from '../queue/lost-jobs.js';
import { IngestJobs } from '../queue/ingest-jobs.js';
import { batchOptions, createBatch, finishIngest } from '../store/batches.js';
import { lockBatch } from '../store/locks.js';
import { analyzeAfterLargeBatch, recordIngested, type EarlierRow, type IngestedRow } from '../store/rows.js';
import { BATCH_LIMITS, sizeWords } from '../common/limits.js';
import { difyNormalizedEmail } from '../dify/normalized-email.js';

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
  /**
   * Invite every person the batch creates (--invite): their token goes into Dify's Redis the way
   * Dify's invite flow stores it, their link sealed to `sealTo` (required), revealed once with
   * `secrets --invites`. `invitePending`: also the batch's existing accounts that are still
   * pending. `sendInvites`: also mail each link (implies invite).
   */
  invite?: boolean;
  invitePending?: boolean;
  sendInvites?: boolean;
  /**
   * Addresses the operator confirmed are their person (--trust-account): rows naming them may join
   * an account another batch's operator was given a link to (docs/security.md, the pre-claim guard).
   */
  trustAccounts?: string[];
  /** Enqueue nothing if any row is invalid (throws StrictValidationError listing every one). */
  strict?: boolean;
  /**
   * Let rows through that look like the same customer as another row of the batch or a workspace
   * the owner has in Dify (same owner and workspace name, ignoring case); by default they are rejected.
   */
  allowDuplicateNames?: boolean;
  /** Called for each invalid row as it is found. */
  onRejected?: (row: RejectedRow) => void;
  /**
   * A batch's bounds: at most `maxRows` rows (default 1,000,000) and `maxBytes` bytes of rows as
   * recorded (their JSON; default 1 GiB). A larger batch is refused before anything is queued.
   */
  maxRows?: number;
  maxBytes?: number;
  /** Rows written per round trip (default 1000, and at most about `chunkBytes` of them) and chunks in flight at once (default 4). */
  chunkSize?: number;
  chunkBytes?: number;
  chunksInFlight?: number;
  /** A batch that queues this many rows or more analyzes the rows table after its COMMIT (default 100,000; store/rows.ts). */
  analyzeAfterRows?: number;
}

export interface EnqueueSummary {
  batchId: string;
  /** Rows read (valid + rejected). */
  total: number;
  /** Valid rows this call recorded for the first time (and queued). */
  queued: number;
  /** This call recorded the batch (false: the batch id existed; with queued 0, nothing changed). */
  batchCreated?: boolean;
  rejected: number;
  /** Valid rows this batch had recorded already (a re-run of the same batch; any of them whose job was lost is queued again). */
  alreadyInBatch: number;
  /** Rejected rows that look like the same customer as another line or a workspace in Dify (counted in `rejected`). */
  likelyDuplicates: number;
  /** A file's format, encoding, delimiter and empty rows skipped (enqueueCsv). */
  input?: InputInfo;
  /**
   * The batch existed: options this call asked for that it was not made with (the library's names:
   * createMissingOwners, trustAccounts, …), not applied to it, since a batch keeps the options it
   * was made with. createMissingOwners and trustAccounts can be given to its failed rows by
   * `retryFailed`; the others need a new batch id (rows created already answer existing).
   */
  notApplied?: string[];
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

export interface EnqueueDeps extends QueueDeps {
  db: Db;
  /** The lineage of the server the rows are queued on (the runtime's server watch), stamped on each job. */
  lineage?: () => string;
}

export async function enqueueBatch(
  rows: AsyncIterable<CheckedRow> | Iterable<CheckedRow>,
  deps: EnqueueDeps,
  opts: Settings,
): Promise<EnqueueSummary> {
  const summary: EnqueueSummary = { batchId: opts.batchId, total: 0, queued: 0, rejected: 0, alreadyInBatch: 0, likelyDuplicates: 0 };
  const sealTo = sealKeyOf(opts);
  // 1. Every row is recorded in one transaction under the batch's lock, and each chunk's jobs are
  //    added as soon as its rows are written (a worker that takes one waits for the COMMIT to see
  //    its row). A refused ingest (another file under this batch id, a batch over its limits, a
  //    source that fails) takes back the jobs it added, still under the lock, then rolls back and
  //    leaves the batch as it was; a second ingest of the batch at the same time waits for this
  //    one, then finds its rows.
  let jobs: IngestJobs | undefined;
  await withTransaction(deps.db, async (tx) => {
    await lockBatch(tx, opts.batchId);
    summary.batchCreated = await createBatch(tx, opts.batchId, opts.source, {
      retry: opts.retry ?? DEFAULT_RETRY,
      createMissingAccounts: opts.createMissingOwners ?? false,
      mintDatasetKeys: opts.mintDatasetKeys ?? false,
      ...(opts.invite || opts.invitePending || opts.sendInvites ? { invite: true } : {}),
      ...(opts.invitePending ? { invitePending: true } : {}),
      ...(opts.sendInvites ? { sendInvites: true } : {}),
      ...(sealTo ? { sealTo } : {}),
      asked: askedOptions(opts, sealTo),
    });
    // New rows of a batch that existed are queued with the retry policy it was made with; what this
    // call asks for beyond the batch's options is said, not applied.
    let retry = opts.retry ?? DEFAULT_RETRY;
    if (!summary.batchCreated) {
      const made = await batchOptions<{ retry: RetryPolicy; asked: Record<string, unknown> }>(tx, opts.batchId);
      retry = made.retry ?? DEFAULT_RETRY;
      const notApplied = optionsNotApplied(askedOptions(opts, sealTo), made.asked ?? {}, retry);
      if (notApplied.length > 0) summary.notApplied = notApplied;
    }
    jobs = new IngestJobs(deps, opts.batchId, retry);
    await jobs.begin();
    try {
      await recordRows(rows, tx, { ...opts, lineage: deps.lineage?.() }, sealTo, summary, jobs);
      await jobs.settle();
    } catch (err) {
      await jobs.undo();
      throw err;
    }
    await finishIngest(tx, opts.batchId);
  });
  await jobs?.finish();
  // The sweep pages through open rows with a plan that is only good once the table is analyzed.
  await analyzeAfterLargeBatch(deps.db, summary.queued, opts.analyzeAfterRows);
  // 2. A re-run also looks for rows an earlier run recorded whose job is gone (exactly the specs
  //    stored are queued; job ids make adding one that exists a no-op).
  if (summary.alreadyInBatch > 0 || summary.queued === 0)
    await settleLostJobs(deps.db, deps, { batchId: opts.batchId, idleSeconds: 0, mode: 'queue' });
  return summary;
}

export { BATCH_LIMITS };

/** Tuning of the ingest itself, not what the batch is: not recorded with it. */
const NOT_RECORDED = new Set([
  'batchId',
  'onRejected',
  'chunkSize',
  'chunkBytes',
  'chunksInFlight',
  'analyzeAfterRows',
  'sealTo',
  'lineage',
]);

/**
 * The options the batch was made with, as asked (the library's names; the reading options of a
 * file too: encoding, delimiter, sheet, …), recorded with it and shown on its page and by the API:
 * every plain value but the ingest's own tuning; the seal key by its SHA-256 (the PEM is kept
 * apart, for the workers).
 */
export function askedOptions(opts: object, sealTo?: string): Record<string, unknown> {
  const asked: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts)) {
    if (NOT_RECORDED.has(k) || v === undefined || typeof v === 'function') continue;
    if (['string', 'number', 'boolean'].includes(typeof v) || (typeof v === 'object' && v !== null && isPlain(v))) asked[k] = v;
  }
  if (sealTo) asked['sealTo'] = `public key sha256:${createHash('sha256').update(sealTo).digest('hex')}`;
  return asked;
}

/** Options that change what a batch's rows do, when asked on yes/no: asked now but not by the batch. */
const FLAGS = ['createMissingOwners', 'mintDatasetKeys', 'invite', 'invitePending', 'sendInvites'] as const;

/**
 * What a run of an existing batch asks for (`asked`: askedOptions of the run) that the batch was not
 * made with (`made`: its options as asked, `retry`: its policy): a flag it lacks, an address it does
 * not trust, another seal key, another retry policy. Options the run leaves out are not
 * differences: the batch keeps its own.
 */
export function optionsNotApplied(asked: Record<string, unknown>, made: Record<string, unknown>, retry: RetryPolicy): string[] {
  const out: string[] = FLAGS.filter((k) => asked[k] === true && made[k] !== true);
  const trusted = new Set(((made['trustAccounts'] as string[] | undefined) ?? []).map((e) => e.toLowerCase()));
  if (((asked['trustAccounts'] as string[] | undefined) ?? []).some((e) => !trusted.has(e.toLowerCase()))) out.push('trustAccounts');
  if (asked['sealTo'] !== undefined && asked['sealTo'] !== made['sealTo']) out.push('sealTo');
  const now = asked['retry'] as RetryPolicy | undefined;
  if (now && (now.attempts !== retry.attempts || now.backoffMs !== retry.backoffMs)) out.push('retry');
  return out;
}

const isPlain = (v: object): boolean =>
  (Object.getPrototypeOf(v) === Object.prototype || Array.isArray(v)) &&
  Object.values(v).every((x) => ['string', 'number', 'boolean'].includes(typeof x) || (typeof x === 'object' && x !== null && isPlain(x)));

export class BatchTooLargeError extends ProvisionError {
  override readonly name: string = 'BatchTooLargeError';
  readonly code = 'BATCH_TOO_LARGE';
  override readonly httpStatus = 413;
  constructor(batchId: string, line: number, what: string, flag: string) {
    super(
      `batch "${batchId}" is over its limit of ${what} at line ${line}: nothing was queued and the batch is as it was; ` +
        `split the input, or raise the limit (${flag})`,
    );
  }
}

async function recordRows(
  rows: AsyncIterable<CheckedRow> | Iterable<CheckedRow>,
  tx: Tx,
  opts: Settings & { lineage: string | undefined },
  sealTo: string | undefined,
  summary: EnqueueSummary,
  jobs: IngestJobs,
): Promise<void> {
  const chunkSize = opts.chunkSize ?? 1000;
  const maxRows = opts.maxRows ?? BATCH_LIMITS.rows;
  const maxBytes = opts.maxBytes ?? BATCH_LIMITS.bytes;
  let bytes = 0;
  // Chunks are sent while the next ones are parsed (the connection runs them in order): the
  // parser and PostgreSQL work at once instead of taking turns.
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  const record = async (input: CheckedRow[]) => {
    // Queued on the transaction's connection behind the chunks before it: the loop goes on parsing.
    const chunk = opts.allowDuplicateNames ? input : await sameCustomers(tx, input);
    for (const row of chunk) {
      if (row.ok) continue;
      summary.rejected++;
      if (isLikelyDuplicate(row.errors)) summary.likelyDuplicates++;
      opts.onRejected?.(row);
    }
    const specs = chunk.map((r) => (r.ok ? specOf(r.line, r.row, opts, opts.lineage) : null));
    const json = JSON.stringify(chunk.map((r, i) => ingested(r, specs[i] ?? null)));
    bytes += Buffer.byteLength(json);
    if (bytes > maxBytes)
      throw new BatchTooLargeError(opts.batchId, chunk[0]!.line, `${sizeWords(maxBytes)} of rows`, '--max-bytes; library: maxBytes');
    const earlier = await recordIngested<JobData>(tx, opts.batchId, json);
    const added = compare(chunk, specs, earlier, opts.batchId);
    summary.queued += added.fresh.length;
    summary.alreadyInBatch += added.alreadyInBatch;
    // The rows this call wrote, queued now (a row the batch had keeps its job, or the re-run's settle finds it).
    if (!failure) await jobs.add(added.fresh);
  };
  const send = (chunk: CheckedRow[]) => {
    const tracked: Promise<void> = record(chunk).catch((err: unknown) => {
      failure ??= err;
    });
    inFlight.add(tracked);
    void tracked.finally(() => inFlight.delete(tracked));
  };
  try {
    let chunk: CheckedRow[] = [];
    let chunkBytes = 0;
    for await (const input of rows) {
      const row = sealTo || !(input.ok && input.row.datasetApiKey) ? input : needsSeal(input);
      summary.total++;
      if (summary.total > maxRows) throw new BatchTooLargeError(opts.batchId, row.line, `${maxRows} rows`, '--max-rows; library: maxRows');
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
  } finally {
    // Whatever stopped the loop, no statement of this transaction is left running.
    await Promise.all(inFlight);
  }
  if (failure) throw failure;
}

/** The chunk with each row that looks like a workspace its owner has in Dify rejected as such. */
async function sameCustomers(tx: Tx, chunk: CheckedRow[]): Promise<CheckedRow[]> {
  const valid = chunk.flatMap((r, i) => (r.ok ? [{ line: r.line, row: r.row, i }] : []));
  const flagged = await sameCustomerInDify(tx, valid, true);
  if (flagged.size === 0) return chunk;
  const out = [...chunk];
  flagged.forEach((rejected, j) => (out[valid[j]!.i] = rejected));
  return out;
}

function ingested(r: CheckedRow, spec: JobData | null): IngestedRow {
  return {
    line: r.line,
    idempotency_key: r.ok ? r.row.key : null,
    external_id: r.ok ? (r.row.externalId ?? null) : (r.raw.externalId ?? null),
    workspace_name: r.ok ? r.row.workspaceName : (r.raw.workspaceName ?? null),
    owner_email: r.ok ? r.row.ownerEmail : (r.raw.ownerEmail ?? null),
    tenant_id: spec?.tenantId ?? null,
    outcome: r.ok ? 'queued' : 'rejected',
    error: r.ok ? null : storable(r.errors.map((e) => `${e.field}: ${e.message}`).join('; ')),
    spec,
  };
}

/** What the batch had at these lines before: the same rows (counted), or a different file (refused). */
function compare(chunk: CheckedRow[], specs: (JobData | null)[], earlier: EarlierRow<JobData>[], batchId: string) {
  const had = new Map(earlier.map((b) => [b.line, b]));
  const fresh: JobData[] = [];
  let alreadyInBatch = 0;
  chunk.forEach((r, i) => {
    const before = had.get(r.line);
    if (before && before.idempotency_key !== (specs[i]?.key ?? null)) {
      throw new BatchConflictError(
        `batch "${batchId}" already has a different row at line ${r.line}: nothing was queued and the batch is as it was; use a new batch id for a different file`,
      );
    }
    const spec = specs[i];
    if (!spec) return;
    if (before) alreadyInBatch++;
    else fresh.push(spec);
  });
  return { fresh, alreadyInBatch };
}

function specOf(line: number, row: WorkspaceRow, opts: Settings, lineage: string | undefined): JobData {
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
    ...(row.ownerProfile ? { ownerProfile: row.ownerProfile } : {}),
    createMissingAccounts: opts.createMissingOwners ?? false,
    mintDatasetKey: row.datasetApiKey ?? opts.mintDatasetKeys ?? false,
    ...(opts.invite || opts.invitePending || opts.sendInvites ? { invite: true as const } : {}),
    ...(opts.invitePending ? { invitePending: true as const } : {}),
    ...(opts.sendInvites ? { sendInvites: true as const } : {}),
    ...trustedOf([row.ownerEmail, ...row.members.map((m) => m.email)], opts.trustAccounts),
    ...(lineage ? { lineage } : {}),
  };
}

/**
 * The trusted addresses (--trust-account, ignoring case) that go into a row's spec: those the row
 * names, in its order; then, in code-unit order, any other whose Dify normalised email is one of
 * the row's addresses' (ceo+x@gmail.com's account may be c.e.o@gmail.com, the refusal names it).
 * Such an address lets only the account whose email it is through (store/invitations.ts
 * refuseFirstUntrusted): never another person of the same normalised form. None: {}.
 */
export function trustedOf(emails: string[], trusted: string[] | undefined): { trustAccounts?: string[] } {
  if (!trusted || trusted.length === 0) return {};
  const asked = [...new Set(trusted.map((e) => e.toLowerCase()))];
  const named = [...new Set(emails.map((e) => e.toLowerCase()))];
  const forms = new Set(named.map(difyNormalizedEmail));
  const mine = [
    ...named.filter((e) => asked.includes(e)),
    ...asked.filter((e) => !named.includes(e) && forms.has(difyNormalizedEmail(e))).sort(),
  ];
  return mine.length > 0 ? { trustAccounts: mine } : {};
}
