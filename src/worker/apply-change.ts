// How one change to an existing workspace is applied (apply): the worker's step for a change
// row, beside provision-workspace.ts for a new workspace. In order:
//   1. the row is ours to run (the spec apply recorded, this round, this server), not answered;
//   2. an earlier row of the file it waits for (afterLine) has its answer;
//   3. one transaction under the workspace's advisory lock: the workspace, its joins and the
//      person read (and locked) now, never from the plan; decide (changes/decide.ts) applies,
//      finds it done (unchanged) or refuses; what the connected Dify release writes for it
//      (dify/membership.ts); for a removal the person's invitation tokens for the workspace are
//      deleted from Dify's Redis before the COMMIT; the row's answer, in the same commit;
//   4. after the COMMIT: an added person's invitation token into Dify's Redis (as ingest's).
import type { KeyObject } from 'node:crypto';
import { decide, type Change } from '../changes/decide.js';
import { withTransaction, type Tx } from '../db/pool.js';
import { ensureAccount, findAccounts, type AccountRules } from '../dify/accounts.js';
import { pairOf, revokeAllOf } from '../dify/invitations.js';
import { lockAccount, lockWorkspace, type MembershipWriter } from '../dify/membership.js';
import { describeError, RowError } from '../common/errors.js';
import type { ChangeJob } from '../queue/contract.js';
import { supersedePerson, withdrawAwayFromHome } from '../store/invitations.js';
import { tenantOfExternalId } from '../store/ledger.js';
import { lockTenant } from '../store/locks.js';
import { outcomeOf, recordOutcome, startChange, type Finished } from '../store/rows.js';
import { ForeignJobError, NotQueuedError, OtherServerError, type ProvisionDeps } from './provision-workspace.js';

export interface ChangeDeps extends ProvisionDeps {
  /** What the connected Dify writes for each change (its release's capabilities). */
  membership: MembershipWriter;
}

type Pending = Awaited<ReturnType<NonNullable<ChangeDeps['inviter']>['prepare']>>;

export type ChangeOutcome = { kind: 'applied' | 'unchanged'; tenantId?: string } | { kind: 'cancelled' };

/** The row waits for an earlier row of its file (afterLine) that has no answer yet: the job is left for later, attempts not counted. */
export class WaitForRowError extends Error {
  override readonly name: string = 'WaitForRowError';
}

export async function applyChange(job: ChangeJob, attempt: number, deps: ChangeDeps, round = 1): Promise<ChangeOutcome> {
  const started = performance.now();
  const finished = (f: Omit<Finished, 'batchId' | 'line' | 'attempts' | 'durationMs'>): Finished => ({
    batchId: job.batchId,
    line: job.line,
    attempts: attempt,
    durationMs: performance.now() - started,
    ...f,
  });

  // 1. Ours to run, and not answered already (a duplicate run after a crash answers as recorded).
  const start = await startChange(deps.db, job, round, attempt, deps.own?.());
  if (!start.ours) throw new OtherServerError(`row ${job.batchId}:${job.line} was queued on another PostgreSQL server`);
  if (!start.matches) throw new ForeignJobError(start.recordedKey, start.recordedRound);
  if (start.outcome === 'cancelled') return { kind: 'cancelled' };
  if (start.outcome === 'applied' || start.outcome === 'unchanged') {
    if (job.invite && deps.inviter) await completeInvitations(deps, job, () => deps.inviter!.completePending(deps.db, job));
    return { kind: start.outcome };
  }
  if (start.outcome !== 'queued' && start.outcome !== 'active') throw new NotQueuedError(start.outcome ?? 'missing');

  // 2. The earlier row it waits for (its transfer_owner, or the add_member of its new owner).
  if (job.afterLine !== undefined) {
    const before = await outcomeOf(deps.db, job.batchId, job.afterLine);
    if (before === 'queued' || before === 'active') throw new WaitForRowError(`waits for line ${job.afterLine} of its batch to run first`);
  }

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
  const tenantId = job.workspaceId ?? (await tenantOfExternalId(deps.db, job.externalId!));
  if (!tenantId) refuse(decide(change, undefined, [], rules));
  const tokens = deps.inviter?.tokens;
  if (job.action === 'remove_member' && !tokens)
    throw new RowError(
      'action',
      `this worker cannot reach Dify's Redis to delete the person's invitation tokens (${deps.inviteProblem ?? 'not configured'}): nothing was changed; give the worker Dify's settings (--dify-env) and \`retry\``,
    );
  const sealKey = job.invite && job.action === 'add_member' ? await sealKeyOf(deps, job) : undefined;

  // 3. One transaction under the workspace's lock: everything read now.
  const answer = await withTransaction(deps.db, async (tx) => {
    await lockTenant(tx, tenantId!);
    const ws = await lockWorkspace(tx, tenantId!);
    const accounts = job.email !== undefined ? await findAccounts(tx, [job.email], rules) : [];
    const d = decide(change, ws, accounts, rules);
    if (d.verdict === 'refuse') refuse(d);
    const at = { tenantId: tenantId! };
    if (d.verdict === 'unchanged') {
      // Not a member, but maybe still invited (Dify's console, or a removal it made): those tokens go.
      const revoked = job.action === 'remove_member' && d.account ? await revoke(tx, deps, tenantId!, d.account.id) : 0;
      const outcome: 'applied' | 'unchanged' = revoked > 0 ? 'applied' : 'unchanged';
      const note = revoked > 0 ? `${d.note}; ${revoked} invitation token(s) deleted from Dify's Redis` : d.note;
      await recordOutcome(tx, finished({ outcome, ...at, error: note }));
      return { outcome, pending: [] as Pending, withdrawn: [] as { id: string }[] };
    }
    const notes: string[] = [];
    const created: string[] = [];
    let pending: Pending = [];
    // A link goes only with the person's home workspace (docs/security.md): who this change gives
    // a join or takes ownership from loses links that may no longer go with theirs (revoked after the COMMIT).
    const moved: string[] = [];
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
        }
        if (!(await lockAccount(tx, account.id))) throw gone(job.email!);
        await deps.membership.addMember(tx, tenantId!, account.id, job.role!, isNew);
        if (!isNew) moved.push(account.id);
        if (job.invite && isNew && sealKey && deps.inviter) {
          pending = await deps.inviter.prepare(
            tx,
            { batchId: job.batchId, line: job.line, workspaceName: ws!.name, send: job.sendInvites ?? false },
            [{ accountId: account.id, email: account.email, workspaceId: tenantId!, role: job.role!, requiresSetup: true }],
            sealKey,
          );
          notes.push('invited');
        }
        break;
      }
      case 'remove': {
        const id = (d.account as { id: string }).id;
        const locked = await lockAccount(tx, id);
        if (!locked) throw gone(job.email!);
        const { accountDeleted } = await deps.membership.removeMember(tx, tenantId!, id, ws!.owners[0]!, locked.status);
        if (accountDeleted) notes.push('pending account deleted (no workspace left), as Dify does');
        const revoked = await revoke(tx, deps, tenantId!, id);
        if (revoked > 0) notes.push(`${revoked} invitation token(s) deleted from Dify's Redis`);
        break;
      }
      case 're-role':
        await deps.membership.setRole(tx, tenantId!, (d.account as { id: string }).id, job.role!);
        break;
      case 'transfer': {
        const id = (d.account as { id: string }).id;
        if (!(await lockAccount(tx, id))) throw gone(job.email!);
        await deps.membership.transferOwner(tx, tenantId!, ws!.owners[0]!, id);
        moved.push(id, ws!.owners[0]!);
        notes.push('the previous owner is admin now');
        break;
      }
      case 'rename':
        await deps.membership.rename(tx, tenantId!, job.name!);
        break;
      case 'archive':
      case 'restore':
        await deps.membership.setStatus(tx, tenantId!, d.change === 'archive' ? 'archive' : 'normal');
        break;
    }
    const withdrawn = await withdrawAwayFromHome(
      tx,
      moved,
      `revoked: the person's workspaces changed (batch ${job.batchId}, line ${job.line}); a link sets the password for every workspace`,
    );
    await recordOutcome(
      tx,
      finished({
        outcome: 'applied',
        ...at,
        ...(created.length > 0 ? { createdAccounts: created } : {}),
        ...(notes.length > 0 ? { error: notes.join('; ') } : {}),
      }),
    );
    return { outcome: 'applied' as const, pending, withdrawn };
  });

  // 4. After the COMMIT: the added person's token into Dify's Redis (the sweep completes it if this fails).
  if (answer.pending.length > 0) await completeInvitations(deps, job, () => deps.inviter!.complete(deps.db, answer.pending));
  // Without an inviter here, a worker's sweep that has one deletes the revoked links' tokens.
  if (answer.withdrawn.length > 0 && deps.inviter)
    await completeInvitations(deps, job, () => deps.inviter!.revokeWithdrawn(deps.db, { ids: answer.withdrawn.map((w) => w.id) }));
  return { kind: answer.outcome, tenantId: tenantId! };
}

function refuse(d: { verdict: string; field?: string; message?: string }): never {
  throw new RowError(d.field ?? 'action', d.message ?? 'refused');
}

const gone = (email: string) =>
  new RowError('email', `the account of ${email} was deleted while the row ran: nothing was changed; check it and \`retry\``);

/**
 * In the workspace's transaction, before its COMMIT: our invitations of the person for this
 * workspace are superseded (no sweep stores a pending one), and every token naming them and the
 * workspace is deleted from Dify's Redis (Dify's removal leaves them, and from 1.15 a token
 * re-creates the join at activation). Should the COMMIT then fail, the person lost only links
 * the row meant to revoke anyway. Returns the tokens deleted.
 */
async function revoke(tx: Tx, deps: ChangeDeps, tenantId: string, accountId: string): Promise<number> {
  await supersedePerson(tx, tenantId, accountId);
  return revokeAllOf(deps.inviter!.tokens, [pairOf(accountId, tenantId)]);
}

async function sealKeyOf(deps: ChangeDeps, job: ChangeJob): Promise<KeyObject> {
  const key = await deps.sealKeys?.get(job.batchId);
  if (!key) throw new RowError('invite', `batch ${job.batchId} has no --seal-to key to seal the invitation links to`);
  if (!deps.inviter)
    throw new RowError(
      'invite',
      `this worker cannot issue invitations (${deps.inviteProblem ?? 'not configured'}): nothing was changed; fix it and \`retry\``,
    );
  return key;
}

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
