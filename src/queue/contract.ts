// The queue contract between ingest and workers: the queue's name, what a job carries (only what
// the CSV said: never a secret), and how job ids derive from the idempotency key.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { MEMBER_ROLES } from '../types.js';

export const QUEUE_NAME = 'provision';

export const JobDataSchema = z.object({
  batchId: z.string().min(1),
  line: z.number().int().positive(),
  key: z.string().min(1),
  tenantId: z.uuid(),
  workspaceName: z.string().min(1),
  ownerEmail: z.string().min(1),
  plan: z.string().min(1),
  members: z.array(z.object({ email: z.string().min(1), role: z.enum(MEMBER_ROLES) })),
  externalId: z.string().optional(),
  /** Create owner/member accounts that don't exist, as Dify's invite flow does (pending). */
  createMissingAccounts: z.boolean().default(false),
  /** Mint a workspace-wide dataset API key, sealed to the batch's operator key. */
  mintDatasetKey: z.boolean().default(false),
});
export type JobData = z.output<typeof JobDataSchema>;

export interface JobResult {
  outcome: 'created' | 'existing' | 'cancelled';
  tenantId?: string;
}

/** One job per row and round; re-adding the same id is a no-op in BullMQ (ids may not contain ':'). */
export function jobIdFor(batchId: string, key: string, round = 1): string {
  const digest = createHash('sha256').update(key).digest('hex').slice(0, 32);
  return round > 1 ? `${batchId}.${digest}.r${round}` : `${batchId}.${digest}`;
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
