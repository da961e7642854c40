// The durable answer for every input row: written at ingest, moved along by workers. Each call
// here is one round trip: the worker's hot path.
import type { Db, Tx } from '../db/pool.js';
import type { Account } from '../provision/accounts.js';
import { SCHEMA } from './migrate.js';

export interface LedgerEntry {
  tenantId: string;
  fingerprint: string;
}

export interface AttemptStart {
  cancelled: boolean;
  known?: LedgerEntry;
  /** A Dify tenant with the row's tenant id exists already. */
  tenantTaken: boolean;
  /** Accounts whose email matches one of the emails asked for (case-insensitively). */
  accounts: Account[];
}

/**
 * Marks the row active (one more attempt) unless it was cancelled; returns the ledger entry for
 * its key, whether its tenant id is taken, and the accounts behind its emails.
 */
export async function startAttempt(db: Db, row: { batchId: string; line: number; key: string; tenantId: string }, attempt: number, emails: string[]): Promise<AttemptStart> {
  const { rows } = await db.query<{ cancelled: boolean; tenant_id: string | null; fingerprint: string | null; tenant_taken: boolean; accounts: Account[] | null }>(
    `WITH started AS (
       UPDATE ${SCHEMA}.rows SET outcome = 'active', attempts = $3, updated_at = now()
        WHERE batch_id = $1 AND line = $2 AND outcome IN ('queued', 'active', 'failed')
     )
     SELECT EXISTS (SELECT 1 FROM ${SCHEMA}.rows WHERE batch_id = $1 AND line = $2 AND outcome = 'cancelled') AS cancelled,
            l.tenant_id, l.fingerprint,
            EXISTS (SELECT 1 FROM tenants WHERE id = $5) AS tenant_taken,
            (SELECT json_agg(json_build_object('id', a.id, 'email', a.email, 'status', a.status) ORDER BY a.created_at)
               FROM accounts a WHERE lower(a.email) = ANY($6::text[])) AS accounts
       FROM (SELECT 1) AS one
       LEFT JOIN ${SCHEMA}.ledger l ON l.idempotency_key = $4`,
    [row.batchId, row.line, attempt, row.key, row.tenantId, emails.map((e) => e.toLowerCase())],
  );
  const r = rows[0]!;
  return {
    cancelled: r.cancelled,
    tenantTaken: r.tenant_taken,
    accounts: r.accounts ?? [],
    ...(r.tenant_id ? { known: { tenantId: r.tenant_id, fingerprint: r.fingerprint! } } : {}),
  };
}

/**
 * In the workspace's transaction, after its advisory locks: the ledger entry (a duplicate may
 * have committed while we waited), whether the tenant id is taken, and row locks on the accounts
 * that will join, taken in id order.
 */
export async function checkLocked(tx: Tx, key: string, tenantId: string, accountIds: string[]): Promise<{ known?: LedgerEntry; tenantTaken: boolean }> {
  const { rows } = await tx.query<{ tenant_id: string | null; fingerprint: string | null; tenant_taken: boolean }>(
    `SELECT l.tenant_id, l.fingerprint,
            EXISTS (SELECT 1 FROM tenants WHERE id = $2) AS tenant_taken,
            (SELECT count(*) FROM (SELECT id FROM accounts WHERE id = ANY($3::uuid[]) ORDER BY id FOR UPDATE) AS locked) AS locked
       FROM (SELECT 1) AS one
       LEFT JOIN ${SCHEMA}.ledger l ON l.idempotency_key = $1`,
    [key, tenantId, accountIds],
  );
  const r = rows[0]!;
  return { tenantTaken: r.tenant_taken, ...(r.tenant_id ? { known: { tenantId: r.tenant_id, fingerprint: r.fingerprint! } } : {}) };
}

export async function findLedgerEntry(db: Db | Tx, key: string): Promise<LedgerEntry | undefined> {
  const { rows } = await db.query<{ tenant_id: string; fingerprint: string }>(
    `SELECT tenant_id, fingerprint FROM ${SCHEMA}.ledger WHERE idempotency_key = $1`,
    [key],
  );
  const hit = rows[0];
  return hit ? { tenantId: hit.tenant_id, fingerprint: hit.fingerprint } : undefined;
}

export interface Finished {
  batchId: string;
  line: number;
  outcome: 'created' | 'existing' | 'failed';
  tenantId?: string;
  fingerprint?: string;
  attempts: number;
  durationMs: number;
  error?: string;
  createdAccounts?: string[];
  apiKeyMasked?: string;
}

// A row that was answered created/existing keeps that answer: a job run again after a crash (or
// a Redis restart that lost its completion) must not turn "created" into "existing" or "failed".
const UPDATE_ROW = `UPDATE ${SCHEMA}.rows
    SET outcome = $3, tenant_id = COALESCE($4, tenant_id), fingerprint = $5, attempts = $6,
        duration_ms = $7, error = $8, created_accounts = $9, api_key_masked = COALESCE($10, api_key_masked),
        updated_at = now(), finished_at = now()
  WHERE batch_id = $1 AND line = $2 AND outcome NOT IN ('created', 'existing')`;
const rowParams = (f: Finished) => [f.batchId, f.line, f.outcome, f.tenantId ?? null, f.fingerprint ?? null, f.attempts, Math.round(f.durationMs), f.error ?? null, f.createdAccounts ?? null, f.apiKeyMasked ?? null];

export async function recordOutcome(db: Db | Tx, f: Finished): Promise<void> {
  await db.query(UPDATE_ROW, rowParams(f));
}

/**
 * The ledger row that makes a second run of the same key a no-op, and the row's `created`
 * result: in the workspace's transaction, one round trip.
 */
export async function recordCreated(tx: Tx, key: string, f: Finished): Promise<void> {
  await tx.query(
    `WITH ledger AS (
       INSERT INTO ${SCHEMA}.ledger (idempotency_key, tenant_id, batch_id, line, fingerprint) VALUES ($11, $4, $1, $2, $5)
     )
     ${UPDATE_ROW}`,
    [...rowParams(f), key],
  );
}
