import { randomBytes } from 'node:crypto';
import { UsageError } from './errors.js';

// Branded identifiers: a tenant id is not any string, a batch id is not a tenant id.
declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

export type BatchId = Brand<string, 'BatchId'>;

/** A Dify account, as far as we read it. */
export interface Account {
  id: string;
  email: string;
  status: string;
  /** accounts.normalized_email, where this Dify keeps it (dify/normalized-email.ts). */
  normalizedEmail?: string | null;
}

/** The final (or current) state of one input row. */
export const OUTCOMES = ['queued', 'active', 'created', 'existing', 'applied', 'unchanged', 'rejected', 'failed', 'cancelled'] as const;
export type Outcome = (typeof OUTCOMES)[number];
/** A row's final answer that nothing rewrites: a workspace created or found, a change applied or found done. */
export const SUCCEEDED: readonly Outcome[] = ['created', 'existing', 'applied', 'unchanged'];

/** What a batch does: provision new workspaces (ingest) or change existing ones (apply). */
export const BATCH_KINDS = ['provision', 'changes'] as const;
export type BatchKind = (typeof BATCH_KINDS)[number];

export const MEMBER_ROLES = ['admin', 'editor', 'normal', 'dataset_operator'] as const;
export type MemberRole = (typeof MEMBER_ROLES)[number];

/** What one row of a changes file (apply) does to an existing workspace. */
export const CHANGE_ACTIONS = ['add_member', 'remove_member', 'set_role', 'transfer_owner', 'rename', 'archive', 'restore'] as const;
export type ChangeAction = (typeof CHANGE_ACTIONS)[number];

const BATCH_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const isBatchId = (value: string): boolean => BATCH_ID.test(value);

export function asBatchId(value: string): BatchId {
  if (!isBatchId(value)) {
    throw new UsageError(`batch id "${value}" is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return value as BatchId;
}

/** A fresh batch id: `<prefix>-<UTC yyyymmdd-hhmmss>-<6 hex>`. */
export function generatedBatchId(prefix = 'batch', now = new Date()): BatchId {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
  return asBatchId(`${prefix}-${stamp}-${randomBytes(3).toString('hex')}`);
}

/** Strict, canonical UUID (any version, RFC variant), not the nil UUID. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export function isStrictUuid(value: string): boolean {
  return UUID.test(value);
}
