// How one workspace is provisioned: the six steps of docs/design.md, in order. This is the worker's hot
// path: three round trips for a new workspace whose accounts exist (the attempt's start; BEGIN,
// the locks and the check after them; Dify's rows, the ledger, the answer and COMMIT). A job never
// holds two pool connections at once: a worker whose pool is smaller than its concurrency cannot
// deadlock on its own connections.
import type { KeyObject } from 'node:crypto';
import { seal } from '../crypto/sealing.js';
import type { KeyPair, KeySource } from '../crypto/rsa-keys.js';
import { inlined, type Db, type Tx } from '../db/pool.js';
import {
  checkDistinct,
  ensureAccount,
  isNoAccount,
  personKey,
  pickAccount,
  type AccountProfile,
  type AccountRules,
  type MissingAccount,
} from '../dify/accounts.js';
import { mintDatasetKey, type Scoping } from '../dify/api-keys.js';
import type { WorkspaceWriter } from '../dify/workspace-writer.js';
import { describeError, RowError } from '../common/errors.js';
import type { Inviter, InviteeFor } from '../invite/inviter.js';
import type { DifyTasks } from './dify-tasks.js';
import type { Logger } from 'pino';
import type { JobData } from '../queue/contract.js';
import type { DeployedKey, KeyStorage } from '../storage/key-storage.js';
import {
  answerKnown,
  checkedOf,
  checkLocked,
  checkLockedStatement,
  findLedgerEntry,
  type CheckedColumns,
  type LedgerEntry,
  type LockedCheck,
} from '../store/ledger.js';
import { awaitBatchLock, lockKeyAndTenant, lockKeyAndTenantStatement, removeUnlessTenantExists } from '../store/locks.js';
import { recordCreated, recordCreatedStatement, recordOutcome, startAttempt, type Finished, type OwnLineage } from '../store/rows.js';
import { storeSealed } from '../store/sealed-secrets.js';
import {
  checkPreclaimed,
  inOtherWorkspaces,
  namedByAddresses,
  preclaimedForExisting,
  preclaimedStatement,
  refuseExistingPreclaimed,
  refusePreclaimed,
  withdrawAwayFromHome,
  type NamedBy,
  type Preclaimed,
} from '../store/invitations.js';
import type { Account } from '../common/types.js';
import { beginAttempt, NotQueuedError, BatchRecordingError, BATCH_WAIT_MS } from './attempt.js';

export interface ProvisionDeps {
  db: Db;
  keys: KeySource;
  storage: KeyStorage;
  /** Writes what the connected Dify's own release writes for a new workspace. */
  writer: WorkspaceWriter;
  /** How this Dify scopes dataset keys (detected at start). */
  scoping?: Scoping;
  /** The operator key each batch seals minted API keys to. */
  sealKeys?: { get(batchId: string): Promise<KeyObject | undefined> };
  /** The server this worker runs on (its lineage): rows queued on another server are left to it. */
  own?: () => OwnLineage;
  /** Issues invitation tokens in Dify's Redis (rows with `invite`); else `inviteProblem` says why not. */
  inviter?: Inviter;
  inviteProblem?: string;
  /** Queues the Celery tasks Dify itself queues after create_tenant (its default plugins), when it would. */
  difyTasks?: DifyTasks;
  logger?: Logger;
}

export type ProvisionOutcome =
  | { kind: 'created'; tenantId: string; fingerprint: string; createdAccounts: string[] }
  | { kind: 'existing'; tenantId: string; fingerprint: string }
  | { kind: 'cancelled' };

type Role = JobData['members'][number]['role'];
type Wanted = { owner: Account | MissingAccount; members: { account: Account | MissingAccount; role: Role }[] };

/** `round`: the row's round the job was queued in (its job id says; jobIdFor). */
export async function provisionWorkspace(job: JobData, attempt: number, deps: ProvisionDeps, round = 1): Promise<ProvisionOutcome> {
  const at = beginAttempt(job, attempt);
  const result = at.answer;
  const existing = async (known: LedgerEntry): Promise<ProvisionOutcome> => {
    // The workspace may have been made by another batch's row with this row's key: the row calls it
    // its own only if no other batch's operator holds a link to an account it names (invitations.ts).
    const accounts = start.accounts;
    // Each address of the row resolved as step 2 would (none for one that is missing or ambiguous).
    const namedBy = namedByAddresses(accounts, emails, rules);
    refuseExistingPreclaimed(
      await preclaimedForExisting(
        deps.db,
        accounts.map((a) => a.id),
        job.batchId,
      ),
      job.trustAccounts,
      namedBy,
    );
    await recordOutcome(deps.db, result({ outcome: 'existing', ...known }));
    return { kind: 'existing', ...known };
  };

  // 1. Ours to run (the row ingest recorded, queued in this round), and not provisioned already
  //    (an earlier batch, a re-ingest, or a run that lost its lock)?
  const emails = [job.ownerEmail, ...job.members.map((m) => m.email)];
  const rules: AccountRules = { normalized: deps.writer.schema.normalizedEmail };
  let start = await startAttempt(deps.db, job, round, attempt, emails, rules, deps.own?.());
  if (!start.matches && start.recordedKey === undefined) {
    // No row at the job's line yet: ingest queues a batch's jobs while it records the rows, so
    // the row is there once its COMMIT is. Wait for the batch's ingest to end, then look again
    // (still none: the ingest was refused, or nobody recorded this job).
    if (!(await awaitBatchLock(deps.db, job.batchId, BATCH_WAIT_MS))) throw new BatchRecordingError(job.batchId);
    start = await startAttempt(deps.db, job, round, attempt, emails, rules, deps.own?.());
  }
  if (at.check(start)) return { kind: 'cancelled' };
  if (start.outcome === 'created' || start.outcome === 'existing') {
    // A duplicate run of a row answered already (its job was queued twice, or taken up after a
    // crash): the answer stays; invitations its commit recorded and no SETEX followed are completed.
    if (job.invite && deps.inviter)
      await completeInvitations(deps, job, () => deps.inviter!.completePending(deps.db, { batchId: job.batchId, line: job.line }));
    if (deps.difyTasks) {
      const tasks = deps.difyTasks;
      await tasks.settle(() => tasks.completePending(deps.db, { batchId: job.batchId, line: job.line }), {
        batchId: job.batchId,
        line: job.line,
        tenantId: job.tenantId,
      });
    }
    if (start.known) return { kind: 'existing', tenantId: start.known.tenantId, fingerprint: start.known.fingerprint };
  }
  if (start.outcome !== 'queued' && start.outcome !== 'active') throw new NotQueuedError(start.outcome ?? 'missing');
  if (start.known) return existing(answerKnown(job, start.known));
  if (start.tenantTaken) throw tenantTaken(job.tenantId);

  // 2. The owner and members must be Dify accounts (a permanent error otherwise, unless the
  //    batch creates missing ones: then they are created in the transaction below).
  //    An email no account has: the refusal names the ways forward from a batch already queued.
  const pick = (email: string, field: string) => {
    try {
      return pickAccount(start.accounts, email, field, rules, job.createMissingAccounts);
    } catch (err) {
      if (!(err instanceof RowError) || !isNoAccount(err)) throw err;
      throw new RowError(
        field,
        `${err.message}; once the account exists, \`dify-provision retry ${job.batchId}\` queues this row again ` +
          `(or \`dify-provision retry ${job.batchId} --create-missing-owners\` creates it as Dify's invite does)`,
      );
    }
  };
  const wanted: Wanted = {
    owner: pick(job.ownerEmail, 'owner_email'),
    members: job.members.map((m) => ({
      account: pick(m.email, 'members'),
      role: m.role,
    })),
  };

  const sealKey = job.mintDatasetKey || job.invite ? await deps.sealKeys?.get(job.batchId) : undefined;
  if (job.mintDatasetKey && !sealKey)
    throw new RowError('dataset_api_key', `batch ${job.batchId} has no --seal-to key to seal the API key to`);
  if (job.invite && !sealKey) throw new RowError('invite', `batch ${job.batchId} has no --seal-to key to seal the invitation links to`);
  if (job.invite && !deps.inviter)
    throw new RowError(
      'invite',
      `this worker cannot issue invitations (${deps.inviteProblem ?? 'not configured'}): nothing was created; fix it and \`retry\``,
    );

  // 3. The key pair, in Dify's formats (the slow part: on libuv's thread pool, off the event loop).
  const keys = await deps.keys.generate();

  const written = await writeWorkspace(job, wanted, rules, keys, sealKey, deps, result);
  return written.kind === 'known' ? existing(written.known) : written;
}

type Written = Extract<ProvisionOutcome, { kind: 'created' }> | { kind: 'known'; known: LedgerEntry };

/** Steps 4–6 in one transaction, under the key's and the tenant's locks. */
async function writeWorkspace(
  job: JobData,
  wanted: Wanted,
  rules: AccountRules,
  keys: KeyPair,
  sealKey: KeyObject | undefined,
  deps: ProvisionDeps,
  result: (f: Omit<Finished, 'batchId' | 'line' | 'attempts' | 'durationMs'>) => Finished,
): Promise<Written> {
  const tx = await deps.db.connect();
  let pem: DeployedKey | undefined;
  let committing = false;
  let failure: unknown;
  try {
    // Duplicates of this key (or of this tenant id) wait at the locks for each other, then see
    // the ledger. Where the row's accounts all exist (they are known already), BEGIN, the locks
    // and the check after them are one round trip: each statement of it has its own snapshot, so
    // the check sees what committed while the locks were awaited.
    const emails = [job.ownerEmail, ...job.members.map((m) => m.email)];
    const allExist = !('missing' in wanted.owner) && wanted.members.every((m) => !('missing' in m.account));
    let accounts: Awaited<ReturnType<typeof materialise>>;
    let locked: LockedCheck;
    // The pre-claim guard (store/invitations.ts preclaimedStatement) on the accounts the row did not
    // create, once they are locked: refused below, after the ledger's answer.
    let preclaimed: () => Promise<void>;
    // How the row names an account: its field, and its addresses that resolved to it (materialise keeps their order).
    const namedBy = (id: string): NamedBy => ({
      field: id === accounts.ownerId ? 'owner_email' : 'members',
      emails: emails.filter((_, i) => accounts.invitees[i]!.accountId === id),
    });
    const guard = { tenantId: job.tenantId, batchId: job.batchId, trusted: job.trustAccounts };
    if (allExist) {
      // Nothing to create: materialise only names the accounts (no statement).
      accounts = await materialise(tx, wanted, rules, emails, job.ownerProfile);
      const results = (await tx.query(
        inlined(
          'BEGIN',
          lockKeyAndTenantStatement(job.key, job.tenantId),
          checkLockedStatement(job.key, job.tenantId, idsOf(accounts)),
          preclaimedStatement(idsOf(accounts), job.tenantId, job.batchId),
        ),
      )) as unknown as { rows: unknown[] }[];
      locked = checkedOf(results[2]!.rows[0] as CheckedColumns);
      const found = results[3]!.rows as Preclaimed[];
      preclaimed = async () => refusePreclaimed(found, guard.trusted, namedBy);
    } else {
      await tx.query('BEGIN');
      await lockKeyAndTenant(tx, job.key, job.tenantId);
      accounts = await materialise(tx, wanted, rules, emails, job.ownerProfile);
      locked = await checkLocked(tx, job.key, job.tenantId, idsOf(accounts));
      const existing = accounts.invitees.filter((p) => !p.created).map((p) => p.accountId);
      preclaimed = () => checkPreclaimed(tx, { ...guard, accountIds: existing }, namedBy);
    }
    const ids = idsOf(accounts);
    if (locked.known) {
      // A duplicate committed while we waited: the same rules as step 1 (answerKnown throws for
      // a reused id or a deleted workspace, and the transaction is rolled back below).
      const known = answerKnown(job, locked.known);
      await tx.query('ROLLBACK');
      return { kind: 'known', known };
    }
    if (locked.tenantTaken) throw tenantTaken(job.tenantId);
    await preclaimed();
    if (locked.lockedAccounts < new Set(ids).size) {
      throw new RowError(
        'owner_email',
        'an account of this row was deleted while the row waited: nothing was created; check the accounts and `retry`',
      );
    }

    // 4. The private key, written whole and proven to decrypt.
    pem = await deps.storage.deploy(job.tenantId, keys);

    // 5. Every row Dify's create_tenant writes, the members, the ledger and the result: one commit.
    const workspace = {
      tenantId: job.tenantId,
      name: job.workspaceName,
      plan: job.plan,
      publicPem: keys.publicPem,
      ownerId: accounts.ownerId,
      members: accounts.members,
    };
    const joinedHere = accounts.invitees.filter((p) => !p.created && p.status === 'pending').map((p) => p.accountId);
    if (deps.writer.statement && !(sealKey && job.mintDatasetKey) && !job.invite && joinedHere.length === 0 && !deps.difyTasks) {
      // Nothing else to write: Dify's rows, the ledger and the answer, then COMMIT, in one round trip.
      const created = { tenantId: job.tenantId, fingerprint: keys.fingerprint };
      const answer = result({
        outcome: 'created',
        ...created,
        ...(accounts.created.length > 0 ? { createdAccounts: accounts.created } : {}),
      });
      committing = true;
      await tx.query(inlined(deps.writer.statement(workspace), recordCreatedStatement(job.key, answer), 'COMMIT'));
      return { kind: 'created', ...created, createdAccounts: accounts.created };
    }
    await deps.writer.insertWorkspace(tx, workspace);
    const apiKey = sealKey && job.mintDatasetKey ? await mintSealed(tx, job, sealKey, deps.scoping ?? 'none') : undefined;
    // Links go only with a person's home workspace (docs/security.md). A pending person this row
    // joins here loses every link that was to go with another workspace (revoked below, after
    // the commit); the row invites only people who are in no other workspace (or mails them).
    const withdrawn = await withdrawAwayFromHome(
      tx,
      [...new Set(joinedHere)],
      `revoked: the person was added to another workspace (batch ${job.batchId}, line ${job.line}); a link sets the password for every workspace`,
    );
    const invitation =
      job.invite && sealKey && deps.inviter
        ? await chooseInvitees(tx, job, accounts.invitees, new Set(withdrawn.map((w) => w.account_id)))
        : undefined;
    // The tokens are drawn and recorded pending here; they reach Dify's Redis only after COMMIT.
    const invites =
      invitation && invitation.invitees.length > 0
        ? await deps.inviter!.prepare(
            tx,
            { batchId: job.batchId, line: job.line, workspaceName: job.workspaceName, send: job.sendInvites ?? false },
            invitation.invitees,
            sealKey!,
          )
        : [];
    // Dify's own tasks after create_tenant: recorded here, queued on its broker only after COMMIT.
    const row = { batchId: job.batchId, line: job.line, tenantId: job.tenantId };
    const tasks = deps.difyTasks ? await deps.difyTasks.prepare(tx, row) : [];
    const created = { tenantId: job.tenantId, fingerprint: keys.fingerprint };
    await recordCreated(
      tx,
      job.key,
      result({
        outcome: 'created',
        ...created,
        ...(accounts.created.length > 0 ? { createdAccounts: accounts.created } : {}),
        ...(apiKey ? { apiKeyMasked: apiKey } : {}),
        ...(invitation?.note ? { inviteNote: invitation.note } : {}),
      }),
    );
    committing = true;
    await tx.query('COMMIT');
    if (invites.length > 0) await completeInvitations(deps, job, () => deps.inviter!.complete(deps.db, invites));
    // Without an inviter (no Dify Redis here), a worker's sweep that has one deletes them.
    if (withdrawn.length > 0 && deps.inviter)
      await completeInvitations(deps, job, () => deps.inviter!.revokeWithdrawn(deps.db, { ids: withdrawn.map((w) => w.id) }));
    if (tasks.length > 0) await deps.difyTasks!.settle(() => deps.difyTasks!.queue(deps.db, tasks), row);
    return { kind: 'created', ...created, createdAccounts: accounts.created };
  } catch (err) {
    failure = err;
  } finally {
    // 6. Not committed: no key may stay behind for a tenant that doesn't exist.
    const broken =
      failure === undefined
        ? false
        : await tx.query('ROLLBACK').then(
            () => false,
            () => true,
          );
    tx.release(broken);
  }
  if (pem && (await settleFailedWrite(deps, job, pem, committing)) === 'landed') {
    return { kind: 'created', tenantId: job.tenantId, fingerprint: keys.fingerprint, createdAccounts: [] };
  }
  throw failure;
}

/**
 * After a failed transaction (ROLLBACK released the tenant's lock): the key is removed under the
 * lock again, unless a tenant with this id exists by then. If one does, either our COMMIT's
 * answer was lost but it landed (the ledger names our key: created after all), or a duplicate
 * committed meanwhile and owns the file now. If the database can't be asked, the key stays: a
 * retry reuses this tenant id and replaces it, or doctor removes it.
 */
async function settleFailedWrite(
  deps: ProvisionDeps,
  job: JobData,
  pem: DeployedKey,
  committing: boolean,
): Promise<'landed' | 'removed' | 'kept'> {
  try {
    if (await removeUnlessTenantExists(deps.db, job.tenantId, () => pem.remove())) return 'removed';
    return committing && (await findLedgerEntry(deps.db, job.key))?.tenantId === job.tenantId ? 'landed' : 'kept';
  } catch {
    return 'kept';
  }
}

/** A workspace-wide dataset key, sealed to the operator; returns only the masked form. */
async function mintSealed(tx: Tx, job: JobData, sealKey: KeyObject, scoping: Scoping): Promise<string> {
  const key = await mintDatasetKey(tx, job.tenantId, [], scoping);
  const jwe = await seal(key.token, sealKey, key.id);
  await storeSealed(tx, { apiTokenId: key.id, batchId: job.batchId, line: job.line, tenantId: job.tenantId, masked: key.masked, jwe });
  return key.masked;
}

/**
 * After the workspace committed, its tokens go to Dify's Redis. If that fails (Dify's Redis
 * down), the workspace stays created and its invitations pending: the sweep completes them.
 */
async function completeInvitations(deps: ProvisionDeps, job: JobData, run: () => Promise<number>): Promise<void> {
  try {
    await run();
  } catch (err) {
    deps.logger?.warn(
      { batchId: job.batchId, line: job.line, tenantId: job.tenantId, error: describeError(err) },
      "invitation tokens could not be stored in Dify's Redis yet: the workspace is created and a worker's sweep stores them",
    );
  }
}

/**
 * Who the row invites: the accounts it created, with invitePending its accounts still pending,
 * and anyone whose links through other workspaces it just revoked. A link may go with this
 * workspace only if the person is in no other one (a link sets the password for all of them):
 * one who is gets a link only mailed to them (--send-invites), or none; the note says so.
 */
async function chooseInvitees(
  tx: Tx,
  job: JobData,
  people: MaterialisedPerson[],
  revoked: Set<string>,
): Promise<{ invitees: InviteeFor[]; note?: string }> {
  const seen = new Set<string>();
  const wanted = people
    .filter((p) => p.created || (p.status === 'pending' && (job.invitePending || revoked.has(p.accountId))))
    .filter((p) => !seen.has(p.accountId) && seen.add(p.accountId));
  const elsewhere = await inOtherWorkspaces(
    tx,
    wanted.filter((p) => !p.created).map((p) => p.accountId),
    job.tenantId,
  );
  const send = job.sendInvites ?? false;
  const invitees: InviteeFor[] = [];
  const notes: string[] = [];
  for (const p of wanted) {
    const away = elsewhere.has(p.accountId);
    if (away && !send) {
      notes.push(
        `${p.email}: no link — in another workspace too, and a link would set their password there as well; ` +
          "they sign in with Dify's email code (or ingest with --send-invites to mail them one)",
      );
      continue;
    }
    if (away) notes.push(`${p.email}: link mailed to them only — in another workspace too, so it is never revealed`);
    invitees.push({ accountId: p.accountId, email: p.email, workspaceId: job.tenantId, role: p.role, requiresSetup: true, mailOnly: away });
  }
  return { invitees, ...(notes.length > 0 ? { note: notes.join('; ') } : {}) };
}

interface MaterialisedPerson {
  accountId: string;
  /** As stored in Dify. */
  email: string;
  status: string;
  role: string;
  /** Created by this row's transaction. */
  created: boolean;
}

const tenantTaken = (tenantId: string) =>
  new RowError('workspace_id', `a Dify workspace with id ${tenantId} exists already and was not created by this row`);

/**
 * Account ids for owner and members, creating the deferred ones (in the order of the form Dify
 * compares: one lock order). A member Dify's invite would register is `invited` (its join opens).
 * Two of the row's addresses that are one Dify account (john.doe@gmail.com and johndoe@gmail.com
 * where Dify keeps normalised emails) are an error: a workspace joins an account once.
 */
const idsOf = (accounts: { ownerId: string; members: { accountId: string }[] }) => [
  accounts.ownerId,
  ...accounts.members.map((m) => m.accountId),
];

async function materialise(tx: Tx, wanted: Wanted, rules: AccountRules, emails: string[], ownerProfile: AccountProfile = {}) {
  const keyOf = (email: string) => personKey(email, rules);
  const all = [wanted.owner, ...wanted.members.map((m) => m.account)];
  const missing = new Map(all.filter((a): a is MissingAccount => 'missing' in a).map((a) => [keyOf(a.email), a.email]));
  const made = new Map<string, { account: Account; created: boolean }>();
  const created: string[] = [];
  for (const key of [...missing.keys()].sort()) {
    const email = missing.get(key)!;
    const isOwner = keyOf(wanted.owner.email) === key;
    // The row's owner profile is the owner's only: members get Dify's defaults.
    const { account, created: isNew } = await ensureAccount(
      tx,
      email,
      isOwner ? 'owner_email' : 'members',
      rules,
      isOwner ? ownerProfile : {},
    );
    made.set(key, { account, created: isNew });
    if (isNew) created.push(email.toLowerCase());
  }
  const person = (a: Account | MissingAccount, role: string): MaterialisedPerson => {
    const m = 'missing' in a ? made.get(keyOf(a.email))! : { account: a, created: false };
    return { accountId: m.account.id, email: m.account.email, status: m.account.status, role, created: m.created };
  };
  const invitees = [person(wanted.owner, 'owner'), ...wanted.members.map((m) => person(m.account, m.role))];
  const ownerId = invitees[0]!.accountId;
  const members = wanted.members.map((m, i) => ({
    accountId: invitees[i + 1]!.accountId,
    role: m.role,
    invited: invitees[i + 1]!.created,
  }));
  checkDistinct(invitees.map((p, i) => ({ email: emails[i]!, account: p.accountId })));
  return { ownerId, members, created, invitees };
}
