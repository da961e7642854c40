// The idempotency ledger: one row per idempotency key that ever made a tenant. It is what makes
// a re-ingest, a retry or a job run twice answer "existing" instead of creating again.
import type { Db, Tx } from '../db/pool.js';
import type { LedgerEntry } from './rows.js';
import { SCHEMA } from './schema.js';

export async function findLedgerEntry(db: Db | Tx, key: string): Promise<LedgerEntry | undefined> {
  const { rows } = await db.query<{ tenant_id: string; fingerprint: string }>(
    `SELECT tenant_id, fingerprint FROM ${SCHEMA}.ledger WHERE idempotency_key = $1`,
    [key],
  );
  const hit = rows[0];
  return hit ? { tenantId: hit.tenant_id, fingerprint: hit.fingerprint } : undefined;
}

/**
 * In the workspace's transaction, after its advisory locks: the ledger entry (a duplicate may
 * have committed while we waited), whether the tenant id is taken, and row locks on the accounts
 * that will join, taken in id order; `lockedAccounts` says how many of them still exist.
 */
export async function checkLocked(
  tx: Tx,
  key: string,
  tenantId: string,
  accountIds: string[],
): Promise<{ known?: LedgerEntry; tenantTaken: boolean; lockedAccounts: number }> {
  const { rows } = await tx.query<{ tenant_id: string | null; fingerprint: string | null; tenant_taken: boolean; locked: number }>(
    `SELECT l.tenant_id, l.fingerprint,
            EXISTS (SELECT 1 FROM tenants WHERE id = $2) AS tenant_taken,
            (SELECT count(*)::int FROM (SELECT id FROM accounts WHERE id = ANY($3::uuid[]) ORDER BY id FOR UPDATE) AS locked) AS locked
       FROM (SELECT 1) AS one
       LEFT JOIN ${SCHEMA}.ledger l ON l.idempotency_key = $1`,
    [key, tenantId, accountIds],
  );
  const r = rows[0]!;
  return {
    tenantTaken: r.tenant_taken,
    lockedAccounts: r.locked,
    ...(r.tenant_id ? { known: { tenantId: r.tenant_id, fingerprint: r.fingerprint! } } : {}),
  };
}

/** Which of these keys the ledger knows (read-only; empty before our schema exists). */
export async function knownKeys(db: Db, keys: string[]): Promise<Set<string>> {
  const { rows: has } = await db.query(`SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'ledger'`, [
    SCHEMA,
  ]);
  if (has.length === 0) return new Set();
  const { rows } = await db.query<{ k: string }>(`SELECT idempotency_key AS k FROM ${SCHEMA}.ledger WHERE idempotency_key = ANY($1)`, [
    keys,
  ]);
  return new Set(rows.map((r) => r.k));
}

/** Ledger rows whose tenant no longer exists (deleted by hand, say). */
export async function ledgerWithoutTenant(db: Db): Promise<{ tenant_id: string; idempotency_key: string }[]> {
  const { rows } = await db
    .query<{ tenant_id: string; idempotency_key: string }>(
      `SELECT l.tenant_id, l.idempotency_key FROM ${SCHEMA}.ledger l LEFT JOIN tenants t ON t.id = l.tenant_id WHERE t.id IS NULL`,
    )
    .catch(() => ({ rows: [] as { tenant_id: string; idempotency_key: string }[] }));
  return rows;
}
