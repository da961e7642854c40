// The queue contract between ingest and workers: the queue's name, what a job carries (only what
// the CSV said: never a secret), and how job ids derive from the idempotency key.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { CONTROL, MAX_MEMBERS } from '../input/workspace-row.js';
import { CHANGE_ACTIONS, isBatchId, isStrictUuid, MEMBER_ROLES } from '../common/types.js';
import { LANGUAGE_TIMEZONES, TIMEZONES } from '../dify/profile-lists.js';

const TIMEZONE_SET = new Set(TIMEZONES);

// The same bounds ingest enforces (input/workspace-row.ts); the worker also checks that a job is
// exactly what ingest recorded, so these only keep malformed data out of the SQL.
const text = (max: number) =>
  z
    .string()
    .min(1)
    .refine((s) => [...s].length <= max && !CONTROL.test(s) && s.isWellFormed(), `must be 1-${max} printable characters`);

export const JobDataSchema = z.strictObject({
  batchId: z.string().refine(isBatchId, 'is not a batch id'),
  line: z.number().int().positive(),
  key: text(1200),
  tenantId: z.string().refine(isStrictUuid, 'must be a lower-case strict UUID'),
  workspaceName: text(255),
  ownerEmail: text(255),
  plan: text(255),
  members: z.array(z.strictObject({ email: text(255), role: z.enum(MEMBER_ROLES) })).max(MAX_MEMBERS),
  externalId: text(255).optional(),
  /**
   * The owner's profile, when the row gives one (owner_name, owner_language, owner_timezone):
   * written if the row creates the owner's account. Absent otherwise, so other specs are as they were.
   */
  ownerProfile: z
    .strictObject({
      name: text(255).optional(),
      language: z.enum(Object.keys(LANGUAGE_TIMEZONES) as [string, ...string[]]).optional(),
      timezone: z
        .string()
        .refine((t) => TIMEZONE_SET.has(t), 'is not a timezone Dify knows')
        .optional(),
    })
    .optional(),
  /** Create owner/member accounts that don't exist, as Dify's invite flow does (pending). */
  createMissingAccounts: z.boolean().default(false),
  /** Mint a workspace-wide dataset API key, sealed to the batch's operator key. */
  mintDatasetKey: z.boolean().default(false),
  /**
   * Invitations (--invite): a token in Dify's Redis and a sealed link for each account the row
   * creates; with invitePending also for its accounts still pending. Present only when true, so
   * the specs of batches without them are as they were.
   */
  invite: z.literal(true).optional(),
  invitePending: z.literal(true).optional(),
  /** Mail each link once it is in Dify's Redis (--send-invites; the worker's onInviteIssued sends it). */
  sendInvites: z.literal(true).optional(),
  /**
   * Addresses the operator confirmed are their person (--trust-account): the pre-claim guard
   * (docs/security.md) lets the row join them. Present only when given.
   */
  trustAccounts: z.array(text(255)).max(1000).optional(),
  /** The lineage of the PostgreSQL server the row was queued on (store/server.ts); absent on rows queued before it existed. */
  lineage: z.string().refine(isStrictUuid, 'must be a lower-case strict UUID').optional(),
});
export type JobData = z.output<typeof JobDataSchema>;

/**
 * A change to an existing workspace (apply): one row of a changes file, as apply recorded it.
 * Only what the file said and the batch's flags; the workspace's state is read when it runs.
 */
export const ChangeJobSchema = z.strictObject({
  kind: z.literal('change'),
  batchId: z.string().refine(isBatchId, 'is not a batch id'),
  line: z.number().int().positive(),
  key: text(1200),
  action: z.enum(CHANGE_ACTIONS),
  /** The workspace: its Dify id, or the external_id our ledger recorded for it (exactly one). */
  workspaceId: z.string().refine(isStrictUuid, 'must be a lower-case strict UUID').optional(),
  externalId: text(255).optional(),
  email: text(255).optional(),
  role: z.enum(MEMBER_ROLES).optional(),
  name: text(255).optional(),
  /** transfer_owner of a person an add_member row of the same file (this line) adds: waits for it. */
  afterLine: z.number().int().positive().optional(),
  createMissingAccounts: z.boolean().default(false),
  /** As JobData's (--trust-account). */
  trustAccounts: z.array(text(255)).max(1000).optional(),
  invite: z.literal(true).optional(),
  sendInvites: z.literal(true).optional(),
  /** apply --within: the ingest batches whose workspaces this row may act on (changes/scope.ts). */
  within: z.array(z.string().refine(isBatchId, 'is not a batch id')).min(1).optional(),
  lineage: z.string().refine(isStrictUuid, 'must be a lower-case strict UUID').optional(),
});
export type ChangeJob = z.output<typeof ChangeJobSchema>;

/** What a worker's queue carries: a workspace to create, or a change to one. */
export const AnyJobSchema = z.union([ChangeJobSchema, JobDataSchema]);
export type AnyJob = JobData | ChangeJob;
export const isChangeJob = (job: AnyJob): job is ChangeJob => 'kind' in job && job.kind === 'change';

export interface JobResult {
  outcome: 'created' | 'existing' | 'applied' | 'unchanged' | 'cancelled';
  tenantId?: string;
}

/** One job per row and round; re-adding the same id is a no-op in BullMQ (ids may not contain ':'). */
export function jobIdFor(batchId: string, key: string, round = 1): string {
  const digest = createHash('sha256').update(key).digest('hex').slice(0, 32);
  return round > 1 ? `${batchId}.${digest}.r${round}` : `${batchId}.${digest}`;
}

/**
 * The round a job id names for this batch and key (the inverse of jobIdFor), or undefined when
 * the id is not one of this row's: a job under any other id is not ours to run.
 */
export function roundOfJobId(jobId: string | undefined, batchId: string, key: string): number | undefined {
  if (jobId === undefined) return undefined;
  const first = jobIdFor(batchId, key);
  if (jobId === first) return 1;
  const round = Number(jobId.slice(first.length + 2));
  return jobId.startsWith(`${first}.r`) && Number.isSafeInteger(round) && round > 1 && jobIdFor(batchId, key, round) === jobId
    ? round
    : undefined;
}

export interface RetryPolicy {
  attempts: number;
  backoffMs: number;
}
export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, backoffMs: 1000 };

export function jobOptions(retry: RetryPolicy) {
  return {
    attempts: retry.attempts,
    backoff: { type: 'exponential' as const, delay: retry.backoffMs },
    // Outcomes live in PostgreSQL; Redis keeps only what is still to do, and failures for a week.
    removeOnComplete: true,
    removeOnFail: { age: 7 * 24 * 3600 },
  };
}

/** The BullMQ job for a row's spec, in a given round (retry and un-cancel start a new round). */
export function jobFor(spec: AnyJob, retry: RetryPolicy, round = 1) {
  return {
    name: isChangeJob(spec) ? 'change' : 'workspace',
    data: spec,
    opts: { ...jobOptions(retry), jobId: jobIdFor(spec.batchId, spec.key, round) },
  };
}
