// Finds the Dify account behind an email. Dify has no unique constraint on accounts.email,
// so two matches are possible: that is an error for the row, never a guess.
import type { Db, Tx } from '../db/pool.js';
import { RowError } from '../errors.js';

export interface Account {
  id: string;
  email: string;
  status: string;
}

const UNUSABLE = new Set(['banned', 'closed']);

export async function findAccounts(db: Db | Tx, email: string): Promise<Account[]> {
  const { rows } = await db.query<Account>(
    `SELECT id, email, status FROM accounts WHERE lower(email) = lower($1) ORDER BY created_at LIMIT 2`,
    [email],
  );
  return rows;
}

/** The one usable account with this email, or a RowError naming the field and what to do. */
export async function resolveAccount(db: Db | Tx, email: string, field: string): Promise<Account> {
  const found = await findAccounts(db, email);
  if (found.length === 0) {
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
