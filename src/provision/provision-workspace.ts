// How one workspace is provisioned: DESIGN.md's six steps, in order.
import type { Logger } from 'pino';
import type { Db, Tx } from '../db/pool.js';
import { RowError } from '../errors.js';
import type { JobData } from '../queue/contract.js';
import { findLedgerEntry, insertLedgerEntry, recordOutcome, startAttempt } from '../results/row-results.js';
import { ensureAccount, resolveOrDefer, type Account, type MissingAccount } from './accounts.js';
import { insertWorkspace } from './dify-tables.js';
import type { DeployedKey, KeyStorage } from './key-storage.js';
import type { KeySource } from './rsa-keys.js';

export interface ProvisionDeps {
  db: Db;
  keys: KeySource;
  storage: KeyStorage;
  trialCredits: number;
  logger?: Logger;
}

export type ProvisionOutcome =
  | { kind: 'created'; tenantId: string; fingerprint: string; createdAccounts: string[] }
  | { kind: 'existing'; tenantId: string; fingerprint: string }
  | { kind: 'cancelled' };

export async function provisionWorkspace(job: JobData, attempt: number, deps: ProvisionDeps): Promise<ProvisionOutcome> {
  const started = performance.now();
  const finish = async <O extends Exclude<ProvisionOutcome, { kind: 'cancelled' }>>(outcome: O, tx?: Tx): Promise<O> => {
    await recordOutcome(tx ?? deps.db, {
      batchId: job.batchId,
      line: job.line,
      outcome: outcome.kind,
      tenantId: outcome.tenantId,
      fingerprint: outcome.fingerprint,
      attempts: attempt,
      durationMs: performance.now() - started,
      ...('createdAccounts' in outcome && outcome.createdAccounts.length > 0 ? { createdAccounts: outcome.createdAccounts } : {}),
    });
    return outcome;
  };

  // 1. Provisioned already (an earlier batch, a re-ingest, or a run that lost its lock)?
  const start = await startAttempt(deps.db, job.batchId, job.line, attempt, job.key);
  if (start.cancelled) return { kind: 'cancelled' };
  if (start.known) return finish({ kind: 'existing', ...start.known });

  // 2. The owner and members must be Dify accounts (a permanent error otherwise, unless the
  //    batch creates missing ones: then they are created in the transaction below).
  const owner = await resolveOrDefer(deps.db, job.ownerEmail, 'owner_email', job.createMissingAccounts);
  const members = await resolveMembers(deps.db, job);
  await ensureTenantIdFree(deps.db, job.tenantId);

  // 3. The key pair, in Dify's formats (the slow part: off the event loop).
  const keys = await deps.keys.generate();

  const tx = await deps.db.connect();
  let pem: DeployedKey | undefined;
  let broken = false;
  try {
    await tx.query('BEGIN');
    // Duplicates of this key (or this tenant id) wait here for each other, then see the ledger.
    await lockKeyAndTenant(tx, job);
    const raced = await findLedgerEntry(tx, job.key);
    if (raced) {
      await tx.query('COMMIT');
      return await finish({ kind: 'existing', ...raced });
    }
    await ensureTenantIdFree(tx, job.tenantId);
    const accounts = await materialise(tx, owner, members);

    // 4. The private key file, written atomically and proven to decrypt.
    pem = await deps.storage.deploy(job.tenantId, keys.privatePem, keys.publicPem);

    // 5. Every row Dify's create_tenant writes, the members, the ledger and the result: one commit.
    await insertWorkspace(tx, {
      tenantId: job.tenantId,
      name: job.workspaceName,
      plan: job.plan,
      publicPem: keys.publicPem,
      ownerId: accounts.ownerId,
      members: accounts.members,
      trialCredits: deps.trialCredits,
    });
    await insertLedgerEntry(tx, job.key, job.tenantId, job.batchId, job.line, keys.fingerprint);
    const outcome = await finish({ kind: 'created', tenantId: job.tenantId, fingerprint: keys.fingerprint, createdAccounts: accounts.created }, tx);
    await commit(tx, job, deps.db);
    return outcome;
  } catch (err) {
    // 6. Not committed: no key file may stay behind for a tenant that doesn't exist.
    broken = await tx.query('ROLLBACK').then(() => false, () => true);
    if (pem && !(err instanceof CommitUnknown)) await pem.remove();
    throw err instanceof CommitUnknown ? err.cause : err;
  } finally {
    tx.release(broken);
  }
}

/** A COMMIT whose answer was lost: the transaction may or may not have landed. */
class CommitUnknown extends Error {}

// If COMMIT fails (say the connection drops), the server may have committed all the same: ask
// again on another connection before removing a key file that a committed tenant would need.
async function commit(tx: Tx, job: JobData, db: Db): Promise<void> {
  try {
    await tx.query('COMMIT');
  } catch (err) {
    let landed: boolean;
    try {
      landed = (await findLedgerEntry(db, job.key))?.tenantId === job.tenantId;
    } catch {
      // Can't tell: keep the file. A retry reuses this tenant id and replaces it, or finds it committed.
      throw new CommitUnknown('commit outcome unknown', { cause: err });
    }
    if (!landed) throw err;
  }
}

type Role = JobData['members'][number]['role'];

async function resolveMembers(db: Db, job: JobData): Promise<{ account: Account | MissingAccount; role: Role }[]> {
  const out = [];
  for (const m of job.members) out.push({ account: await resolveOrDefer(db, m.email, 'members', job.createMissingAccounts), role: m.role });
  return out;
}

/** Account ids for owner and members, creating the deferred ones (sorted: one lock order). */
async function materialise(tx: Tx, owner: Account | MissingAccount, members: { account: Account | MissingAccount; role: Role }[]) {
  const missing = [owner, ...members.map((m) => m.account)]
    .filter((a): a is MissingAccount => 'missing' in a)
    .map((a) => a.email.toLowerCase())
    .sort();
  const made = new Map<string, string>();
  const created: string[] = [];
  for (const email of missing) {
    const { account, created: isNew } = await ensureAccount(tx, email, email === owner.email.toLowerCase() ? 'owner_email' : 'members');
    made.set(email, account.id);
    if (isNew) created.push(email);
  }
  const idOf = (a: Account | MissingAccount) => ('missing' in a ? made.get(a.email.toLowerCase())! : a.id);
  return { ownerId: idOf(owner), members: members.map((m) => ({ accountId: idOf(m.account), role: m.role })), created };
}

async function ensureTenantIdFree(db: Db | Tx, tenantId: string): Promise<void> {
  const { rows } = await db.query(`SELECT 1 FROM tenants WHERE id = $1`, [tenantId]);
  if (rows.length > 0) {
    throw new RowError('workspace_id', `a Dify workspace with id ${tenantId} exists already and was not created by this row`);
  }
}

async function lockKeyAndTenant(tx: Tx, job: JobData): Promise<void> {
  // Always key first, then tenant id: one order, so two jobs can't deadlock on these locks.
  await tx.query(
    `SELECT pg_advisory_xact_lock(hashtextextended('dify-provision:key:' || $1, 0)),
            pg_advisory_xact_lock(hashtextextended('dify-provision:tenant:' || $2, 0))`,
    [job.key, job.tenantId],
  );
}
