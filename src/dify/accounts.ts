// Finds the Dify account behind an email. Dify has no unique constraint on accounts.email,
// so two matches are possible: that is an error for the row, never a guess.
import type { Db, Tx } from '../db/pool.js';
import { RowError } from '../errors.js';
import { lockAccountEmail } from '../store/locks.js';
import type { Account } from '../types.js';

export type { Account };

/** An account to be created in the workspace's transaction (the batch allows it). */
export interface MissingAccount {
  missing: true;
  email: string;
}

const UNUSABLE = new Set(['banned', 'closed']);

export async function findAccounts(db: Db | Tx, emails: string[]): Promise<Account[]> {
  const { rows } = await db.query<Account>(
    `SELECT id, email, status FROM accounts WHERE lower(email) = ANY($1::text[]) ORDER BY created_at`,
    [emails.map((e) => e.toLowerCase())],
  );
  return rows;
}

/**
 * The one usable account with this email among `matches` (accounts whose email equals it
 * case-insensitively); when none and the batch allows it, one to create. Else a RowError naming
 * the field and what to do.
 */
export function pickAccount(matches: Account[], email: string, field: string, createMissing = false): Account | MissingAccount {
  const found = matches.filter((a) => a.email.toLowerCase() === email.toLowerCase());
  if (found.length === 0) {
    if (createMissing) return { missing: true, email };
    throw new RowError(field, `no Dify account has the email "${email}" — create the account or fix the address`);
  }
  if (found.length > 1) {
    throw new RowError(field, `more than one Dify account has the email "${email}" — ambiguous; merge or rename one of them`);
  }
  const account = found[0]!;
  if (UNUSABLE.has(account.status)) {
    throw new RowError(field, `the Dify account "${email}" is ${account.status} and cannot join a workspace`);
  }
  return account;
}

/**
 * In the workspace's transaction: the account for a deferred email, created the way Dify's invite
 * flow creates one (status pending, no password, name from the address) unless another job made it
 * first. The advisory lock makes two rows naming the same new email create it once.
 */
export async function ensureAccount(tx: Tx, email: string, field: string): Promise<{ account: Account; created: boolean }> {
  const normalized = email.toLowerCase();
  await lockAccountEmail(tx, normalized);
  const found = await findAccounts(tx, [normalized]);
  if (found.length > 0) return { account: pickAccount(found, normalized, field) as Account, created: false };
  const { rows } = await tx.query<Account>(
    `INSERT INTO accounts (name, email, status, interface_language, interface_theme, timezone)
     VALUES ($1, $2, 'pending', 'en-US', 'light', 'America/New_York')
     RETURNING id, email, status`,
    [normalized.slice(0, normalized.lastIndexOf('@')), normalized],
  );
  return { account: rows[0]!, created: true };
}
