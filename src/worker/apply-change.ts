// How one change to an existing workspace is applied (apply): the worker's step for a change
// row, beside provision-workspace.ts for a new workspace. One transaction under the workspace's
// advisory lock, in two round trips for most changes (three for a removal):
//   1. BEGIN; the row is ours to run (the spec apply recorded, this round, this server) and not
//      answered, and is now active (store/rows.ts startStatement); the workspace's lock; the
//      workspace, its joins and the person read and locked now, never from the plan; an earlier
//      row of the file it waits for (afterLine), read once the lock is held;
//   2. decide (changes/decide.ts): apply, unchanged or refuse; what the connected Dify release
//      writes for it (dify/membership.ts), the row's answer and COMMIT;
//      a removal: first its writes and our invitations of the person superseded, then the
//      person's invitation tokens deleted from Dify's Redis (invite/revoke.ts: no SCAN per
//      removal), then the answer and COMMIT (with the revocation recorded for the sweep when
//      this worker could not delete them);
//   3. after the COMMIT: an added person's invitation token into Dify's Redis (as ingest's), and
//      links revoked by a change of the person's workspaces deleted.
import type { KeyObject } from 'node:crypto';
import { decide, type Change } from '../changes/decide.js';
import { outOfScope, tenantInScope } from '../changes/scope.js';
import { inlined, withInlinedTransaction, type Statement, type Tx } from '../db/pool.js';
import { ensureAccount, lockAccountsStatement, type AccountRules } from '../dify/accounts.js';
import { lockAccount, lockWorkspaceStatement, workspaceOf, type MembershipWriter } from '../dify/membership.js';
import { describeError, RowError } from '../common/errors.js';
import type { Account, Outcome } from '../common/types.js';
import type { ChangeJob } from '../queue/contract.js';
import { revokeWithdrawn, type Revoker } from '../invite/revoke.js';
import {
  checkPreclaimed,
  recordRevocationStatement,
  supersedePersonStatement,
  withdrawAwayFromHomeStatement,
  type SupersededOfPerson,
} from '../store/invitations.js';
import { tenantOfExternalId } from '../store/ledger.js';
import { lockTenantStatement } from '../store/locks.js';
import { outcomeStatement, recordOutcomeStatement, startChange, startedOf, startStatement, type StartedColumns } from '../store/rows.js';
import { beginAttempt, NotQueuedError } from './attempt.js';
import type { ProvisionDeps } from './provision-workspace.js';

export interface ChangeDeps extends ProvisionDeps {
  /** What the connected Dify writes for each change (its release's capabilities). */
  membership: MembershipWriter;
  /**
   * Deletes a removed person's invitation tokens from Dify's Redis (needs Dify's Redis only);
   * without one, `revokeProblem` says why, and removals record their revocations for the sweep.
   */
  revoker?: Revoker;
  revokeProblem?: string;
}

type Pending = Awaited<ReturnType<NonNullable<ChangeDeps['inviter']>['prepare']>>;

export type ChangeOutcome = { kind: 'applied' | 'unchanged'; tenantId?: string } | { kind: 'cancelled' };

/** The row waits for an earlier row of its file (afterLine) that has no answer yet: the job is left for later, attempts not counted. */
export class WaitForRowError extends Error {
  override readonly name: string = 'WaitForRowError';
}

type Ran =
  { kind: 'answered'; outcome: Outcome } | { kind: 'done'; outcome: 'applied' | 'unchanged'; pending: Pending; withdrawn: string[] };

export async function applyChange(job: ChangeJob, attempt: number, deps: ChangeDeps, round = 1): Promise<ChangeOutcome> {
  const at = beginAttempt(job, attempt);
  const rules: AccountRules = { normalized: deps.writer.schema.normalizedEmail };
  const change: Change = {
    action: job.action,
    ...(job.email !== undefined ? { email: job.email } : {}),
    ...(job.role !== undefined ? { role: job.role } : {}),
    ...(job.name !== undefined ? { name: job.name } : {}),
    ...(job.workspaceId !== undefined ? { workspaceId: job.workspaceId } : {}),
    ...(job.externalId !== undefined ? { externalId: job.externalId } : {}),
    createMissingAccounts: job.createMissingAccounts,
  };
  // Read before the transaction (a job never holds two pool connections at once).
  const tenantId = job.workspaceId ?? (await tenantOfExternalId(deps.db, job.externalId!));
  const sealKey = job.invite && job.action === 'add_member' ? await deps.sealKeys?.get(job.batchId) : undefined;
  // apply --within: a workspace outside the batch's scope is refused as one that is not there,
  // whatever the row's recording found (changes/scope.ts).
  const outside = tenantId !== undefined && job.within !== undefined && !(await tenantInScope(deps.db, tenantId, job.within));
  if (!tenantId || outside) {
    // No such workspace (for this batch): nothing to lock; the row's start, then the refusal.
    const start = await startChange(deps.db, job, round, attempt, deps.own?.());
    if (at.check(start)) return { kind: 'cancelled' };
    if (start.outcome === 'applied' || start.outcome === 'unchanged') return { kind: start.outcome };
    if (start.outcome !== 'queued' && start.outcome !== 'active') throw new NotQueuedError(start.outcome ?? 'missing');
    refuse(job.within !== undefined ? { verdict: 'refuse', ...outOfScope(job, job.within) } : decide(change, undefined, [], rules));
  }
  // A removal's snapshot of Dify's token keys (one SCAN per batch on this worker) begins before the locks.
  if (job.action === 'remove_member') deps.revoker?.snapshot(job.batchId).catch(() => {});

  const ran = await withInlinedTransaction(deps.db, (tx) =>
    inTransaction(tx, job, round, attempt, tenantId, change, rules, sealKey, deps, at),
  ).catch((err: unknown) => {
    // Refused in a workspace found (and in scope): the failed row names it, as an applied row does.
    if (err instanceof RowError) err.tenantId = tenantId;
    throw err;
  });

  if (ran.kind === 'answered') {
    const o = ran.outcome;
    if (o === 'cancelled') return { kind: 'cancelled' };
    // A duplicate run of a row answered already: invitations its commit recorded and no SETEX followed are completed.
    if (job.invite && deps.inviter) await completeInvitations(deps, job, () => deps.inviter!.completePending(deps.db, job));
    return { kind: o as 'applied' | 'unchanged' };
  }
  const done = ran;
  // 3. After the COMMIT: the added person's token into Dify's Redis (the sweep completes it if this fails).
  if (done.pending.length > 0) await completeInvitations(deps, job, () => deps.inviter!.complete(deps.db, done.pending));
  // Without Dify's Redis here, a worker's sweep that has it deletes the revoked links' tokens.
  if (done.withdrawn.length > 0 && deps.revoker)
    await completeInvitations(deps, job, () => revokeWithdrawn(deps.db, deps.revoker!.tokens, { ids: done.withdrawn }));
  return { kind: done.outcome, tenantId };
}

/** Steps 1 and 2 on `tx`; every way out but a throw has ended the transaction. */
async function inTransaction(
  tx: Tx,
  job: ChangeJob,
  round: number,
  attempt: number,
  tenantId: string,
  change: Change,
  rules: AccountRules,
  sealKey: KeyObject | undefined,
  deps: ChangeDeps,
  at: ReturnType<typeof beginAttempt>,
): Promise<Ran> {
  // 1. One round trip: each statement has its own snapshot, so what follows a lock sees what
  //    committed while it was awaited (the row waited for is read once the workspace is ours).
  const first: Statement[] = [
    startStatement(job, round, attempt, deps.own?.()),
    lockTenantStatement(tenantId),
    lockWorkspaceStatement(tenantId),
  ];
  if (job.email !== undefined) first.push(lockAccountsStatement([job.email], rules));
  if (job.afterLine !== undefined) first.push(outcomeStatement(job.batchId, job.afterLine));
  const read = resultsOf(await tx.query(inlined('BEGIN', ...first)));
  const start = startedOf(read[1]!.rows[0] as StartedColumns);
  const ws = workspaceOf(read[3]!.rows as Parameters<typeof workspaceOf>[0]);
  const accounts: Account[] = job.email !== undefined ? ((read[4]!.rows[0] as { accounts: Account[] | null }).accounts ?? []) : [];
  const before = job.afterLine !== undefined ? (read[read.length - 1]!.rows[0] as { outcome: Outcome } | undefined)?.outcome : undefined;

  if (at.check(start)) return end(tx, { kind: 'answered', outcome: 'cancelled' });
  if (start.outcome === 'applied' || start.outcome === 'unchanged') return end(tx, { kind: 'answered', outcome: start.outcome });
  if (start.outcome !== 'queued' && start.outcome !== 'active') throw new NotQueuedError(start.outcome ?? 'missing');
  if (before === 'queued' || before === 'active') {
    // Taken up (active), nothing else written: the job comes back in a second.
    await tx.query('COMMIT');
    throw new WaitForRowError(`waits for line ${job.afterLine} of its batch to run first`);
  }
  if (sealKey === undefined && job.invite && job.action === 'add_member')
    throw new RowError('invite', `batch ${job.batchId} has no --seal-to key to seal the invitation links to`);
  if (sealKey && !deps.inviter)
    throw new RowError(
      'invite',
      `this worker cannot issue invitations (${deps.inviteProblem ?? 'not configured'}): nothing was changed; fix it and \`retry\``,
    );

  // 2. The decision on the workspace as it is now, and what Dify writes for it.
  const d = decide(change, ws, accounts, rules);
  if (d.verdict === 'refuse') refuse(d);
  const notes: string[] = [];
  const created: string[] = [];
  const writes: Statement[] = [];
  let pending: Pending = [];
  let outcome: 'applied' | 'unchanged' = 'applied';
  let removed: string | undefined;
  // A link goes only with the person's home workspace (docs/security.md): who this change gives
  // a join or takes ownership from loses links that may no longer go with theirs (revoked after the COMMIT).
  const moved: string[] = [];
  // The pre-claim guard (store/invitations.ts) for an existing account this change joins or makes owner.
  // The account is the one the row's email resolved to (decide): the refusal names that address.
  const guard = (accountIds: string[]) => ({ accountIds, tenantId, batchId: job.batchId, trusted: job.trustAccounts });
  const named = () => ({ field: 'email', emails: job.email !== undefined ? [job.email] : [] });
  if (d.verdict === 'unchanged') {
    outcome = 'unchanged';
    notes.push(d.note);
    // Not a member, but maybe still invited (Dify's console, or a removal it made): those tokens go.
    if (job.action === 'remove_member' && d.account) removed = d.account.id;
  } else {
    const owner = ws!.owners[0]!;
    switch (d.change) {
      case 'add': {
        let account = d.account!;
        let isNew = false;
        if ('missing' in account) {
          const made = await ensureAccount(tx, account.email, 'email', rules);
          account = made.account;
          isNew = made.created;
          if (isNew) {
            created.push(made.account.email);
            notes.push('account created (pending, as Dify invites)');
          }
          if (!(await lockAccount(tx, account.id))) throw gone(job.email!);
        }
        if (!isNew) await checkPreclaimed(tx, guard([account.id]), named);
        writes.push(deps.membership.addMember(tenantId, account.id, job.role!, isNew));
        if (!isNew) moved.push(account.id);
        if (job.invite && isNew && sealKey && deps.inviter) {
          pending = await deps.inviter.prepare(
            tx,
            { batchId: job.batchId, line: job.line, workspaceName: ws!.name, send: job.sendInvites ?? false },
            [{ accountId: account.id, email: account.email, workspaceId: tenantId, role: job.role!, requiresSetup: true }],
            sealKey,
          );
          notes.push('invited');
        }
        break;
      }
      case 'remove':
        removed = (d.account as Account).id;
        writes.push(...deps.membership.removeMember(tenantId, removed, owner));
        break;
      case 're-role':
        writes.push(deps.membership.setRole(tenantId, (d.account as Account).id, job.role!));
        break;
      case 'transfer': {
        const id = (d.account as Account).id;
        await checkPreclaimed(tx, guard([id]), named);
        writes.push(deps.membership.transferOwner(tenantId, owner, id));
        moved.push(id, owner);
        notes.push('the previous owner is admin now');
        break;
      }
      case 'rename':
        writes.push(deps.membership.rename(tenantId, job.name!));
        break;
      case 'archive':
      case 'restore':
        writes.push(deps.membership.setStatus(tenantId, d.change === 'archive' ? 'archive' : 'normal'));
        break;
    }
  }
  const withdrawAt = moved.length > 0 ? writes.length : -1;
  if (moved.length > 0)
    writes.push(
      withdrawAwayFromHomeStatement(
        moved,
        `revoked: the person's workspaces changed (batch ${job.batchId}, line ${job.line}); a link sets the password for every workspace`,
      ),
    );
  const answer = (extra: string[] = []) => {
    const said = [...notes, ...extra];
    return recordOutcomeStatement(
      at.answer({
        outcome,
        tenantId,
        ...(created.length > 0 ? { createdAccounts: created } : {}),
        ...(said.length > 0 ? { error: said.join('; ') } : {}),
      }),
    );
  };

  if (removed === undefined) {
    // Dify's rows, the row's answer and COMMIT: one round trip.
    const results = resultsOf(await tx.query(inlined(...writes, answer(), 'COMMIT')));
    const withdrawn = withdrawAt >= 0 ? (results[withdrawAt]!.rows as { id: string }[]).map((r) => r.id) : [];
    return { kind: 'done', outcome, pending, withdrawn };
  }

  // A removal: its writes and our invitations of the person superseded; then their tokens go.
  writes.push(supersedePersonStatement(tenantId, removed));
  const results = resultsOf(await tx.query(inlined(...writes)));
  const ours = results[results.length - 1]!.rows as SupersededOfPerson[];
  if (d.verdict === 'apply' && results[results.length - 2]!.rows.length > 0)
    notes.push('pending account deleted (no workspace left), as Dify does');
  const revocation = await revokePerson(deps, job, tenantId, removed, ours);
  if (revocation.deleted > 0 && outcome === 'unchanged') outcome = 'applied';
  await tx.query(
    inlined(...(revocation.recorded ? [recordRevocationStatement(job, tenantId, removed)] : []), answer(revocation.notes), 'COMMIT'),
  );
  return { kind: 'done', outcome, pending, withdrawn: [] };
}

/**
 * Before the removal's COMMIT: every token naming the person and the workspace goes from Dify's
 * Redis (Dify's removal leaves them, and from 1.15 a token re-creates the join at activation),
 * found without a SCAN of its own (invite/revoke.ts). Should the COMMIT then fail, the person lost
 * only links the row meant to revoke anyway. Where this worker has no Dify Redis, or it does not
 * answer, the revocation is recorded (`recorded`) and a worker's sweep that has it deletes them.
 */
async function revokePerson(
  deps: ChangeDeps,
  job: ChangeJob,
  tenantId: string,
  accountId: string,
  ours: SupersededOfPerson[],
): Promise<{ deleted: number; recorded: boolean; notes: string[] }> {
  if (!deps.revoker)
    return {
      deleted: 0,
      recorded: true,
      notes: [
        `their invitation tokens for this workspace are left to the sweep of a worker with Dify's Redis (this one has none: ${deps.revokeProblem ?? 'not configured'}): recorded`,
      ],
    };
  try {
    const deleted = await deps.revoker.revokePerson(job.batchId, accountId, tenantId, {
      pendingTokens: ours.flatMap((o) => (o.pending_token ? [o.pending_token] : [])),
      storedAt: ours.flatMap((o) => (o.stored_at ? [o.stored_at] : [])),
    });
    return { deleted, recorded: false, notes: deleted > 0 ? [`${deleted} invitation token(s) deleted from Dify's Redis`] : [] };
  } catch (err) {
    deps.logger?.warn(
      { batchId: job.batchId, line: job.line, error: describeError(err) },
      "Dify's Redis did not answer: the removal's revocation is recorded and a worker's sweep deletes the tokens",
    );
    return {
      deleted: 0,
      recorded: true,
      notes: ["their invitation tokens are left to a worker's sweep (Dify's Redis did not answer): recorded"],
    };
  }
}

/** Each statement's result of an inlined query (pg answers one statement with a result, several with a list). */
const resultsOf = (r: unknown): { rows: unknown[] }[] => (Array.isArray(r) ? r : [r]) as { rows: unknown[] }[];

async function end(tx: Tx, ran: Ran): Promise<Ran> {
  await tx.query('COMMIT');
  return ran;
}

function refuse(d: { verdict: string; field?: string; message?: string }): never {
  throw new RowError(d.field ?? 'action', d.message ?? 'refused');
}

const gone = (email: string) =>
  new RowError('email', `the account of ${email} was deleted while the row ran: nothing was changed; check it and \`retry\``);

async function completeInvitations(deps: ChangeDeps, job: ChangeJob, run: () => Promise<number>): Promise<void> {
  try {
    await run();
  } catch (err) {
    deps.logger?.warn(
      { batchId: job.batchId, line: job.line, error: describeError(err) },
      "invitation tokens could not be stored in Dify's Redis yet: the change is applied and a worker's sweep stores them",
    );
  }
}
