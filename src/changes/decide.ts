// What one change does to a workspace as it is now: apply it, find it done already (unchanged),
// or refuse it, with Dify's own rules (dify/NOTES.md, "Lifecycle"). One pure function, used by
// the worker (on the state it read under the workspace's lock, at that moment) and by the dry
// run (on the state it read without locks): the plan says what the run would do.
import { CREATE_MISSING_HINT, isNoAccount, pickAccount, type AccountRules, type MissingAccount } from '../dify/accounts.js';
import type { WorkspaceState } from '../dify/membership.js';
import { RowError } from '../common/errors.js';
import type { Account, ChangeAction, MemberRole } from '../common/types.js';

/** What an applied change is, in the plan's words. */
export const CHANGE_KINDS = ['add', 'remove', 're-role', 'transfer', 'rename', 'archive', 'restore'] as const;
export type ChangeKind = (typeof CHANGE_KINDS)[number];

export type Decision =
  | { verdict: 'apply'; change: ChangeKind; account?: Account | MissingAccount }
  | { verdict: 'unchanged'; note: string; account?: Account }
  | { verdict: 'refuse'; field: string; message: string };

/** The change, as the worker and the plan both know it. */
export interface Change {
  action: ChangeAction;
  email?: string;
  role?: MemberRole;
  name?: string;
  /** How the row named its workspace (for messages). */
  workspaceId?: string;
  externalId?: string;
  createMissingAccounts?: boolean;
}

const KIND: Record<ChangeAction, ChangeKind> = {
  add_member: 'add',
  remove_member: 'remove',
  set_role: 're-role',
  transfer_owner: 'transfer',
  rename: 'rename',
  archive: 'archive',
  restore: 'restore',
};

const refuse = (field: string, message: string): Decision => ({ verdict: 'refuse', field, message });

/**
 * `ws`: the workspace now (undefined: there is none). `accounts`: the candidate accounts for the
 * row's email (dify/accounts.ts accountCandidates).
 */
export function decide(change: Change, ws: WorkspaceState | undefined, accounts: Account[], rules: AccountRules): Decision {
  if (!ws)
    return change.workspaceId !== undefined
      ? refuse('workspace_id', `no Dify workspace has the id ${change.workspaceId}`)
      : refuse('external_id', `no workspace was provisioned with external_id "${change.externalId}" (or it was deleted from Dify)`);
  switch (change.action) {
    case 'rename':
      return ws.name === change.name ? { verdict: 'unchanged', note: 'the workspace has this name already' } : apply('rename');
    case 'archive':
      return ws.status === 'archive' ? { verdict: 'unchanged', note: 'the workspace is archived already' } : apply('archive');
    case 'restore':
      return ws.status === 'normal' ? { verdict: 'unchanged', note: 'the workspace is not archived' } : apply('restore');
    default:
      return decideMember(change, ws, accounts, rules);
  }
}

const apply = (change: ChangeKind, account?: Account | MissingAccount): Decision => ({
  verdict: 'apply',
  change,
  ...(account ? { account } : {}),
});

function decideMember(change: Change, ws: WorkspaceState, accounts: Account[], rules: AccountRules): Decision {
  const email = change.email!;
  if (ws.status !== 'normal')
    return refuse(
      'action',
      `the workspace is ${ws.status === 'archive' ? 'archived' : ws.status}: member changes are refused (restore it first)`,
    );
  // The person, as Dify's invite finds them. Only add_member may create one, and only a usable
  // account may be added or made owner; a removal or a role change concerns any account.
  const usableOnly = change.action === 'add_member' || change.action === 'transfer_owner';
  let person: Account | MissingAccount;
  try {
    person = pickAccount(
      accounts,
      email,
      'email',
      rules,
      change.action === 'add_member' && change.createMissingAccounts === true,
      !usableOnly,
    );
  } catch (err) {
    if (!(err instanceof RowError)) throw err;
    const unknown = !accounts.some((a) => a.email.toLowerCase() === email.toLowerCase()) && isNoAccount(err);
    // Nobody to remove: what the row asks for holds (a removed pending account was deleted by Dify's rule).
    if (change.action === 'remove_member' && unknown) return { verdict: 'unchanged', note: 'no Dify account has this email: not a member' };
    if (change.action === 'add_member' && unknown) return refuse('email', `${err.message} ${CREATE_MISSING_HINT}`);
    return refuse(err.field, err.message);
  }
  if ('missing' in person) return apply('add', person);
  const role = ws.roles.get(person.id);
  switch (change.action) {
    case 'add_member':
      if (role === undefined) return apply('add', person);
      return {
        verdict: 'unchanged',
        account: person,
        note:
          role === change.role
            ? `already a member as ${role}`
            : `already a member as ${role}: add_member never changes a role (set_role does${role === 'owner' ? '; transfer_owner changes the owner' : ''})`,
      };
    case 'remove_member':
      if (role === undefined) return { verdict: 'unchanged', account: person, note: 'not a member of this workspace' };
      if (role === 'owner')
        return refuse('email', `${email} is the workspace's owner: transfer ownership first (transfer_owner), then remove`);
      if (ws.owners.length !== 1) return oneOwner(ws);
      return apply('remove', person);
    case 'set_role':
      if (role === undefined) return refuse('email', `${email} is not a member of this workspace (add_member adds a person)`);
      if (role === 'owner')
        return refuse(
          'email',
          `${email} is the workspace's owner: transfer_owner gives ownership to another member (this one becomes admin)`,
        );
      return role === change.role ? { verdict: 'unchanged', account: person, note: `already ${role}` } : apply('re-role', person);
    case 'transfer_owner':
      if (role === 'owner') return { verdict: 'unchanged', account: person, note: 'already the owner' };
      if (role === undefined)
        return refuse('email', `${email} is not a member of this workspace: add them first (add_member, in this file or before)`);
      if (ws.owners.length !== 1) return oneOwner(ws);
      return apply('transfer', person);
    default:
      return refuse('action', `${change.action} is not a member change`);
  }
}

const oneOwner = (ws: WorkspaceState): Decision =>
  refuse('action', `the workspace has ${ws.owners.length} owners, not one: fix its owner in Dify first (exactly one owner is Dify's rule)`);

/** The change each action applies, for the plan's counts. */
export const kindOf = (action: ChangeAction): ChangeKind => KIND[action];
