// /api/v1: batches from any language. Each route is declared once here, with the zod schemas
// that validate its path, query and body; the same declarations register the fastify routes and
// generate the OpenAPI document (openapi.ts). Field names are snake_case, errors one body
// ({ error: { code, message, rows? } }, errors.ts), and POSTs honour Idempotency-Key.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import type { Queue } from 'bullmq';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { newInputInfo, type InputInfo } from '../../input/decode.js';
import { readRecords, readRows } from '../../input/read-rows.js';
import type { RejectedRow } from '../../input/row-checker.js';
import type { Db } from '../../db/pool.js';
import type { InvitationAsk } from '../../config/config.js';
import { probeDifySchema } from '../../dify/schema-probe.js';
import { BatchNotFoundError } from '../../common/errors.js';
import { batchIdForFile } from '../../ingest/batch-id.js';
import type { EnqueueSummary } from '../../ingest/enqueue-batch.js';
import { checkInputRows, type WorkspaceInput } from '../../input/input-rows.js';
import { libraryOptions, type IngestOptions } from '../../ingest/options.js';
import { planBatch, type Plan } from '../../ingest/plan.js';
import type { Provisioner } from '../../provisioner.js';
import type { RedisClient } from '../../queue/connection.js';
import { cancelBatch, resumeCancelled, retryFailed, retryRows, trustingWords, type RequeueOptions } from '../../queue/batch-control.js';
import { changeRecord, csvReport, jsonReport, reportRecord } from '../../report/format.js';
import {
  batchKind,
  getBatchStatus,
  getThroughput,
  pageBatches,
  type BatchCursor,
  type WorkerCensus,
  type Workers,
} from '../../store/batches.js';
import { CHANGE_ROWS, checkChangeInputs, type ChangeInput, type CheckedChange } from '../../changes/change-row.js';
import { changeLibraryOptions, type ChangeOptions } from '../../changes/options.js';
import { withinScope } from '../../changes/scope.js';
import { sameWorkspaceRules } from '../../changes/same-workspace.js';
import type { ApplySummary } from '../../changes/enqueue-changes.js';
import { sealKeyOf } from '../../crypto/sealing.js';
import { describePlan, planChanges, type ChangePlan } from '../../changes/plan.js';
import { allReportRows, reportRows, rowDetail, type ReportRow, type RowDetail } from '../../store/report.js';
import { generatedBatchId, type Outcome } from '../../common/types.js';
import { attachment } from '../download.js';
import { ApiRefusal, errorResponse, InvalidRequestError, parseRequest } from './errors.js';
import { idempotencyStore, requestHash, type Answer } from './idempotency.js';
import * as S from './schemas.js';
import { FILE_TYPES } from './schemas.js';
import { openApiDocument, type DocumentedRoute } from './openapi.js';
import { declaredTooLarge, uploadDir, UploadTooLargeError, type UploadDir } from './uploads.js';

export const API_PREFIX = '/api/v1';

/** JSON bodies are read whole: rows beyond this go as a file. */
export const JSON_BODY_LIMIT = 16 << 20;
/** Rejected rows listed in an ingest's answer (all of them are in the report). */
const REJECTED_LISTED = 1000;

export interface ApiDeps {
  db: Db;
  queue: Queue;
  redis: RedisClient;
  /** Workers serving the queue now. */
  workers: WorkerCensus;
  /** Enqueues (POST /batches, POST /changes); without it those routes answer 503. */
  provisioner?: Provisioner;
  /** The upload cap and the batch's bound of recorded rows (ingest's --max-bytes). */
  maxBytes: number;
  /** Where uploads are spooled (default: the system temp dir). */
  tmpDir?: string;
}

/** A route: what the OpenAPI document says of it, and its handler. */
export interface ApiRoute extends DocumentedRoute {
  handle(ctx: Ctx): Promise<Answer | void>;
}

export interface Ctx {
  req: FastifyRequest;
  reply: FastifyReply;
  params: Record<string, string>;
  query: Record<string, unknown>;
  input: Input;
}

/**
 * What a POST carried, once read: JSON rows, a spooled file, or nothing. The rows and options are
 * those the route's schemas validated: a workspace's (ingest) or a change's (apply).
 */
type Input<R = WorkspaceInput, O = IngestOptions> =
  | { kind: 'none' }
  | { kind: 'json'; body: unknown }
  | { kind: 'rows'; rows: R[]; batchId?: string; options: O }
  | { kind: 'file'; path: string; name: string; batchId?: string; options: O };
/** A change route's input (its schemas are ChangeRowsBodySchema and ChangeFileQuerySchema). */
const changeInput = (input: Input) => input as unknown as Input<ChangeInput, ChangeOptions>;

export function apiRoutes(deps: ApiDeps): ApiRoute[] {
  const mustExist = async (id: string) => {
    if (!(await getBatchStatus(deps.db, id))) throw new BatchNotFoundError(id);
  };
  // A plan refuses invitation options this server cannot honour, as the batch would (the library's one decision).
  const checkInvitations = (ask: InvitationAsk) => {
    if (!ask.invite && !ask.invitePending && !ask.sendInvites) return;
    if (!deps.provisioner) throw new ApiRefusal('UNAVAILABLE', 503, 'this dashboard was started without a queue: it cannot invite');
    deps.provisioner.checkInvitations(ask);
  };
  // retry and resume take an optional body (trust_accounts); cancel none.
  const control = (
    verb: string,
    past: string,
    run: (id: string, opts: RequeueOptions) => Promise<number>,
    what: string,
    body?: typeof S.RequeueBodySchema,
  ): ApiRoute => ({
    method: 'POST',
    path: `${API_PREFIX}/batches/{id}/${verb}`,
    operationId: `${verb}Batch`,
    summary: what,
    params: S.BatchParamsSchema,
    ...(body ? { body, optionalBody: true as const } : {}),
    ok: { status: 200, description: `rows ${past}`, schema: S.ControlResponseSchema },
    errors: body ? [400, 404, 409, 422] : [404, 409, 422],
    async handle({ params, input }) {
      await mustExist(params.id!);
      const opts = requeueOptions(input);
      const n = await run(params.id!, opts);
      return { status: 200, body: { batch_id: params.id, rows: n, message: `${n} row(s) ${past}${trustingWords(opts, n)}` } };
    },
  });

  const routes: ApiRoute[] = [
    {
      method: 'GET',
      path: `${API_PREFIX}/openapi.json`,
      operationId: 'getOpenApi',
      summary: 'This document (OpenAPI 3.1), generated from the schemas that validate the requests',
      ok: { status: 200, description: 'the OpenAPI document', schema: z.record(z.string(), z.unknown()) },
      errors: [],
      handle: async () => ({ status: 200, body: openApiDocument(routes) }),
    },
    {
      method: 'POST',
      path: `${API_PREFIX}/batches`,
      operationId: 'createBatch',
      summary: 'Validate rows (JSON, or a CSV/.xlsx file), record each and queue the valid ones',
      body: S.RowsBodySchema,
      files: S.FileQuerySchema,
      ok: {
        status: 201,
        description: 'the batch, recorded: rows read, queued, rejected (with why)',
        schema: S.EnqueueResponseSchema,
        headers: { Location: 'the batch: /api/v1/batches/{batch_id}' },
      },
      also: { status: 200, description: 'a repost that changes nothing: the batch existed and no row was new to it' },
      errors: [400, 409, 413, 415, 422, 503],
      async handle({ input }) {
        if (!deps.provisioner) throw new ApiRefusal('UNAVAILABLE', 503, 'this dashboard was started without a queue to enqueue on');
        if (input.kind === 'none' || input.kind === 'json')
          throw new ApiRefusal('INVALID_REQUEST', 400, 'send rows as JSON, or a CSV/.xlsx file');
        const rejected: RejectedRow[] = [];
        const common = {
          ...libraryOptions(input.options),
          maxBytes: deps.maxBytes,
          onRejected: (r: RejectedRow) => void (rejected.length < REJECTED_LISTED && rejected.push(r)),
        };
        const batch =
          input.kind === 'rows'
            ? await deps.provisioner.enqueue(input.rows, {
                ...common,
                batchId: input.batchId ?? generatedBatchId('api'),
                source: input.options.source ?? 'api',
              })
            : await deps.provisioner.enqueueCsv(input.path, {
                ...common,
                batchId: input.batchId ?? (await batchIdForFile(input.path)),
                source: input.options.source ?? input.name,
              });
        const s = batch.summary;
        // A repost that changes nothing is no creation: 200, the batch as it is.
        if (s.batchCreated === false && s.queued === 0) return { status: 200, body: summaryBody(s, rejected) };
        return {
          status: 201,
          body: summaryBody(s, rejected),
          headers: { location: `${API_PREFIX}/batches/${encodeURIComponent(s.batchId)}` },
        };
      },
    },
    {
      method: 'POST',
      path: `${API_PREFIX}/plans`,
      operationId: 'planBatch',
      summary: 'What creating this batch would do (a dry run against Dify: writes nothing)',
      body: S.RowsBodySchema,
      files: S.FileQuerySchema,
      ok: {
        status: 200,
        description: 'the plan: would create / existing / rejected / would fail, with each problem',
        schema: S.PlanResponseSchema,
      },
      errors: [400, 413, 415, 422, 503],
      async handle({ input }) {
        if (input.kind === 'none' || input.kind === 'json')
          throw new ApiRefusal('INVALID_REQUEST', 400, 'send rows as JSON, or a CSV/.xlsx file');
        const opts = libraryOptions(input.options);
        checkInvitations(opts);
        sealKeyOf(opts);
        const planOpts = {
          createMissingAccounts: opts.createMissingOwners ?? false,
          allowDuplicateNames: opts.allowDuplicateNames ?? false,
          accounts: { normalized: (await probeDifySchema(deps.db)).normalizedEmail },
          listRows: S.PLAN_ROWS_LISTED,
          // The pre-claim guard as POST /batches would meet it: that batch (its own links are no
          // pre-claim: a file's id from its name and content, rows' a new one), trust_accounts, seal_to.
          ...(input.batchId ? { batchId: input.batchId } : input.kind === 'file' ? { batchId: await batchIdForFile(input.path) } : {}),
          ...(opts.trustAccounts ? { trustAccounts: opts.trustAccounts } : {}),
          ...(opts.sealTo ? { sealTo: opts.sealTo } : {}),
        };
        if (input.kind === 'rows')
          return { status: 200, body: planBody(await planBatch(checkInputRows(input.rows, opts), deps.db, planOpts)) };
        const info = newInputInfo();
        // The dashboard's --max-bytes bounds what a workbook unpacks to, as in POST /batches (ingest).
        const read = readRows(createReadStream(input.path), { ...opts, maxBytes: deps.maxBytes }, info);
        const plan = await planBatch(read, deps.db, planOpts);
        return { status: 200, body: planBody({ ...plan, input: info }) };
      },
    },
    {
      method: 'POST',
      path: `${API_PREFIX}/changes`,
      operationId: 'applyChanges',
      summary:
        'Changes to existing workspaces (add_member, remove_member, set_role, transfer_owner, rename, archive, restore), one per row (JSON, or a CSV/.xlsx file): record each as a change batch and queue the valid ones',
      body: S.ChangeRowsBodySchema,
      files: S.ChangeFileQuerySchema,
      ok: { status: 201, description: 'the change batch: rows read, queued, rejected (with why)', schema: S.ApplyResponseSchema },
      errors: [400, 409, 413, 415, 422, 503],
      async handle(ctx) {
        if (!deps.provisioner) throw new ApiRefusal('UNAVAILABLE', 503, 'this dashboard was started without a queue to enqueue on');
        const input = changeInput(ctx.input);
        if (input.kind === 'none' || input.kind === 'json')
          throw new ApiRefusal('INVALID_REQUEST', 400, 'send rows as JSON, or a CSV/.xlsx file');
        const rejected: Extract<CheckedChange, { ok: false }>[] = [];
        const common = {
          ...changeLibraryOptions(input.options),
          maxBytes: deps.maxBytes,
          // Applying the same file again is a new batch (its rows answer unchanged), as the CLI's apply.
          batchId: input.batchId ?? generatedBatchId('changes'),
          onRejected: (r: Extract<CheckedChange, { ok: false }>) => void (rejected.length < REJECTED_LISTED && rejected.push(r)),
        };
        const batch =
          input.kind === 'rows'
            ? await deps.provisioner.apply(input.rows, { ...common, source: input.options.source ?? 'api' })
            : await deps.provisioner.applyFile(input.path, { ...common, source: input.options.source ?? input.name });
        return { status: 201, body: summaryBody(batch.summary, rejected) };
      },
    },
    {
      method: 'POST',
      path: `${API_PREFIX}/changes/plans`,
      operationId: 'planChanges',
      summary: 'What applying these changes would do now (a dry run against Dify, read-only: writes nothing, queues nothing)',
      body: S.ChangeRowsBodySchema,
      files: S.ChangeFileQuerySchema,
      ok: {
        status: 200,
        description: 'the plan: per change kind, unchanged, rejected and refused rows, each problem by line and field',
        schema: S.ChangePlanResponseSchema,
      },
      errors: [400, 413, 415, 422, 503],
      async handle(ctx) {
        const input = changeInput(ctx.input);
        if (input.kind === 'none' || input.kind === 'json')
          throw new ApiRefusal('INVALID_REQUEST', 400, 'send rows as JSON, or a CSV/.xlsx file');
        const opts = changeLibraryOptions(input.options);
        checkInvitations(opts);
        sealKeyOf(opts);
        const planOpts = {
          accounts: { normalized: (await probeDifySchema(deps.db)).normalizedEmail },
          createMissingAccounts: opts.createMissingOwners ?? false,
          listRows: S.PLAN_ROWS_LISTED,
          // The pre-claim guard as POST /changes meets it: its batch_id (else a new batch) and trust_accounts.
          ...(input.batchId ? { batchId: input.batchId } : {}),
          ...(opts.trustAccounts ? { trustAccounts: opts.trustAccounts } : {}),
        };
        if (input.kind === 'rows')
          return {
            status: 200,
            body: changePlanBody(
              await planChanges(
                sameWorkspaceRules(withinScope(checkChangeInputs(input.rows), deps.db, opts.within), deps.db),
                deps.db,
                planOpts,
              ),
            ),
          };
        const info = newInputInfo();
        const read = readRecords(createReadStream(input.path), CHANGE_ROWS, { ...opts, maxBytes: deps.maxBytes }, info);
        const plan = await planChanges(
          sameWorkspaceRules(withinScope(read, deps.db, opts.within), deps.db, { maxBytes: deps.maxBytes }),
          deps.db,
          planOpts,
        );
        return { status: 200, body: changePlanBody({ ...plan, input: info }) };
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/batches`,
      operationId: 'listBatches',
      summary: 'The batches, newest first, with their state and counts: a page at a time (pass next as after), filtered',
      query: S.BatchListQuerySchema,
      ok: { status: 200, description: 'newest first', schema: S.BatchListResponseSchema },
      errors: [400],
      async handle({ query: raw }) {
        const query = raw as z.output<typeof S.BatchListQuerySchema>;
        const page = await pageBatches(
          deps.db,
          {
            limit: query.limit ?? 100,
            ...(query.after ? { before: cursorOf(query.after) } : {}),
            ...(query.state ? { state: query.state } : {}),
            ...(query.kind ? { kind: query.kind } : {}),
            ...(query.q ? { search: query.q } : {}),
            ...(query.created_after ? { createdAfter: query.created_after } : {}),
            ...(query.created_before ? { createdBefore: query.created_before } : {}),
          },
          await deps.workers(),
        );
        return {
          status: 200,
          body: { batches: page.batches.map(snake), next: page.next ? Buffer.from(JSON.stringify(page.next)).toString('base64url') : null },
        };
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/batches/{id}`,
      operationId: 'getBatch',
      summary: "A batch's counts, state, workers and throughput",
      params: S.BatchParamsSchema,
      ok: { status: 200, description: 'the batch now', schema: S.BatchStatusSchema },
      errors: [404],
      async handle({ params }) {
        return { status: 200, body: statusBody(await liveStatus(deps.db, params.id!, await deps.workers())) };
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/batches/{id}/rows`,
      operationId: 'listBatchRows',
      summary: "A page of a batch's rows in line order (keyset: pass next_after as after)",
      params: S.BatchParamsSchema,
      query: S.RowsQuerySchema,
      ok: { status: 200, description: 'rows after `after`', schema: S.RowsPageSchema },
      errors: [400, 404],
      async handle({ params, query }) {
        await mustExist(params.id!);
        const limit = (query.limit as number | undefined) ?? 100;
        const rows = await reportRows(deps.db, params.id!, {
          afterLine: (query.after as number | undefined) ?? 0,
          limit: limit + 1,
          ...(query.outcome ? { outcome: query.outcome as Outcome } : {}),
          ...(query.q ? { search: query.q as string } : {}),
        });
        const page = rows.slice(0, limit);
        const record: (r: ReportRow) => object = (await batchKind(deps.db, params.id!)) === 'changes' ? changeRecord : reportRecord;
        // While Redis does not answer, an active row runs for all anyone can tell: it waits for Redis.
        const unreachable = (await deps.workers()) === 'unreachable';
        return {
          status: 200,
          body: {
            rows: page.map((r) => ({ ...record(r), ...waitingFor(unreachable, r) })),
            next_after: rows.length > limit ? page[page.length - 1]!.line : null,
            redis_unreachable: unreachable,
          },
        };
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/batches/{id}/report`,
      operationId: 'getBatchReport',
      summary: "Every row's answer: JSON, or CSV with Accept: text/csv (streamed)",
      params: S.BatchParamsSchema,
      ok: {
        status: 200,
        description: "the report (a change batch's has its own columns: action, outcome, detail)",
        schema: S.AnyReportSchema,
        csv: true,
      },
      errors: [404],
      async handle({ req, reply, params }) {
        await mustExist(params.id!);
        const csv = prefersCsv(req.headers.accept);
        const rows = allReportRows(deps.db, params.id!);
        const kind = await batchKind(deps.db, params.id!);
        return reply
          .type(csv ? 'text/csv; charset=utf-8' : 'application/json; charset=utf-8')
          .header('content-disposition', attachment(`${params.id}-report.${csv ? 'csv' : 'json'}`))
          .send(Readable.from(csv ? csvReport(rows, { kind }) : jsonReport(rows, { kind })));
      },
    },
    {
      method: 'GET',
      path: `${API_PREFIX}/batches/{id}/rows/{line}`,
      operationId: 'getBatchRow',
      summary: 'One row in full: its answer, attempts, round, times, error, and what was written (workspace, key, accounts, invitations)',
      params: S.RowParamsSchema,
      ok: { status: 200, description: 'the row', schema: S.RowDetailSchema },
      errors: [400, 404],
      async handle({ params }) {
        const line = Number(params.line);
        const row = await rowDetail(deps.db, params.id!, line);
        if (!row) {
          await mustExist(params.id!);
          throw new ApiRefusal('ROW_NOT_FOUND', 404, `batch "${params.id}" has no line ${line}`);
        }
        return { status: 200, body: { ...rowDetailBody(row), ...waitingFor((await deps.workers()) === 'unreachable', row) } };
      },
    },
    {
      method: 'POST',
      path: `${API_PREFIX}/batches/{id}/rows/retry`,
      operationId: 'retryBatchRows',
      summary: 'Queue these rows again (one or a selection): those failed or cancelled, each as a new round',
      params: S.BatchParamsSchema,
      body: S.RetryRowsBodySchema,
      ok: { status: 200, description: 'the lines queued again', schema: S.RetryRowsResponseSchema },
      errors: [400, 404, 422],
      async handle({ params, input }) {
        if (input.kind !== 'json') throw new ApiRefusal('INVALID_REQUEST', 400, 'send JSON: { "lines": [3, 7] }');
        await mustExist(params.id!);
        const { lines } = input.body as z.output<typeof S.RetryRowsBodySchema>;
        const opts = requeueOptions(input);
        const queued = await retryRows(deps.db, deps.queue, params.id!, lines, opts);
        const left = lines.filter((l) => !queued.includes(l));
        return {
          status: 200,
          body: {
            batch_id: params.id,
            rows: queued.length,
            lines: queued,
            message:
              `${queued.length} row(s) queued again${trustingWords(opts, queued.length)}` +
              (left.length ? `; not queued (not failed or cancelled, or not in this batch): line(s) ${left.join(', ')}` : ''),
          },
        };
      },
    },
    {
      method: 'POST',
      path: `${API_PREFIX}/batches/{id}/invite`,
      operationId: 'inviteBatch',
      summary:
        "Invitations for the pending people the batch created and never invited (made without invite): Dify's tokens, links sealed to the batch's key (or seal_to)",
      params: S.BatchParamsSchema,
      body: S.InviteBodySchema,
      optionalBody: true,
      ok: { status: 200, description: 'who got an invitation, and who none', schema: S.InviteResponseSchema },
      errors: [400, 404, 422, 503],
      async handle({ params, input }) {
        if (!deps.provisioner) throw new ApiRefusal('UNAVAILABLE', 503, 'this dashboard was started without a queue to enqueue on');
        await mustExist(params.id!);
        const body = (input.kind === 'json' ? input.body : {}) as z.output<typeof S.InviteBodySchema>;
        const r = await deps.provisioner.inviteUninvited(params.id!, {
          send: body.send_invites ?? false,
          ...(body.seal_to ? { sealTo: body.seal_to } : {}),
        });
        return {
          status: 200,
          body: {
            batch_id: params.id,
            invited: r.invited,
            mail_only: r.mailOnly,
            withheld: r.withheld,
            message:
              `${r.invited} pending person(s) got an invitation` +
              (r.mailOnly > 0 ? ` (${r.mailOnly} by mail only: in another workspace too)` : '') +
              (r.withheld > 0 ? `; ${r.withheld} got none: in another workspace too (send_invites mails them one)` : '') +
              (r.invited - r.mailOnly > 0 ? `; reveal the links with: dify-provision secrets ${params.id} --invites` : ''),
          },
        };
      },
    },
    control(
      'retry',
      'queued again',
      (id, opts) => retryFailed(deps.db, deps.queue, id, opts),
      'Queue the failed rows again (a new round); trust_accounts, create_missing_owners: as retry --trust-account, --create-missing-owners',
      S.RequeueBodySchema,
    ),
    control('cancel', 'cancelled', (id) => cancelBatch(deps.db, deps, id), 'Cancel the rows still waiting (rows being processed finish)'),
    control(
      'resume',
      'queued again',
      (id, opts) => resumeCancelled(deps.db, deps.queue, id, opts),
      'Queue the cancelled rows again (undo a cancel); trust_accounts, create_missing_owners: as retry --cancelled with those flags',
      S.RequeueBodySchema,
    ),
  ];
  return routes;
}

/** What a retry's or resume's JSON body asks (trust_accounts, create_missing_owners), if it has one. */
function requeueOptions(input: Input): RequeueOptions {
  const body = input.kind === 'json' ? (input.body as z.output<typeof S.RequeueBodySchema>) : {};
  return {
    ...(body.trust_accounts ? { trustAccounts: body.trust_accounts } : {}),
    ...(body.create_missing_owners ? { createMissingOwners: true } : {}),
  };
}

/** A batch's status with its throughput (the pages' and the API's). */
export async function liveStatus(db: Db, id: string, workers: Workers) {
  const status = await getBatchStatus(db, id, workers);
  if (!status) throw new BatchNotFoundError(id);
  const t = await getThroughput(db, id, status.open);
  // Without a worker nothing moves: no rate from the rows of a worker that has stopped, no ETA.
  return { ...status, throughput: status.state === 'stalled' ? { ...t, perSecond: 0, etaSeconds: null } : t };
}

/** An active row while Redis does not answer is marked waiting_for_redis (it is not running). */
const waitingFor = (unreachable: boolean, r: { outcome: Outcome }) =>
  unreachable && r.outcome === 'active' ? { waiting_for_redis: true as const } : {};

/** A batch's status as the API answers it: snake_case names, but a column map's headings as they were written. */
function statusBody(s: Awaited<ReturnType<typeof liveStatus>>) {
  const body = snake(s);
  if (s.options['columnMap'] !== undefined) body.options.column_map = s.options['columnMap'];
  return body;
}

/** A row in full, as the API answers it: the report's columns, then how it went and what it wrote. */
export function rowDetailBody(r: RowDetail) {
  return {
    ...reportRecord(r),
    round: r.round,
    recorded_at: r.recordedAt.toISOString(),
    updated_at: r.updatedAt.toISOString(),
    finished_at: r.finishedAt ? r.finishedAt.toISOString() : null,
    members: r.members,
    invitations_issued: r.issued.map((i) => ({
      email: i.email,
      role: i.role,
      issued_at: i.issuedAt.toISOString(),
      stored_at: i.storedAt ? i.storedAt.toISOString() : null,
      mail: i.mail,
      superseded: i.superseded,
    })),
  };
}

/** A batch list's `after`, as `next` gave it. */
function cursorOf(after: string): BatchCursor {
  try {
    const c = JSON.parse(Buffer.from(after, 'base64url').toString('utf8')) as Partial<BatchCursor>;
    if (typeof c.createdAt === 'string' && !Number.isNaN(Date.parse(c.createdAt)) && typeof c.batchId === 'string')
      return { createdAt: c.createdAt, batchId: c.batchId };
  } catch {
    // refused below
  }
  throw new InvalidRequestError('query: after: not a `next` this API gave', undefined, [
    { field: 'query.after', message: 'not a `next` this API gave' },
  ]);
}

/** What an ingest (POST /batches) or an apply (POST /changes) recorded, and the first rejected rows. */
function summaryBody(s: EnqueueSummary | ApplySummary, rejected: { line: number; errors: RejectedRow['errors'] }[]) {
  return {
    batch_id: s.batchId,
    total: s.total,
    queued: s.queued,
    rejected: s.rejected,
    already_in_batch: s.alreadyInBatch,
    ...('likelyDuplicates' in s ? { likely_duplicates: s.likelyDuplicates } : {}),
    ...('input' in s && s.input ? { input: snake(s.input) } : {}),
    rejected_rows: rejected.map((r) => ({ line: r.line, errors: r.errors })),
    ...('notApplied' in s && s.notApplied ? { not_applied: s.notApplied.map(snakeName) } : {}),
  };
}

function planBody(p: Plan & { input?: InputInfo }) {
  return snake(p);
}

/** The change plan as the API answers it: its counts by change kind keep their names ("re-role"). */
function changePlanBody(p: ChangePlan & { input?: InputInfo }) {
  const { wouldApply, ...rest } = p;
  return { summary: describePlan(p), ...snake(rest), would_apply: wouldApply };
}

const snakeName = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Keys in snake_case (deep), dates as ISO 8601: the library's objects as the API answers them. */
export function snake(value: unknown): any {
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(snake);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [snakeName(k), snake(v)]));
}

/** Multipart: a few option fields beside the one file (a PEM is the largest field). */
const MULTIPART_OVERHEAD = 1 << 20;

/**
 * Registers /api/v1 (in its own plugin context: its content types, multipart and error body
 * stay there) and returns its routes, for the OpenAPI document.
 */
export async function registerApi(app: FastifyInstance, deps: ApiDeps): Promise<ApiRoute[]> {
  const routes = apiRoutes(deps);
  const idempotency = idempotencyStore(deps.redis, deps.queue);
  await app.register(
    async (api) => {
      await api.register(multipart, { throwFileSizeLimit: true });
      api.removeContentTypeParser(['text/plain']);
      // A file's body stays a stream: counted and spooled by the route, never read whole.
      api.addContentTypeParser(Object.keys(FILE_TYPES), (_req, payload, done) => done(null, payload));
      api.setErrorHandler((err, _req, reply) => {
        const { status, body } = errorResponse(err);
        // Whatever of a refused upload is still on its way is not read: the connection closes.
        if (status === 413) void reply.header('connection', 'close');
        void reply.code(status).send(body);
      });
      api.setNotFoundHandler((req, reply) =>
        reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } }),
      );
      for (const route of routes) {
        api.route({
          method: route.method,
          url: route.path.slice(API_PREFIX.length).replace(/\{(\w+)\}/g, ':$1') || '/',
          bodyLimit: Math.min(JSON_BODY_LIMIT, deps.maxBytes),
          handler: async (req, reply) => {
            let uploads: UploadDir | undefined;
            const dir = async () => (uploads ??= await uploadDir(deps.tmpDir));
            let answer: (Answer & { replayed?: boolean }) | void;
            // The upload's folder is gone before the answer (or the error) is sent.
            try {
              const params = (route.params ? parseRequest(route.params, req.params, 'path') : {}) as Record<string, string>;
              const query = route.query ? parseRequest(route.query, queryOf(req.query), 'query') : {};
              const { input, hash } = await readInput(req, route, deps.maxBytes, dir);
              const run = () => route.handle({ req, reply, params, query, input });
              const key = req.headers['idempotency-key'];
              answer =
                route.method === 'POST' && typeof key === 'string'
                  ? await idempotency.once(
                      key,
                      requestHash(req.method, pathAndQuery(req), hash),
                      async () => (await run()) ?? { status: 204, body: null },
                    )
                  : await run();
            } finally {
              await uploads?.remove();
            }
            if (!answer) return reply; // the route answered itself (a streamed report)
            if (answer.replayed) void reply.header('idempotent-replayed', 'true');
            if (answer.headers) void reply.headers(answer.headers);
            return reply.code(answer.status).send(answer.body);
          },
        });
      }
    },
    { prefix: API_PREFIX },
  );
  return routes;
}

/** Accept: text/csv (preferred over JSON by its q-value, or alone) asks for CSV; anything else gets JSON. */
export function prefersCsv(accept: string | undefined): boolean {
  const q = (type: string) =>
    Math.max(
      -1,
      ...(accept ?? '').split(',').map((part) => {
        const [media, ...params] = part.split(';').map((x) => x.trim().toLowerCase());
        if (media !== type) return -1;
        const weight = params.find((p) => p.startsWith('q='));
        return weight ? Number(weight.slice(2)) || 0 : 1;
      }),
    );
  const csv = q('text/csv');
  return csv > 0 && csv > q('application/json');
}

// fastify's query values are strings (a ?token= never gets here: src/dashboard/auth.ts refuses it on the API).
const queryOf = (query: unknown): Record<string, string> => (query ?? {}) as Record<string, string>;

function pathAndQuery(req: FastifyRequest): string {
  const url = new URL(req.url, 'http://api.invalid');
  url.searchParams.sort();
  return `${url.pathname}?${url.searchParams.toString()}`;
}

const mediaType = (req: FastifyRequest) => (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();

/** The POST's rows or file, with a hash of what was sent (for Idempotency-Key). */
async function readInput(
  req: FastifyRequest,
  route: ApiRoute,
  cap: number,
  dir: () => Promise<UploadDir>,
): Promise<{ input: Input; hash: string }> {
  const type = mediaType(req);
  if (route.method !== 'POST' || (!route.body && !route.files))
    return { input: { kind: 'none' }, hash: requestHash(JSON.stringify(req.body ?? null)) };
  if (type === 'application/json' && route.body && !route.files)
    return { input: { kind: 'json', body: parseRequest(route.body, req.body, 'body') }, hash: requestHash(JSON.stringify(req.body)) };
  if (type === 'application/json' && route.body) {
    const body = parseRequest(route.body, req.body, 'body') as z.output<typeof S.RowsBodySchema>;
    return {
      input: {
        kind: 'rows',
        rows: body.rows as WorkspaceInput[],
        ...(body.batch_id ? { batchId: body.batch_id } : {}),
        options: body.options ?? {},
      },
      hash: requestHash(JSON.stringify(req.body)),
    };
  }
  if (!route.files) return { input: { kind: 'none' }, hash: '' };
  if (type === 'multipart/form-data') {
    if (declaredTooLarge(req.headers['content-length'], cap + MULTIPART_OVERHEAD)) throw new UploadTooLargeError(cap);
    const fields: Record<string, string> = {};
    let file: { path: string; sha256: string; name: string } | undefined;
    const parts = req.parts({ limits: { fileSize: cap + 1, files: 1, fields: 20, fieldSize: 64 << 10, parts: 21 } });
    // Busboy reads the raw request and skips what is no part (a preamble, an epilogue): every byte
    // counts here, so a chunked form that never reaches a file part is refused past the cap too.
    let received = 0;
    const count = (chunk: Buffer) => {
      received += chunk.length;
      if (received <= cap + MULTIPART_OVERHEAD) return;
      req.raw.off('data', count);
      req.raw.emit('error', new UploadTooLargeError(cap)); // ends the parts with this error
    };
    req.raw.on('data', count);
    for await (const part of parts) {
      if (part.type === 'field') fields[part.fieldname] = String(part.value);
      else if (part.fieldname !== 'file') {
        part.file.resume();
        throw new ApiRefusal('INVALID_REQUEST', 400, `multipart: the file goes in the field "file", not "${part.fieldname}"`);
      } else file = { ...(await (await dir()).spool(part.file, part.filename || 'upload', cap)), name: part.filename || 'upload' };
    }
    if (!file) throw new ApiRefusal('INVALID_REQUEST', 400, 'multipart: no "file" part (the CSV or .xlsx file)');
    return fileInput(route.files, fields, 'form fields', file);
  }
  if (type in FILE_TYPES) {
    if (declaredTooLarge(req.headers['content-length'], cap)) throw new UploadTooLargeError(cap);
    const query = queryOf(req.query);
    parseRequest(route.files, query, 'query'); // bad options are refused before a byte of the file is read
    const spooled = await (await dir()).spool(req.body as Readable, 'upload', cap);
    return fileInput(route.files, query, 'query', { ...spooled, name: 'upload' });
  }
  throw new ApiRefusal(
    'UNSUPPORTED_MEDIA_TYPE',
    415,
    `send application/json, multipart/form-data or a file as ${Object.keys(FILE_TYPES).join(', ')}`,
  );
}

function fileInput(
  schema: z.ZodObject,
  fields: Record<string, string>,
  where: string,
  file: { path: string; sha256: string; name: string },
) {
  const { batch_id, ...options } = parseRequest(schema, fields, where) as z.output<typeof S.FileQuerySchema>;
  return {
    input: {
      kind: 'file' as const,
      path: file.path,
      name: file.name,
      ...(batch_id ? { batchId: batch_id } : {}),
      options: options as IngestOptions,
    },
    // The file's name is part of the request: it names the batch when no batch_id is given.
    hash: requestHash(file.sha256, file.name, JSON.stringify(Object.entries(fields).sort())),
  };
}
