// The library API for migration scripts; the CLI uses the same calls.
//
//   const provisioner = await createProvisioner({ redisUrl, databaseUrl });
//   const batch = await provisioner.enqueue(rows, { batchId: 'wave-1' });
//   for await (const p of batch.progress()) console.log(p.counts);
//   const report = await batch.report();
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import {
  ConfigSchema,
  refuseUnusableInvitations,
  requireInvitations,
  requireMail,
  type Config,
  type InvitationAsk,
} from './config/config.js';
import {
  inviteUninvited,
  openInviter,
  resendInvitations,
  revealInvitations,
  type Invited,
  type OnIssued,
  type Resent,
} from './invite/inviter.js';
import { invitationMail } from './invite/deliver.js';
import { loadOpenKey } from './crypto/sealing.js';
import { newInputInfo } from './input/decode.js';
import { readRecords, readRows, type ReadOptions } from './input/read-rows.js';
import { checkInputFile } from './input/read-options.js';
import { CHANGE_ROWS, checkChangeInputs, type ChangeInput, type CheckedChange } from './changes/change-row.js';
import { enqueueChanges, type ApplyOptions, type ApplySummary } from './changes/enqueue-changes.js';
import { sealKeyOf } from './crypto/sealing.js';
import { planChanges, type ChangePlan } from './changes/plan.js';
import { checkSyncInputs, SYNC_ROWS, syncChanges, type SyncInput } from './changes/sync.js';
import { withinScope } from './changes/scope.js';
import { sameWorkspaceRules } from './changes/same-workspace.js';
import type { CheckedRow } from './input/row-checker.js';
import { withTransaction } from './db/pool.js';
import { listKeys, mintDatasetKey, type ListedKey, type MintedKey } from './dify/api-keys.js';
import { describeSchema, probeDifySchema } from './dify/schema-probe.js';
import { describeError, UsageError } from './common/errors.js';
import { enqueueBatch, type EnqueueOptions, type EnqueueSummary } from './ingest/enqueue-batch.js';
import { checkInputRows, strictly, type WorkspaceInput } from './input/input-rows.js';
import { planBatch, type Plan } from './ingest/plan.js';
import { cancelBatch, resumeCancelled, retryFailed, retryRows, type RequeueOptions } from './queue/batch-control.js';
import { workersServing } from './queue/connection.js';
import { settleLostJobs } from './queue/lost-jobs.js';
import { changeReportRow, csvReport, jsonReport, type ReportTextOptions } from './report/format.js';
import { revealSecrets } from './secrets/reveal.js';
import { openQueueRuntime, type QueueRuntime } from './runtime/runtime.js';
import type { Gate } from './queue/server-watch.js';
import { rowsOfOtherLineages, type WaitingLineage } from './store/server.js';
import {
  batchKind,
  batchProgress,
  getBatchStatus,
  listBatches,
  recordInput,
  waitForBatch,
  type BatchListing,
  type BatchStatus,
  type OnPostgresUnreachable,
  type Workers,
} from './store/batches.js';
import { allReportRows, type ReportRow } from './store/report.js';
import { BatchNotFoundError } from './common/errors.js';
import type { HeldLimits } from './common/limits.js';
import { asBatchId, generatedBatchId, isStrictUuid } from './common/types.js';

export interface BatchHandle {
  readonly id: string;
  status(): Promise<BatchStatus>;
  /**
   * Yields the batch's status every `intervalMs` until it is done (the last one is done). A poll
   * PostgreSQL does not answer (a restart, a failover) ends nothing: it goes on when PostgreSQL is
   * back, and `onUnreachable` hears each such poll, in words.
   */
  progress(intervalMs?: number, onUnreachable?: OnPostgresUnreachable): AsyncGenerator<BatchStatus>;
  /** Resolves with the batch's status once it is done (through PostgreSQL's restarts, as `progress`). */
  done(intervalMs?: number, onUnreachable?: OnPostgresUnreachable): Promise<BatchStatus>;
  /**
   * Every row's answer, in input order. A change batch's rows also carry `email`, `name` and
   * `detail` (why unchanged, refused or failed; what else the change did), and `error` only on
   * failed and rejected rows (docs/api.md).
   */
  report(): Promise<ReportRow[]>;
  /** The report as spreadsheet-safe CSV, streamed (escapeControls: for a terminal). */
  reportCsv(opts?: ReportTextOptions): AsyncGenerator<string>;
  /** The report as a JSON array (snake_case: the CSV's column names), streamed. */
  reportJson(): AsyncGenerator<string>;
  /**
   * Queues the failed rows again; `trustAccounts` (--trust-account) is recorded with the batch and
   * let through for its rows; `createMissingOwners` (--create-missing-owners): they create the
   * accounts they name that do not exist (a batch ingested without the flag, after the fact).
   */
  retryFailed(opts?: RequeueOptions): Promise<number>;
  /**
   * Queues these rows again, by line (one row or a selection; those failed or cancelled), as a new
   * round; returns the lines queued. `trustAccounts` as retryFailed's, each row trusting those it names.
   */
  retryRows(lines: number[], opts?: RequeueOptions): Promise<number[]>;
  cancel(): Promise<number>;
  /** Queues the cancelled rows again (undoes cancel). */
  resumeCancelled(opts?: RequeueOptions): Promise<number>;
  /**
   * Open rows (queued or active) that have no job in Redis (a Redis flush or a failover without
   * persistence lost it): a running worker's sweep queues them again (`RunWorkerOptions.sweep`).
   */
  rowsWithoutJob(): Promise<number>;
}

export interface ServerStatus {
  gate: Gate;
  /** What is happening and what to run: a conflict, a wait, or (open) a copy of this database sharing the queue. */
  message?: string;
  lineage: string;
  /** Rows still to run here that were queued on another server, by its lineage. */
  otherServers: WaitingLineage[];
}

export interface Provisioner {
  enqueue(
    rows: AsyncIterable<WorkspaceInput> | Iterable<WorkspaceInput>,
    opts?: EnqueueOptions,
  ): Promise<BatchHandle & { summary: EnqueueSummary }>;
  enqueueCsv(file: string | Readable, opts?: EnqueueOptions & ReadOptions): Promise<BatchHandle & { summary: EnqueueSummary }>;
  /**
   * What enqueueing these rows would do, read-only. Invitation options are refused as enqueue
   * refuses them (checkInvitations), naming the setting this process lacks. The pre-claim guard
   * is planned for the batch `batchId` (default: a new one, as enqueue's), trusting
   * `trustAccounts`, with `sealTo` the key a batch not recorded yet would be made with.
   */
  plan(
    file: string | Readable,
    opts?: ReadOptions & { createMissingOwners?: boolean; batchId?: string; trustAccounts?: string[]; sealTo?: string } & InvitationAsk,
  ): Promise<Plan>;
  /**
   * Refuses invitation options (invite, invitePending, sendInvites) this process's settings cannot
   * honour, naming the setting: CONSOLE_WEB_URL or Dify's Redis, and for sendInvites Dify's mail
   * (MAIL_TYPE=smtp, SMTP_*). plan, planChanges, enqueue and apply ask it first; so do the HTTP API's plans.
   */
  checkInvitations(ask: InvitationAsk): void;
  /**
   * Changes to existing workspaces (any workspace of this Dify, by `workspace_id` or by the
   * `external_id` it was ingested with), one per row: `add_member` (email, role),
   * `remove_member` (email), `set_role` (email, role), `transfer_owner` (email), `rename` (name),
   * `archive`, `restore`. Recorded as a batch (kind `changes`) before anything is queued, one job
   * per row; each row is answered `applied`, `unchanged` (Dify already says so), `rejected`
   * (invalid: line and field) or `failed` (refused by Dify's rules at the moment it ran, or an
   * error: the reason). The handle is a batch's like any other: status, report, retry, cancel.
   */
  apply(
    rows: AsyncIterable<ChangeInput | SyncInput> | Iterable<ChangeInput | SyncInput>,
    opts?: ApplyOptions,
  ): Promise<BatchHandle & { summary: ApplySummary }>;
  /** apply() for a changes file (CSV or .xlsx, columns action, workspace_id or external_id, email, role, name) or a stream. */
  applyFile(file: string | Readable, opts?: ApplyOptions & ReadOptions): Promise<BatchHandle & { summary: ApplySummary }>;
  /**
   * What applying these changes would do now, read-only (no write, no Redis): per change kind,
   * unchanged, rejected and refused rows, each problem with its line and field; `listRows`:
   * the first rows with their verdicts. Every precondition is read again when a row runs.
   */
  planChanges(
    input: string | Readable | AsyncIterable<ChangeInput | SyncInput> | Iterable<ChangeInput | SyncInput>,
    opts?: ReadOptions & {
      createMissingOwners?: boolean;
      listRows?: number;
      sync?: boolean;
      maxRows?: number;
      /** The scope (apply --within): rows naming a workspace outside it are planned rejected. */
      within?: string[];
      /** The pre-claim guard as apply meets it: the batch (default: a new one, as apply's) and the addresses trusted. */
      batchId?: string;
      trustAccounts?: string[];
      /** As apply's: invite or sendInvites without it is refused, as apply refuses it. */
      sealTo?: string;
    } & InvitationAsk,
  ): Promise<ChangePlan>;
  batch(id: string): BatchHandle;
  batches(limit?: number): Promise<BatchListing[]>;
  /** How many workers serve this Dify's queue now (null: Redis does not say). */
  workers(): Promise<Workers>;
  /** Which Dify release band the database is, in words. */
  difySchema(): Promise<string>;
  /** Which Dify database this provisioner's queue serves (several Difys may share one Redis). */
  readonly queue: { name: string; database: string };
  /**
   * The PostgreSQL server behind the queue: whether another live server claims the same identity
   * (a physical copy), and rows (of one batch, or all) queued on a server this one does not descend from.
   */
  serverStatus(batchId?: string): Promise<ServerStatus>;
  /**
   * Mints a dataset API key for each existing workspace (bound to the given knowledge bases, else
   * workspace-wide), each in its own transaction. The tokens are returned to you once, here: keep
   * them safe; dify-provision stores none of them.
   */
  mintApiKeys(
    requests: { tenantId: string; datasetIds?: string[] }[],
    opts?: MintOptions,
  ): Promise<{ tenantId: string; key?: MintedKey; error?: string }[]>;
  /** A workspace's API keys, masked, with their scope. */
  listApiKeys(tenantId: string): Promise<ListedKey[]>;
  /** Writes a batch's sealed API keys to a new 0600 file, once. */
  revealSecrets(batchId: string, privateKeyPem: string, out: string): Promise<number>;
  /**
   * Writes a batch's invitation links (those in Dify's Redis, not revealed yet) to a new 0600
   * file with the email and workspace beside each, once; `byWorkspace`: `out` is a new folder
   * with one 0600 file per workspace (`<workspace id>.csv`). Only links that may go with their
   * workspace are ever revealed (docs/security.md).
   */
  revealInvitations(batchId: string, privateKeyPem: string, out: string, opts?: { byWorkspace?: boolean }): Promise<number>;
  /**
   * A fresh invitation for each person the batch invited who has not activated yet; their other
   * tokens for that workspace are deleted from Dify's Redis. The links are sealed to the batch's
   * key (revealInvitations); those of a batch ingested with `sendInvites` are mailed (this
   * process's Dify mail settings; the outcome is in the report's `mail`); `onIssued` gets each
   * once it is valid.
   */
  resendInvitations(batchId: string, opts?: { onIssued?: OnIssued }): Promise<Resent>;
  /**
   * `invite <batch>`: invitations for the pending people the batch created and never invited (made
   * with createMissingOwners but no invite), only where a link may go (inviter.ts inviteUninvited);
   * `sealTo` (a public PEM) when the batch has no key; `send` mails each link (Dify's mail settings).
   */
  inviteUninvited(batchId: string, opts: { sealTo?: string; send: boolean; onIssued?: OnIssued }): Promise<Invited>;
  close(): Promise<void>;
}

export interface MintOptions {
  /**
   * Called with each key inside its transaction, before the commit: write the token out here. A
   * key commits only once this resolves; when it throws, that key is rolled back, no further key
   * is minted, and mintApiKeys rejects with its error. It may return an undo for its write, run
   * if the commit then fails.
   */
  deliver?: (key: MintedKey) => Promise<(() => Promise<void>) | void>;
}

class DeliveryError extends Error {
  constructor(override readonly cause: unknown) {
    super('the key could not be delivered');
  }
}

export async function createProvisioner(settings: Partial<Config> & { redisUrl: string; databaseUrl: string }): Promise<Provisioner> {
  return provisionerOn(await openQueueRuntime(ConfigSchema.parse(settings)));
}

/** A provisioner over a runtime the caller opened; closing it closes the runtime. */
export function provisionerOn(rt: QueueRuntime): Provisioner {
  const { db, queue } = rt;
  const workers = () => workersServing(queue);
  const handle = (id: string): BatchHandle => ({
    id,
    async status() {
      const s = await getBatchStatus(db, id, await workers());
      if (!s) throw new BatchNotFoundError(id);
      return s;
    },
    progress: (intervalMs = 1000, onUnreachable) => batchProgress(db, id, intervalMs, workers, onUnreachable),
    done: (intervalMs = 1000, onUnreachable) => waitForBatch(db, id, { intervalMs, workers, ...(onUnreachable ? { onUnreachable } : {}) }),
    async report() {
      // A change batch's rows with the change's own fields, the detail apart from any error.
      const changes = (await batchKind(db, id)) === 'changes';
      const out: ReportRow[] = [];
      for await (const r of allReportRows(db, id)) out.push(changes ? changeReportRow(r) : r);
      return out;
    },
    async *reportCsv(opts) {
      yield* csvReport(allReportRows(db, id), { ...opts, kind: await batchKind(db, id) });
    },
    async *reportJson() {
      yield* jsonReport(allReportRows(db, id), { kind: await batchKind(db, id) });
    },
    retryFailed: (opts) => retryFailed(db, queue, id, opts),
    retryRows: (lines, opts) => retryRows(db, queue, id, lines, opts),
    cancel: () => cancelBatch(db, rt, id),
    resumeCancelled: (opts) => resumeCancelled(db, queue, id, opts),
    rowsWithoutJob: async () => {
      const found = await settleLostJobs(db, rt, { batchId: id, idleSeconds: 0, mode: 'count' });
      return found.lost + found.failed;
    },
  });

  const enqueueRows = async (open: () => AsyncIterable<CheckedRow>, reopenable: boolean, opts: EnqueueOptions) => {
    const batchId = asBatchId(opts.batchId ?? generatedBatchId());
    // Asked for here, before anything is recorded: workers need them to issue the tokens (and
    // Dify's mail, MAIL_TYPE=smtp, for --send-invites): refused here, naming the setting.
    refuseUnusableInvitations(rt.config, opts);
    const rows = opts.strict ? await strictly(open, reopenable) : open();
    const summary = await enqueueBatch(
      rows,
      { db, queue, redis: rt.redis, lineage: () => rt.server.state.server.lineage },
      { ...opts, batchId },
    );
    return Object.assign(handle(batchId), { summary });
  };
  // Each read of the file fills its own InputInfo (--strict reads a file twice); the last one is reported.
  const csvSource = (file: string | Readable, opts: ReadOptions) => {
    const source = { info: newInputInfo() };
    const open = () => {
      source.info = newInputInfo();
      const named = typeof file === 'string' && opts.source === undefined ? { ...opts, source: file } : opts;
      return readRows(typeof file === 'string' ? createReadStream(file) : file, named, source.info);
    };
    return { open, source };
  };

  const applyRows = async (open: () => AsyncIterable<CheckedChange>, reopenable: boolean, opts: ApplyOptions) => {
    const batchId = asBatchId(opts.batchId ?? generatedBatchId('changes'));
    refuseUnusableInvitations(rt.config, opts);
    const rows = opts.strict ? await strictly(open, reopenable) : open();
    const summary = await enqueueChanges(
      rows,
      { db, queue, redis: rt.redis, lineage: () => rt.server.state.server.lineage },
      { ...opts, batchId },
    );
    return Object.assign(handle(batchId), { summary });
  };
  const rulesOf = async () => ({ normalized: (await probeDifySchema(db)).normalizedEmail });
  // A changes file's rows; with sync, a membership file's difference with Dify now (changes/sync.ts).
  // What the reading holds in memory (cross-row rules, a membership file read whole) is bounded by the batch's limits.
  // With a scope (--within), a row or membership entry naming a workspace outside it is rejected
  // as read, before a membership file's difference reads any workspace (changes/scope.ts).
  const changeSource =
    (file: string | Readable, opts: ReadOptions & { sync?: boolean; within?: string[] }) => (): AsyncIterable<CheckedChange> => {
      const stream = typeof file === 'string' ? createReadStream(file) : file;
      const read = { ...opts, ...(typeof file === 'string' && opts.source === undefined ? { source: file } : {}) };
      if (!opts.sync) return sameWorkspaceRules(withinScope(readRecords(stream, CHANGE_ROWS, read), db, opts.within), db, limitsOf(opts));
      return (async function* () {
        yield* await syncChanges(withinScope(readRecords(stream, SYNC_ROWS, read), db, opts.within), db, await rulesOf(), limitsOf(opts));
      })();
    };
  const inputSource =
    (
      rows: AsyncIterable<ChangeInput | SyncInput> | Iterable<ChangeInput | SyncInput>,
      opts: HeldLimits & { sync?: boolean; within?: string[] },
    ) =>
    (): AsyncIterable<CheckedChange> =>
      opts.sync
        ? (async function* () {
            yield* await syncChanges(
              withinScope(checkSyncInputs(rows as Iterable<SyncInput>, limitsOf(opts)), db, opts.within),
              db,
              await rulesOf(),
              limitsOf(opts),
            );
          })()
        : sameWorkspaceRules(
            withinScope(checkChangeInputs(rows as Iterable<ChangeInput>, limitsOf(opts)), db, opts.within),
            db,
            limitsOf(opts),
          );

  return {
    enqueue: (rows, opts = {}) => enqueueRows(() => checkInputRows(rows, opts), false, opts),
    apply: (rows, opts = {}) => applyRows(inputSource(rows, opts), false, opts),
    async applyFile(file, opts = {}) {
      if (typeof file === 'string') await checkInputFile(file);
      return applyRows(changeSource(file, opts), typeof file === 'string', {
        ...opts,
        ...(typeof file === 'string' && !opts.source ? { source: file } : {}),
      });
    },
    checkInvitations: (ask) => refuseUnusableInvitations(rt.config, ask),
    async planChanges(input, opts = {}) {
      refuseUnusableInvitations(rt.config, opts);
      sealKeyOf(opts);
      const schema = await probeDifySchema(db);
      if (typeof input === 'string') await checkInputFile(input);
      const rows = typeof input === 'string' || isReadable(input) ? changeSource(input, opts)() : inputSource(input, opts)();
      return planChanges(rows, db, {
        accounts: { normalized: schema.normalizedEmail },
        createMissingAccounts: opts.createMissingOwners ?? false,
        ...(opts.listRows !== undefined ? { listRows: opts.listRows } : {}),
        ...(opts.batchId ? { batchId: opts.batchId } : {}),
        ...(opts.trustAccounts ? { trustAccounts: opts.trustAccounts } : {}),
      });
    },
    async enqueueCsv(file, opts = {}) {
      if (typeof file === 'string') await checkInputFile(file);
      const { open, source } = csvSource(file, opts);
      const batch = await enqueueRows(open, typeof file === 'string', {
        ...opts,
        ...(typeof file === 'string' && !opts.source ? { source: file } : {}),
      });
      batch.summary.input = source.info;
      await recordInput(db, batch.id, source.info);
      return batch;
    },
    async plan(file, opts = {}) {
      refuseUnusableInvitations(rt.config, opts);
      sealKeyOf(opts);
      if (typeof file === 'string') await checkInputFile(file);
      const { open, source } = csvSource(file, opts);
      const schema = await probeDifySchema(db);
      const plan = await planBatch(open(), db, {
        createMissingAccounts: opts.createMissingOwners ?? false,
        allowDuplicateNames: opts.allowDuplicateNames ?? false,
        accounts: { normalized: schema.normalizedEmail },
        ...(opts.batchId ? { batchId: opts.batchId } : {}),
        ...(opts.trustAccounts ? { trustAccounts: opts.trustAccounts } : {}),
        ...(opts.sealTo ? { sealTo: opts.sealTo } : {}),
      });
      return { ...plan, input: source.info };
    },
    batch: handle,
    batches: async (limit) => listBatches(db, limit, await workers()),
    workers,
    difySchema: async () => describeSchema(await probeDifySchema(db)),
    queue: { name: rt.dify.queueName, database: rt.dify.database },
    async serverStatus(batchId) {
      const { gate, message, server } = await rt.server.refresh();
      const otherServers = await rowsOfOtherLineages(db, server.chain, batchId);
      return { gate, ...(message ? { message } : {}), lineage: server.lineage, otherServers };
    },
    async mintApiKeys(requests, opts = {}) {
      const schema = await probeDifySchema(db);
      const out = [];
      for (const r of requests) {
        let undo: (() => Promise<void>) | undefined;
        try {
          const tenantId = r.tenantId.toLowerCase();
          if (!isStrictUuid(tenantId)) throw new UsageError(`tenant "${r.tenantId}" is not a strict UUID`);
          const key = await withTransaction(db, async (tx) => {
            const { rows } = await tx.query(`SELECT 1 FROM tenants WHERE id = $1`, [tenantId]);
            if (rows.length === 0) throw new UsageError(`no Dify workspace has the id ${r.tenantId}`);
            const minted = await mintDatasetKey(tx, tenantId, r.datasetIds ?? [], schema.scoping);
            if (opts.deliver) {
              try {
                undo = (await opts.deliver(minted)) ?? undefined;
              } catch (err) {
                throw new DeliveryError(err);
              }
            }
            return minted;
          });
          out.push({ tenantId: r.tenantId, key });
        } catch (err) {
          // The key is not in Dify: whatever was written of it is taken back.
          await undo?.().catch(() => {});
          if (err instanceof DeliveryError) throw err.cause; // nowhere to put keys: mint no more
          out.push({ tenantId: r.tenantId, error: describeError(err) });
        }
      }
      return out;
    },
    listApiKeys: (tenantId) => listKeys(db, tenantId),
    revealSecrets: (batchId, pem, out) => revealSecrets(db, batchId, loadOpenKey(pem), out),
    revealInvitations: (batchId, pem, out, opts) => revealInvitations(db, batchId, pem, out, opts),
    async inviteUninvited(batchId, opts) {
      const settings = requireInvitations(rt.config);
      if (opts.send) requireMail(rt.config);
      const { band } = await probeDifySchema(db);
      const mail = invitationMail(rt.config, db, rt.logger, opts.onIssued);
      const { inviter, close } = openInviter(settings, band, { logger: rt.logger, onIssued: mail.onIssued });
      try {
        return await inviteUninvited(db, inviter, batchId, { send: opts.send, ...(opts.sealTo ? { sealTo: opts.sealTo } : {}) });
      } finally {
        close();
        mail.close();
      }
    },
    async resendInvitations(batchId, opts = {}) {
      const settings = requireInvitations(rt.config);
      const { band } = await probeDifySchema(db);
      // Fresh links of a batch ingested with --send-invites are mailed too (this process's mail settings).
      const mail = invitationMail(rt.config, db, rt.logger, opts.onIssued);
      const { inviter, close } = openInviter(settings, band, { logger: rt.logger, onIssued: mail.onIssued });
      try {
        return await resendInvitations(db, inviter, batchId);
      } finally {
        close();
        mail.close();
      }
    },
    close: () => rt.close(),
  };
}

const limitsOf = (opts: HeldLimits): HeldLimits => ({
  ...(opts.maxRows !== undefined ? { maxRows: opts.maxRows } : {}),
  ...(opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {}),
});

const isReadable = (x: unknown): x is Readable =>
  typeof (x as Readable | null)?.pipe === 'function' && typeof (x as Readable).read === 'function';

export type { ApplyOptions, ApplySummary, ChangeInput, ChangePlan, SyncInput, EnqueueOptions, EnqueueSummary, WorkspaceInput };
