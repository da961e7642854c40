// The /api/v1 request and response shapes, in zod: requests are validated with them and the
// OpenAPI document is generated from them (openapi.ts), so the two cannot drift apart.
import { z } from 'zod';
import { IngestOptionsSchema, IngestOptionsTextSchema } from '../../ingest/options.js';
import { PLAN_VERDICTS } from '../../ingest/plan.js';
import { BATCH_STATES } from '../../store/batches.js';
import { BATCH_KINDS, CHANGE_ACTIONS, OUTCOMES } from '../../common/types.js';
import { CHANGE_REPORT_COLUMNS, REPORT_COLUMNS } from '../../report/format.js';
import { ChangeOptionsSchema, ChangeOptionsTextSchema } from '../../changes/options.js';
import { CHANGE_KINDS } from '../../changes/decide.js';

/** Content types taken as a file in the raw body. */
export const FILE_TYPES = {
  'text/csv': 'CSV',
  'text/plain': 'CSV',
  'application/csv': 'CSV',
  'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet': '.xlsx workbook',
  'application/octet-stream': 'CSV or .xlsx (told apart by content)',
} as const;
const count = z.number().int().min(0);
const line = z.number().int().min(1).describe('the row\'s line in the file (a sheet\'s row number), or its 1-based position in "rows"');
const batchId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");

export const FieldErrorSchema = z.object({ field: z.string(), message: z.string() });
export const RowProblemsSchema = z.object({ line, errors: z.array(FieldErrorSchema) });

export const ErrorBodySchema = z.object({
  error: z.object({
    code: z
      .string()
      .describe('stable: UNAUTHORIZED, FORBIDDEN, READ_ONLY, INVALID_REQUEST, STRICT_REJECTED, CSV_FORMAT, BATCH_NOT_FOUND, …'),
    message: z.string(),
    details: z
      .array(FieldErrorSchema)
      .optional()
      .describe(
        '400 INVALID_REQUEST: each problem by field, as a path (query.limit, body.options.attempts, form.delimiter, body.rows.0.plan)',
      ),
    rows: z.array(RowProblemsSchema).optional().describe('every invalid row, by line (strict ingest, an unreadable file)'),
  }),
});

const text = z.union([z.string(), z.number(), z.boolean()]);
export const WorkspaceInputSchema = z
  .object({
    workspace_name: text.optional().describe('required (a row without it is rejected, with its line)'),
    owner_email: text.optional().describe('required'),
    plan: text.optional(),
    members: z
      .union([z.string(), z.array(z.object({ email: z.string(), role: z.string() }))])
      .optional()
      .describe('"email:role;email:role" or a list of { email, role }'),
    external_id: text.optional(),
    workspace_id: text.optional(),
    dataset_api_key: z.union([z.string(), z.boolean()]).optional(),
  })
  .strict();

export const OptionsSchema = IngestOptionsSchema;

/** A POST's JSON body: the rows, the batch id, the options. */
const rowsBody = (rows: z.ZodType, what: string, options: z.ZodType) =>
  z
    .object({
      rows: z.array(rows).describe(what),
      batch_id: batchId.optional().describe('default: a generated id; the same id with the same rows queues nothing twice'),
      options: options.optional(),
    })
    .strict();

export const RowsBodySchema = rowsBody(WorkspaceInputSchema, 'the workspaces, as the CSV columns', OptionsSchema);

/** A file's options (raw body: the query string; multipart: form fields). */
export const FileQuerySchema = IngestOptionsTextSchema.extend({
  batch_id: batchId.optional().describe("default: from the file's name and content (the same file is the same batch)"),
}).strict();

/** A change to an existing workspace, as the changes file's columns. */
export const ChangeInputSchema = z
  .object({
    action: text.optional().describe(`required: ${CHANGE_ACTIONS.join(', ')} (a row without it is rejected, with its line)`),
    workspace_id: text.optional().describe('the Dify workspace id (or external_id: the id the workspace was ingested with)'),
    external_id: text.optional(),
    email: text.optional().describe('add_member, remove_member, set_role, transfer_owner: the person'),
    role: text.optional().describe('add_member, set_role: admin, editor, normal or dataset_operator (never owner: transfer_owner)'),
    name: text.optional().describe("rename: the workspace's new name"),
  })
  .strict();

export const ChangeRowsBodySchema = rowsBody(
  ChangeInputSchema,
  "the changes, one per row, as the changes file's columns",
  ChangeOptionsSchema,
);

/** A changes file's options (raw body: the query string; multipart: form fields). */
export const ChangeFileQuerySchema = ChangeOptionsTextSchema.extend({
  batch_id: batchId
    .optional()
    .describe('default: a generated id (applying the same file again is a new batch whose rows answer unchanged)'),
}).strict();

const InputInfoSchema = z.object({
  format: z.enum(['csv', 'xlsx']),
  encoding: z.string().optional(),
  delimiter: z.enum([',', ';', '\t']).optional(),
  sheet: z.string().optional(),
  empty_rows: count,
});

export const EnqueueResponseSchema = z.object({
  batch_id: z.string(),
  total: count.describe('rows read (valid + rejected)'),
  queued: count.describe('valid rows recorded for the first time (and queued)'),
  rejected: count,
  already_in_batch: count.describe('valid rows this batch had recorded already (the same batch sent again)'),
  likely_duplicates: count,
  input: InputInfoSchema.optional(),
  rejected_rows: z.array(RowProblemsSchema).describe(`the rejected rows with why (the first ${1000})`),
  not_applied: z
    .array(z.string())
    .optional()
    .describe(
      'the batch existed: options this request asked for that it was not made with (create_missing_owners, trust_accounts, …), not applied; create_missing_owners and trust_accounts can be given to its failed rows by POST /batches/{id}/retry, the others need a new batch_id',
    ),
});

/** What POST /changes answers: ingest's answer without what only ingest knows (likely duplicates, the input's format). */
export const ApplyResponseSchema = EnqueueResponseSchema.omit({ likely_duplicates: true, input: true, not_applied: true });

/** Rows a plan lists with their verdict (the counts and `problems` cover every row). */
export const PLAN_ROWS_LISTED = 1000;

/** A plan's problems: every one, by line and field. */
const PlanProblemsSchema = z.array(z.object({ line, field: z.string(), message: z.string() }));

export const PlanResponseSchema = z.object({
  total: count,
  would_create: count,
  existing: count,
  rejected: count,
  would_fail: count.describe(
    "valid rows that would fail: missing or ambiguous owners/members, taken workspace ids, accounts the pre-claim guard refuses (another batch's operator was given their link; trust_accounts lets them through)",
  ),
  likely_duplicates: count,
  problems: PlanProblemsSchema,
  input: InputInfoSchema.optional(),
  rows: z
    .array(
      z.object({
        line,
        workspace_name: z.string().nullable(),
        owner_email: z.string().nullable(),
        verdict: z.enum(PLAN_VERDICTS),
      }),
    )
    .describe(`the first ${PLAN_ROWS_LISTED} rows, each with what it would get (the reasons are in problems, by line)`),
});

const verdictsDescribed =
  "what each change would do: one of the plan's change kinds, unchanged (Dify shows it already), rejected (invalid) or refused (by Dify's rules now)";
export const ChangePlanResponseSchema = z.object({
  summary: z.string().describe('"would add 12, remove 3, re-role 2, transfer 1, rename 1, archive 1; 4 unchanged; 2 refused"'),
  total: count,
  would_apply: z.object(Object.fromEntries(CHANGE_KINDS.map((k) => [k, count])) as Record<(typeof CHANGE_KINDS)[number], typeof count>),
  unchanged: count.describe('rows whose change Dify already shows'),
  rejected: count.describe('invalid rows (line and field): apply records them rejected'),
  refused: count.describe(
    "valid rows Dify's rules would refuse now (unknown workspace or person, the owner, an archived workspace), or the pre-claim guard (trust_accounts)",
  ),
  problems: PlanProblemsSchema,
  input: InputInfoSchema.optional(),
  rows: z
    .array(
      z.object({
        line,
        action: z.string().nullable(),
        verdict: z.enum([...CHANGE_KINDS, 'unchanged', 'rejected', 'refused']).describe(verdictsDescribed),
        tenant_id: z.string().nullable(),
        external_id: z.string().nullable().describe('the external_id the row named its workspace by, if it did'),
        email: z.string().nullable(),
        note: z.string().nullable().describe('why it is unchanged, refused or rejected'),
      }),
    )
    .describe(`the first ${PLAN_ROWS_LISTED} rows, each with what it would do`),
});

const Counts = z.object(Object.fromEntries(OUTCOMES.map((o) => [o, count])) as Record<(typeof OUTCOMES)[number], typeof count>);
const workers = z.number().int().nullable().describe('workers serving this Dify now (null: Redis does not say, or does not answer)');
const redisUnreachable = z
  .boolean()
  .describe("Redis did not answer: no worker can take rows (state stalled, advice says so); the counts are PostgreSQL's");
const when = z.string().describe('ISO 8601');

export const BatchListingSchema = z.object({
  batch_id: z.string(),
  kind: z.enum(BATCH_KINDS).describe('provision (POST /batches, ingest) or changes (POST /changes, apply)'),
  source: z.string().nullable(),
  created_at: when,
  state: z.enum(BATCH_STATES),
  total: count,
  counts: Counts,
  workers,
  redis_unreachable: redisUnreachable,
});
export const BatchListResponseSchema = z.object({
  batches: z.array(BatchListingSchema),
  next: z.string().nullable().describe('pass as `after` for the next (older) page; null: this was the last'),
});
const isoTime = z.iso.datetime({ offset: true }).transform((s) => new Date(s));
export const BatchListQuerySchema = z
  .object({
    limit: z.coerce.number().int().min(1).max(1000).optional().describe('default 100'),
    after: z.string().min(1).max(200).optional().describe('`next` of the previous page: the batches older than its last'),
    state: z.enum(BATCH_STATES).optional(),
    kind: z.enum(['provision', 'changes']).optional().describe('provision (ingest) or changes (apply)'),
    q: z.string().min(1).max(200).optional().describe('part of the batch id or its source (file name), any case'),
    created_after: isoTime.optional().describe('ISO 8601 with an offset: batches created at or after'),
    created_before: isoTime.optional().describe('ISO 8601 with an offset: batches created before'),
  })
  .strict();

export const BatchStatusSchema = z.object({
  batch_id: z.string(),
  kind: z.enum(BATCH_KINDS).describe('provision (POST /batches, ingest) or changes (POST /changes, apply)'),
  source: z.string().nullable(),
  created_at: when,
  ingested: z.boolean(),
  total: count,
  counts: Counts,
  open: count.describe('rows still to be answered (queued or active)'),
  finished: count,
  done: z.boolean(),
  succeeded: z.boolean(),
  state: z.enum(BATCH_STATES),
  workers,
  redis_unreachable: redisUnreachable,
  waiting_for_redis: count.describe(
    'rows active while Redis does not answer: no worker can be said to run them; they wait for Redis (0 while it answers)',
  ),
  advice: z.string().nullable().describe('what to do: start a worker, or "Redis is unreachable: no worker can take rows"'),
  options: z
    .record(z.string(), z.unknown())
    .describe('the options the batch was made with (as asked: create_missing_owners, encoding, delimiter, …; the seal key by its SHA-256)'),
  input: z
    .record(z.string(), z.unknown())
    .nullable()
    .describe('how its file was read: format, encoding, delimiter, sheet, empty_rows (null: JSON rows)'),
  throughput: z.object({
    per_second: z.number(),
    eta_seconds: z.number().nullable(),
    timeline: z.array(z.object({ t: z.number(), n: count })),
    bucket_seconds: z.number(),
  }),
});

export const BatchParamsSchema = z.object({ id: batchId });

export const ReportRowSchema = z.object({
  line,
  external_id: z.string().nullable(),
  workspace_name: z.string().nullable(),
  owner_email: z.string().nullable(),
  outcome: z.enum(OUTCOMES),
  tenant_id: z.string().nullable(),
  public_key_sha256: z.string().nullable(),
  attempts: count,
  duration_ms: z.number().int().nullable(),
  accounts_created: z.array(z.string()).nullable(),
  api_key: z.string().nullable().describe('masked as Dify masks it'),
  error: z.string().nullable(),
  mail: z
    .string()
    .nullable()
    .describe('--send-invites: "email: sent", "email: failed: reason" or "email: not sent yet" per invitation, "; " between them'),
  dify_tasks: z
    .string()
    .nullable()
    .describe(
      'the Celery tasks Dify itself queues after creating a workspace, queued by us for this one (its default plugins, NEW_USER_DEFAULT_PLUGIN_IDS): "install_default_plugins_task: queued" or ": not queued yet"',
    ),
  invitations: z
    .string()
    .nullable()
    .describe('--invite: who was not invited, or whose link was revoked since, and why ("email: reason", "; " between them)'),
} satisfies Record<(typeof REPORT_COLUMNS)[number], z.ZodType>);

/** A change batch's row (apply): its action and outcome (applied, unchanged, rejected, failed). */
export const ChangeReportRowSchema = z.object({
  line,
  action: z.enum(CHANGE_ACTIONS).nullable().describe('null: a row too invalid to say'),
  workspace_id: z.string().nullable(),
  external_id: z.string().nullable(),
  email: z.string().nullable(),
  role: z.string().nullable(),
  name: z.string().nullable().describe("rename: the workspace's new name"),
  outcome: z.enum(OUTCOMES),
  detail: z
    .string()
    .nullable()
    .describe(
      'why it was rejected, refused or failed; why it is unchanged; what else it did (an account created or deleted, tokens revoked)',
    ),
  accounts_created: z.array(z.string()).nullable(),
  attempts: count,
  duration_ms: z.number().int().nullable(),
  mail: z.string().nullable(),
} satisfies Record<(typeof CHANGE_REPORT_COLUMNS)[number], z.ZodType>);

export const RowsQuerySchema = z
  .object({
    outcome: z.enum(OUTCOMES).optional(),
    q: z.string().min(1).max(320).optional().describe('part of the workspace name, owner email or external id, any case'),
    after: z.coerce.number().int().min(0).optional().describe('rows after this line (next_after of the previous page)'),
    limit: z.coerce.number().int().min(1).max(1000).optional().describe('default 100'),
  })
  .strict();
const waitingForRedis = z
  .literal(true)
  .optional()
  .describe('present on an active row while Redis does not answer: it is not running, it waits for Redis');

export const RowsPageSchema = z.object({
  rows: z
    .array(
      z.union([
        ReportRowSchema.extend({ waiting_for_redis: waitingForRedis }),
        ChangeReportRowSchema.extend({ waiting_for_redis: waitingForRedis }),
      ]),
    )
    .describe("a provisioning batch's rows, or a change batch's (with action and outcome)"),
  redis_unreachable: redisUnreachable,
  next_after: z.number().int().nullable().describe('pass as `after` for the next page; null: this was the last'),
});

export const ReportSchema = z.array(ReportRowSchema);
export const ChangeReportSchema = z.array(ChangeReportRowSchema);
/** GET /batches/{id}/report: a provisioning batch's rows, or a change batch's. */
export const AnyReportSchema = z
  .union([ReportSchema, ChangeReportSchema])
  .describe("a provisioning batch's rows, or a change batch's (columns of its own: action, outcome, detail)");

export const RowParamsSchema = z.object({ id: batchId, line: z.coerce.number().int().min(1).max(2_147_483_647) });

const orNull = (s: string) => z.string().nullable().describe(s);
export const RowDetailSchema = ReportRowSchema.extend({
  waiting_for_redis: waitingForRedis,
  round: z.number().int().min(1).describe('1, then one more each time the row is queued again (retry, a cancel undone)'),
  recorded_at: when.describe('when the batch recorded it'),
  updated_at: when.describe('its last change'),
  finished_at: orNull('ISO 8601: its final answer (null while queued or active)'),
  members: z.array(z.object({ email: z.string(), role: z.string() })).describe('the members the row asked for'),
  invitations_issued: z
    .array(
      z.object({
        email: z.string(),
        role: z.string(),
        issued_at: when,
        stored_at: orNull("ISO 8601: when its token went into Dify's Redis (null: not yet)"),
        mail: orNull('sent, failed: why, not sent yet; null: not mailed (--send-invites not asked)'),
        superseded: z.boolean().describe('replaced by a newer invitation (a resend)'),
      }),
    )
    .describe('the invitations issued for this row (never the link: `secrets --invites` reveals it)'),
});

export const InviteBodySchema = z
  .object({
    seal_to: z.string().min(1).optional().describe("the operator's RSA public key (PEM), for a batch that has none (then kept as its key)"),
    send_invites: z.boolean().optional().describe("also mail each person their link through Dify's SMTP settings"),
  })
  .strict();
export const InviteResponseSchema = z.object({
  batch_id: z.string(),
  invited: count.describe("invitations issued (tokens in Dify's Redis)"),
  mail_only: count.describe('of them, links only mailed to the person (in another workspace too): never revealed'),
  withheld: count.describe('people in another workspace too, without send_invites: no link (it would set their password there as well)'),
  message: z.string(),
});

/** trust_accounts as ingest's (--trust-account), for rows queued again (the CLI's `retry --trust-account`). */
const trustAccounts = IngestOptionsSchema.shape.trust_accounts.describe(
  "existing accounts the rows queued again may join although another batch's operator was given their link (CLI: retry --trust-account; docs/security.md): recorded with the batch, each row trusting those it names",
);
/** create_missing_owners for rows queued again (the CLI's `retry --create-missing-owners`). */
const createMissingOwners = z
  .boolean()
  .optional()
  .describe(
    "create the accounts the rows queued again name that do not exist, pending, as Dify's invite does (CLI: retry --create-missing-owners): recorded with the batch",
  );
/** POST /batches/{id}/retry and /resume: a body is optional (none: the rows as they were). */
export const RequeueBodySchema = z.object({ trust_accounts: trustAccounts, create_missing_owners: createMissingOwners }).strict();
export const RetryRowsBodySchema = z
  .object({
    lines: z.array(z.number().int().min(1)).min(1).max(1000).describe("the rows' lines (1-1000 of them)"),
    trust_accounts: trustAccounts,
    create_missing_owners: createMissingOwners,
  })
  .strict();
export const RetryRowsResponseSchema = z.object({
  batch_id: z.string(),
  rows: count.describe('rows queued again'),
  lines: z.array(z.number().int()).describe('their lines'),
  message: z.string(),
});

export const ControlResponseSchema = z.object({
  batch_id: z.string(),
  rows: count.describe('rows retried, cancelled or resumed'),
  message: z.string(),
});
