// The durable answer for every input row: written at ingest, moved along by workers.
import type { Db, Tx } from '../db/pool.js';
import { SCHEMA } from './migrate.js';

export interface LedgerEntry {
  tenantId: string;
  fingerprint: string;
}

/**
 * Marks the row active (one more attempt) unless it was cancelled, and returns the ledger entry
 * for its key: one round trip.
 */
export async function startAttempt(db: Db, batchId: string, line: number, attempt: number, key: string): Promise<{ cancelled: boolean; known?: LedgerEntry }> {
  const { rows } = await db.query<{ cancelled: boolean; tenant_id: string | null; fingerprint: string | null }>(
    `WITH started AS (
       UPDATE ${SCHEMA}.rows SET outcome = 'active', attempts = $3, updated_at = now()
        WHERE batch_id = $1 AND line = $2 AND outcome IN ('queued', 'active', 'failed')
     )
     SELECT EXISTS (SELECT 1 FROM ${SCHEMA}.rows WHERE batch_id = $1 AND line = $2 AND outcome = 'cancelled') AS cancelled,
            l.tenant_id, l.fingerprint
       FROM (SELECT 1) AS one
       LEFT JOIN ${SCHEMA}.ledger l ON l.idempotency_key = $4`,
    [batchId, line, attempt, key],
  );
  const r = rows[0]!;
  return { cancelled: r.cancelled, ...(r.tenant_id ? { known: { tenantId: r.tenant_id, fingerprint: r.fingerprint! } } : {}) };
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
}

export async function recordOutcome(db: Db | Tx, f: Finished): Promise<void> {
  await db.query(
    `UPDATE ${SCHEMA}.rows
        SET outcome = $3, tenant_id = COALESCE($4, tenant_id), fingerprint = $5, attempts = $6,
            duration_ms = $7, error = $8, created_accounts = $9, updated_at = now(), finished_at = now()
      WHERE batch_id = $1 AND line = $2`,
    [f.batchId, f.line, f.outcome, f.tenantId ?? null, f.fingerprint ?? null, f.attempts, Math.round(f.durationMs), f.error ?? null, f.createdAccounts ?? null],
  );
}

/** The ledger row that makes a second run of the same key a no-op; in the workspace's transaction. */
export async function insertLedgerEntry(tx: Tx, key: string, tenantId: string, batchId: string, line: number, fingerprint: string): Promise<void> {
  await tx.query(
    `INSERT INTO ${SCHEMA}.ledger (idempotency_key, tenant_id, batch_id, line, fingerprint) VALUES ($1, $2, $3, $4, $5)`,
    [key, tenantId, batchId, line, fingerprint],
  );
}
