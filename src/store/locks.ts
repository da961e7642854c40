// Every advisory lock dify-provision takes, named once. Workers, doctor and ingest must agree on
// these names: a key file is only ever written or removed under its tenant's lock.
import { inlined, withTransaction, type Db, type Statement, type Tx } from '../db/pool.js';

const LOCK = {
  key: 'dify-provision:key:',
  tenant: 'dify-provision:tenant:',
  account: 'dify-provision:account:',
  apiKeys: 'dify-provision:apikeys:',
  batch: 'dify-provision:batch:',
  sweep: 'dify-provision:sweep',
  migrate: 'dify_provision:migrate',
} as const;

const lockSql = (n: number) => `pg_advisory_xact_lock(hashtextextended($${n}, 0))`;

/** One idempotency key, then its tenant id: always in this order, so two jobs can't deadlock. */
export async function lockKeyAndTenant(tx: Tx, key: string, tenantId: string): Promise<void> {
  const s = lockKeyAndTenantStatement(key, tenantId);
  await tx.query(s.text, s.values);
}

/** lockKeyAndTenant as a statement, to send with others in one round trip (db/pool.ts inlined). */
export const lockKeyAndTenantStatement = (key: string, tenantId: string): Statement => ({
  text: `SELECT ${lockSql(1)}, ${lockSql(2)}`,
  values: [LOCK.key + key, LOCK.tenant + tenantId],
});

/** A tenant id: held by a worker from writing its key file until its commit, and by doctor --fix. */
export async function lockTenant(tx: Tx, tenantId: string): Promise<void> {
  const s = lockTenantStatement(tenantId);
  await tx.query(s.text, s.values);
}

/** lockTenant as a statement, to send with others in one round trip (db/pool.ts inlined). */
export const lockTenantStatement = (tenantId: string): Statement => ({ text: `SELECT ${lockSql(1)}`, values: [LOCK.tenant + tenantId] });

/** A new account's email (lower-cased): two rows naming it create it once. */
export async function lockAccountEmail(tx: Tx, email: string): Promise<void> {
  await tx.query(`SELECT ${lockSql(1)}`, [LOCK.account + email.toLowerCase()]);
}

/** A workspace's API keys: one mint at a time, so Dify's limit of 10 holds. */
export async function lockApiKeys(tx: Tx, tenantId: string): Promise<void> {
  await tx.query(`SELECT ${lockSql(1)}`, [LOCK.apiKeys + tenantId]);
}

/** A batch's ingest: a second ingest of the same batch waits for the first, then finds its rows. */
export async function lockBatch(tx: Tx, batchId: string): Promise<void> {
  await tx.query(`SELECT ${lockSql(1)}`, [LOCK.batch + batchId]);
}

/**
 * Waits at most `waitMs` for the batch's lock to be free (a shared hold, let go at once): true when
 * no ingest (nor invite) holds it now, false when one still does. Ingest queues a batch's jobs as
 * it records the rows, before its COMMIT: a worker that cannot see a job's row yet waits here, then
 * looks again (the row is there once the ingest committed, and never was if it was refused).
 */
export async function awaitBatchLock(db: Db, batchId: string, waitMs: number): Promise<boolean> {
  const client = await db.connect();
  let broken = false;
  try {
    await client.query(
      inlined(
        'BEGIN',
        `SET LOCAL lock_timeout = ${Math.max(1, Math.round(waitMs))}`,
        { text: `SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))`, values: [LOCK.batch + batchId] },
        'COMMIT',
      ),
    );
    return true;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    if ((err as { code?: unknown }).code === '55P03') return false;
    throw err;
  } finally {
    client.release(broken);
  }
}

/** The lost-job sweep: one worker at a time; the others skip their turn (false). */
export async function trySweepLock(tx: Tx): Promise<boolean> {
  const { rows } = await tx.query<{ got: boolean }>(`SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS got`, [LOCK.sweep]);
  return rows[0]!.got;
}

/** Our schema's migration: many workers may start at once. */
export async function lockMigration(tx: Tx): Promise<void> {
  await tx.query(`SELECT ${lockSql(1)}`, [LOCK.migrate]);
}

/**
 * Removes a key that may be an orphan: under the tenant's lock (a worker holds it from writing a
 * key until its commit), and only if no tenant with this id exists, so no committed tenant's key
 * and no key about to be committed is ever removed. Returns whether `remove` ran.
 */
export async function removeUnlessTenantExists(db: Db, tenantId: string, remove: () => Promise<void>): Promise<boolean> {
  return withTransaction(db, async (tx) => {
    await lockTenant(tx, tenantId);
    const { rows } = await tx.query(`SELECT 1 FROM tenants WHERE id = $1`, [tenantId]);
    if (rows.length > 0) return false;
    await remove();
    return true;
  });
}
