// How one workspace is provisioned: DESIGN.md's six steps, in order. This is the worker's hot
// path, so each database step is one round trip (seven in all for a new workspace).
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db, Tx } from '../db/pool.js';
import { RowError } from '../errors.js';
import type { JobData } from '../queue/contract.js';
import { checkLocked, findLedgerEntry, recordCreated, recordOutcome, startAttempt, type Finished } from '../results/row-results.js';
import { storeSealed } from '../results/sealed-secrets.js';
import { mintDatasetKey, type Scoping } from './api-keys.js';
import { seal } from './sealing.js';
import { ensureAccount, pickAccount, type Account, type MissingAccount } from './accounts.js';
import { insertWorkspace } from './dify-tables.js';
import type { DeployedKey, KeyStorage } from './key-storage.js';
import type { KeySource } from './rsa-keys.js';

export interface ProvisionDeps {
  db: Db;
  keys: KeySource;
  storage: KeyStorage;
  trialCredits: number;
  /** How this Dify scopes dataset keys (detected at start). */
  scoping?: Scoping;
  /** The operator key each batch seals minted API keys to. */
  sealKeys?: { get(batchId: string): Promise<KeyObject | undefined> };
  logger?: Logger;
}

export type ProvisionOutcome =
  | { kind: 'created'; tenantId: string; fingerprint: string; createdAccounts: string[] }
  | { kind: 'existing'; tenantId: string; fingerprint: string }
  | { kind: 'cancelled' };

type Role = JobData['members'][number]['role'];
type Wanted = { owner: Account | MissingAccount; members: { account: Account | MissingAccount; role: Role }[] };

export async function provisionWorkspace(job: JobData, attempt: number, deps: ProvisionDeps): Promise<ProvisionOutcome> {
  const started = performance.now();
  const result = (f: Omit<Finished, 'batchId' | 'line' | 'attempts' | 'durationMs'>): Finished => ({
    batchId: job.batchId,
    line: job.line,
    attempts: attempt,
    durationMs: performance.now() - started,
    ...f,
  });
  const existing = async (known: { tenantId: string; fingerprint: string }): Promise<ProvisionOutcome> => {
    await recordOutcome(deps.db, result({ outcome: 'existing', ...known }));
    return { kind: 'existing', ...known };
  };

  // 1. Provisioned already (an earlier batch, a re-ingest, or a run that lost its lock)?
  const emails = [job.ownerEmail, ...job.members.map((m) => m.email)];
  const start = await startAttempt(deps.db, job, attempt, emails);
  if (start.cancelled) return { kind: 'cancelled' };
  if (start.known) return existing(start.known);
  if (start.tenantTaken) throw tenantTaken(job.tenantId);

  // 2. The owner and members must be Dify accounts (a permanent error otherwise, unless the
  //    batch creates missing ones: then they are created in the transaction below).
  const wanted: Wanted = {
    owner: pickAccount(start.accounts, job.ownerEmail, 'owner_email', job.createMissingAccounts),
    members: job.members.map((m) => ({ account: pickAccount(start.accounts, m.email, 'members', job.createMissingAccounts), role: m.role })),
  };

  const sealKey = job.mintDatasetKey ? await deps.sealKeys?.get(job.batchId) : undefined;
  if (job.mintDatasetKey && !sealKey) throw new RowError('dataset_api_key', `batch ${job.batchId} has no --seal-to key to seal the API key to`);

  // 3. The key pair, in Dify's formats (the slow part: on libuv's thread pool, off the event loop).
  const keys = await deps.keys.generate();

  const tx = await deps.db.connect();
  let pem: DeployedKey | undefined;
  let broken = false;
  try {
    await tx.query('BEGIN');
    // Duplicates of this key (or of this tenant id) wait here for each other, then see the ledger.
    await lockKeyAndTenant(tx, job);
    const accounts = await materialise(tx, wanted);
    const locked = await checkLocked(tx, job.key, job.tenantId, [accounts.ownerId, ...accounts.members.map((m) => m.accountId)]);
    if (locked.known) {
      await tx.query('ROLLBACK');
      return await existing(locked.known);
    }
    if (locked.tenantTaken) throw tenantTaken(job.tenantId);

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
    const apiKey = sealKey ? await mintSealed(tx, job, sealKey, deps.scoping ?? 'none') : undefined;
    const created = { tenantId: job.tenantId, fingerprint: keys.fingerprint };
    await recordCreated(
      tx,
      job.key,
      result({ outcome: 'created', ...created, ...(accounts.created.length > 0 ? { createdAccounts: accounts.created } : {}), ...(apiKey ? { apiKeyMasked: apiKey } : {}) }),
    );
    await commit(tx, job, deps.db);
    return { kind: 'created', ...created, createdAccounts: accounts.created };
  } catch (err) {
    // 6. Not committed: no key file may stay behind for a tenant that doesn't exist.
    broken = await tx.query('ROLLBACK').then(
      () => false,
      () => true,
    );
    if (pem && !(err instanceof CommitUnknown)) await pem.remove();
    throw err instanceof CommitUnknown ? err.cause : err;
  } finally {
    tx.release(broken);
  }
}

/** A workspace-wide dataset key, sealed to the operator; returns only the masked form. */
async function mintSealed(tx: Tx, job: JobData, sealKey: KeyObject, scoping: Scoping): Promise<string> {
  const key = await mintDatasetKey(tx, job.tenantId, [], scoping);
  const jwe = await seal(key.token, sealKey, key.id);
  await storeSealed(tx, { apiTokenId: key.id, batchId: job.batchId, line: job.line, tenantId: job.tenantId, masked: key.masked, jwe });
  return key.masked;
}

const tenantTaken = (tenantId: string) =>
  new RowError('workspace_id', `a Dify workspace with id ${tenantId} exists already and was not created by this row`);

/** Account ids for owner and members, creating the deferred ones (in email order: one lock order). */
async function materialise(tx: Tx, wanted: Wanted) {
  const all = [wanted.owner, ...wanted.members.map((m) => m.account)];
  const missing = [...new Set(all.filter((a): a is MissingAccount => 'missing' in a).map((a) => a.email.toLowerCase()))].sort();
  const made = new Map<string, string>();
  const created: string[] = [];
  for (const email of missing) {
    const field = email === wanted.owner.email.toLowerCase() ? 'owner_email' : 'members';
    const { account, created: isNew } = await ensureAccount(tx, email, field);
    made.set(email, account.id);
    if (isNew) created.push(email);
  }
  const idOf = (a: Account | MissingAccount) => ('missing' in a ? made.get(a.email.toLowerCase())! : a.id);
  return { ownerId: idOf(wanted.owner), members: wanted.members.map((m) => ({ accountId: idOf(m.account), role: m.role })), created };
}

async function lockKeyAndTenant(tx: Tx, job: JobData): Promise<void> {
  // Always key first, then tenant id: one order, so two jobs can't deadlock on these locks.
  await tx.query(
    `SELECT pg_advisory_xact_lock(hashtextextended('dify-provision:key:' || $1, 0)),
            pg_advisory_xact_lock(hashtextextended('dify-provision:tenant:' || $2, 0))`,
    [job.key, job.tenantId],
  );
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
