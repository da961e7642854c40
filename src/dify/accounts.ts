// Finds the Dify account behind an email, the way the connected Dify's invite does. Dify has no
// unique constraint on accounts.email, so two matches are possible: that is an error for the row,
// never a guess. A Dify that keeps accounts.normalized_email also knows a person by that form
// (john.doe+x@gmail.com is johndoe@gmail.com): normalized-email.ts.
import type { Db, Statement, Tx } from '../db/pool.js';
import { RowError } from '../common/errors.js';
import { lockAccountEmail } from '../store/locks.js';
import type { Account } from '../common/types.js';
import { difyNormalizedEmail } from './normalized-email.js';
import { LANGUAGE_TIMEZONES } from './profile-lists.js';

export type { Account };

/** An account to be created in the workspace's transaction (the batch allows it). */
export interface MissingAccount {
  missing: true;
  email: string;
}

/** How this Dify tells its accounts apart: `normalized` when accounts.normalized_email exists (schema-probe.ts). */
export interface AccountRules {
  normalized: boolean;
}

const UNUSABLE = new Set(['banned', 'closed']);

/** What tells two new addresses apart for this Dify: its normalised email where it keeps one, else the email ignoring case. */
export const personKey = (email: string, rules: AccountRules): string =>
  rules.normalized ? difyNormalizedEmail(email) : email.toLowerCase();

/**
 * A workspace joins an account once: two of a row's addresses that are one Dify account (found,
 * or one to be created: `account` is its id or personKey) are an error for the row.
 */
export function checkDistinct(people: { email: string; account: string }[]): void {
  const seen = new Map<string, string>();
  for (const p of people) {
    const other = seen.get(p.account);
    if (other !== undefined) {
      throw new RowError('members', `"${p.email}" and "${other}" are the same Dify account: list each person once (as owner or member)`);
    }
    seen.set(p.account, p.email);
  }
}

/**
 * The SQL that finds the candidate accounts `a` for some emails, and its parameters (numbered
 * from `first`): the same email ignoring case and, where Dify keeps it, the same normalised email.
 */
export function accountCandidates(
  emails: string[],
  rules: AccountRules,
  first: number,
): { where: string; json: string; params: unknown[] } {
  const lowered = `$${first}::text[]`;
  const normalizedParam = `$${first + 1}::text[]`;
  return rules.normalized
    ? {
        where: `(lower(a.email) = ANY(${lowered}) OR a.normalized_email = ANY(${normalizedParam}))`,
        json: `json_build_object('id', a.id, 'email', a.email, 'status', a.status, 'normalizedEmail', a.normalized_email)`,
        params: [emails.map((e) => e.toLowerCase()), emails.map(difyNormalizedEmail)],
      }
    : {
        where: `lower(a.email) = ANY(${lowered})`,
        json: `json_build_object('id', a.id, 'email', a.email, 'status', a.status)`,
        params: [emails.map((e) => e.toLowerCase())],
      };
}

/** Of `accounts`, the candidates for these emails by accountCandidates' rule (what its SQL would find for them alone). */
export function candidatesAmong(accounts: Account[], emails: string[], rules: AccountRules): Account[] {
  const lowered = new Set(emails.map((e) => e.toLowerCase()));
  const normalized = new Set(rules.normalized ? emails.map(difyNormalizedEmail) : []);
  return accounts.filter(
    (a) =>
      lowered.has(a.email.toLowerCase()) ||
      (a.normalizedEmail !== undefined && a.normalizedEmail !== null && normalized.has(a.normalizedEmail)),
  );
}

/**
 * Above this many accounts a worker advises the index on lower(email): without it a look-up costs
 * PostgreSQL ~0.4 µs of CPU an account (measured from 200 to 100,000 accounts, BENCHMARKS.md),
 * ~0.8 ms here, half again of the ~1.5 ms the rest of a new workspace costs it.
 */
export const LARGE_ACCOUNTS = 2_000;
/** PostgreSQL CPU (ms) a look-up without the index costs an account (BENCHMARKS.md, issue 34). */
const SCAN_MS_PER_ACCOUNT = 0.0004;

/** The index an operator may add to Dify's accounts so that our look-ups stop scanning it (docs/scaling.md); we never add it ourselves. */
export const LOWER_EMAIL_INDEX_SQL = 'CREATE INDEX CONCURRENTLY dify_provision_accounts_lower_email ON accounts (lower(email))';

/**
 * Every look-up of ours finds accounts by `lower(email)` (accountCandidates), which Dify's own
 * index on `email` cannot serve: without an index on `lower(email)` each new workspace, change
 * and plan scans Dify's whole accounts table (~38 ms of PostgreSQL CPU a workspace at 100,000
 * accounts, measured). How many accounts there are (the planner's estimate) and whether such an
 * index (valid, not partial) exists.
 */
export async function accountLookupCost(db: Db): Promise<{ accounts: number; indexed: boolean }> {
  const { rows } = await db.query<{ accounts: string; indexed: boolean }>(
    `SELECT greatest(c.reltuples, 0)::bigint AS accounts,
            EXISTS (SELECT 1 FROM pg_index i
                     WHERE i.indrelid = c.oid AND i.indisvalid AND i.indpred IS NULL
                       AND pg_get_indexdef(i.indexrelid) ~* $1) AS indexed
       FROM pg_class c WHERE c.oid = to_regclass('accounts')`,
    // The definition PostgreSQL prints for an index on lower(email): "... (lower((email)::text))".
    [String.raw`\(lower\(\(?email\)?(::text)?\)\)`],
  );
  return { accounts: Number(rows[0]?.accounts ?? 0), indexed: rows[0]?.indexed ?? false };
}

/** The operator's advice when accountLookupCost finds a large table without the index; undefined when all is well. */
export function accountLookupAdvice(cost: { accounts: number; indexed: boolean }): string | undefined {
  if (cost.indexed || cost.accounts < LARGE_ACCOUNTS) return undefined;
  return (
    `Dify's accounts table has about ${cost.accounts} rows and no index on lower(email): every new workspace and every change ` +
    `scans it (about ${(cost.accounts * SCAN_MS_PER_ACCOUNT).toFixed(1)} ms of PostgreSQL CPU each at this size, against ~1.5 ms for the rest of a new workspace). dify-provision never alters Dify's tables; ` +
    `an operator may add the index once: ${LOWER_EMAIL_INDEX_SQL} (docs/scaling.md)`
  );
}

export async function findAccounts(db: Db | Tx, emails: string[], rules: AccountRules): Promise<Account[]> {
  const { where, json, params } = accountCandidates(emails, rules, 1);
  const { rows } = await db.query<{ a: Account }>(`SELECT ${json} AS a FROM accounts a WHERE ${where} ORDER BY a.created_at`, params);
  return rows.map((r) => r.a);
}

/**
 * The candidate accounts for these emails (as findAccounts), locked until the transaction ends
 * in id order (a removal may delete one; a change reads the status it acts on): a statement to
 * send with the transaction's others (db/pool.ts inlined); its one row's `accounts` is the list.
 */
export function lockAccountsStatement(emails: string[], rules: AccountRules): Statement {
  const { where, json, params } = accountCandidates(emails, rules, 1);
  return {
    text: `SELECT json_agg(${json} ORDER BY a.created_at) AS accounts
       FROM (SELECT * FROM accounts a WHERE ${where} ORDER BY a.id FOR UPDATE) a`,
    values: params,
  };
}

/** What a refusal of an email no Dify account has adds where the batch could create it instead. */
export const CREATE_MISSING_HINT = "(or pass --create-missing-owners to create it as Dify's invite does)";

const NO_ACCOUNT = 'no Dify account has the email';

/** pickAccount's refusal of an email no Dify account has (a caller adds its own way forward). */
export const isNoAccount = (err: unknown): boolean => err instanceof RowError && err.message.startsWith(NO_ACCOUNT);

/**
 * The one usable account for this email among `matches` (candidates from accountCandidates), as
 * Dify's invite finds it: the account with this email (ignoring case); else, where Dify keeps
 * normalised emails, the account with the same normalised email, so a row never makes a second
 * account for a person Dify knows. Two accounts either way: an error naming both, never a pick.
 * None: one to create when the batch allows it, else a RowError naming the field. `anyStatus`: a
 * banned or closed account is returned too (a removal or a role change may concern it).
 */
export function pickAccount(
  matches: Account[],
  email: string,
  field: string,
  rules: AccountRules,
  createMissing = false,
  anyStatus = false,
): Account | MissingAccount {
  let found = matches.filter((a) => a.email.toLowerCase() === email.toLowerCase());
  let how = '';
  if (found.length === 0 && rules.normalized) {
    const normal = difyNormalizedEmail(email);
    found = matches.filter((a) => a.normalizedEmail === normal);
    how = ` (Dify's normalised email ${normal})`;
  }
  if (found.length === 0) {
    if (createMissing) return { missing: true, email };
    throw new RowError(field, `${NO_ACCOUNT} "${email}" — create the account or fix the address`);
  }
  if (found.length > 1) {
    const named = found
      .slice(0, 3)
      .map((a) => `"${a.email}"`)
      .join(' and ');
    throw new RowError(
      field,
      `more than one Dify account has the email "${email}"${how}: ${named}${found.length > 3 ? ' and others' : ''} — ambiguous; merge or rename one of them`,
    );
  }
  const account = found[0]!;
  const which = account.email === email ? `"${email}"` : `"${account.email}" (for "${email}")`;
  if (!anyStatus && UNUSABLE.has(account.status)) {
    throw new RowError(field, `the Dify account ${which} is ${account.status} and cannot join a workspace`);
  }
  return account;
}

/** A person's profile as a row gives it (each part optional). */
export interface AccountProfile {
  name?: string;
  language?: string;
  timezone?: string;
}

/**
 * The profile Dify's register writes for a new account: the name given, else the address's part
 * before `@`; the language given, else en-US (Dify's first language); the timezone given (as
 * Dify's register takes one, checked against pytz's list), else the one Dify maps the language to
 * (language_timezone_mapping, UTC for a language it does not map).
 */
export function profileOf(email: string, profile: AccountProfile): Required<AccountProfile> {
  const language = profile.language ?? 'en-US';
  return {
    name: profile.name ?? email.slice(0, email.lastIndexOf('@')),
    language,
    timezone: profile.timezone ?? LANGUAGE_TIMEZONES[language] ?? 'UTC',
  };
}

/**
 * In the workspace's transaction: the account for a deferred email, created the way Dify's invite
 * registers one (status pending, no password, the profile of profileOf, initialized_at now, and the
 * normalised email where Dify keeps it) unless another job made it first. The advisory lock on
 * the form Dify compares makes two rows naming the same new person create one account.
 */
export async function ensureAccount(
  tx: Tx,
  email: string,
  field: string,
  rules: AccountRules,
  profile: AccountProfile = {},
): Promise<{ account: Account; created: boolean }> {
  const lowered = email.toLowerCase();
  await lockAccountEmail(tx, personKey(email, rules));
  const found = await findAccounts(tx, [lowered], rules);
  if (found.length > 0) return { account: pickAccount(found, lowered, field, rules) as Account, created: false };
  const { name, language, timezone } = profileOf(lowered, profile);
  // Dify writes naive UTC times (naive_utc_now) into these timestamp-without-time-zone columns.
  const { rows } = await tx.query<Account>(
    `INSERT INTO accounts (name, email, status, interface_language, interface_theme, timezone, initialized_at${rules.normalized ? ', normalized_email' : ''})
     VALUES ($1, $2, 'pending', $3, 'light', $4, now() AT TIME ZONE 'UTC'${rules.normalized ? ', $5' : ''})
     RETURNING id, email, status`,
    [name, lowered, language, timezone, ...(rules.normalized ? [difyNormalizedEmail(lowered)] : [])],
  );
  return { account: rows[0]!, created: true };
}
