// The invitations we issued: every statement on dify_provision.invitations. A link is kept only
// sealed (dropped once revealed); a token in the clear only from the commit that records it to
// its SETEX in Dify's Redis (markStored clears it).
import { RowError } from '../common/errors.js';
import type { Account } from '../common/types.js';
import { personKey, pickAccount, type AccountRules } from '../dify/accounts.js';
import type { Db, Statement, Tx } from '../db/pool.js';
import { SCHEMA } from './schema.js';

/**
 * The rule of docs/security.md as SQL: a link for account `a` may go with workspace `w` when `w`
 * is the person's home — they are in no other workspace. Owning one of them does not make it home:
 * a row of customer B that makes A's future member the owner of B's workspace must not keep a
 * link that opens A's workspace once A adds that person (owning says nothing of whose person it is).
 * (Accounts are global: a link sets the password for every workspace the person is in.)
 */
export const atHome = (a: string, w: string) =>
  `NOT EXISTS (SELECT 1 FROM tenant_account_joins hj WHERE hj.account_id = ${a} AND hj.tenant_id <> ${w})`;

/** Of these accounts, those with a join in a workspace other than `tenantId` (the row's own joins written). */
export async function inOtherWorkspaces(tx: Tx, accountIds: string[], tenantId: string): Promise<Set<string>> {
  if (accountIds.length === 0) return new Set();
  const { rows } = await tx.query<{ account_id: string }>(
    `SELECT DISTINCT account_id FROM tenant_account_joins WHERE account_id = ANY($1::uuid[]) AND tenant_id <> $2`,
    [accountIds, tenantId],
  );
  return new Set(rows.map((r) => r.account_id));
}

/**
 * In the transaction that gave these (pending) accounts a join in another workspace: every
 * current link of theirs that may no longer go with its workspace (atHome) is revoked — never
 * stored, revealed or mailed again, and its tokens marked for deletion from Dify's Redis.
 * Links only mailed to the person stay (they reached the person). Returns the revoked records.
 */
export async function withdrawAwayFromHome(tx: Tx, accountIds: string[], reason: string): Promise<{ id: string; account_id: string }[]> {
  if (accountIds.length === 0) return [];
  const s = withdrawAwayFromHomeStatement(accountIds, reason);
  const { rows } = await tx.query<{ id: string; account_id: string }>(s.text, s.values);
  return rows;
}

/** withdrawAwayFromHome as a statement (RETURNING id, account_id), to send with others (db/pool.ts inlined). */
export const withdrawAwayFromHomeStatement = (accountIds: string[], reason: string): Statement => ({
  text: `UPDATE ${SCHEMA}.invitations i
        SET superseded_at = now(), pending_token = NULL, jwe = NULL, withdrawn = $2::text, revoke_pending = true
      WHERE i.account_id = ANY($1::uuid[]) AND i.superseded_at IS NULL AND NOT i.mail_only
        AND NOT ${atHome('i.account_id', 'i.tenant_id')}
      RETURNING i.id, i.account_id`,
  values: [accountIds, reason],
});

/**
 * The pre-claim guard (docs/security.md): of these accounts (existing ones a row would join to
 * workspace `tenantId`), those that are active and had a link of ours that went to another
 * batch's operator: not only mailed to the person, and revealed (or still revealable) — issued by
 * a batch that is neither the row's nor the one that created the workspace, with another
 * workspace. Whoever held that link may have set the password; joining the account here would
 * give them this workspace. Our ledger cannot tell them from the person (who may have activated
 * through Dify's email code instead), so the row is refused unless the operator trusts the
 * address (refusePreclaimed). Run after the accounts are locked, in the row's transaction.
 */
export const preclaimedStatement = (accountIds: string[], tenantId: string, batchId: string): Statement => ({
  // Our function (store/schema.ts preclaimed_v1), planned once per connection: the active accounts
  // among these with a link, not only mailed, current or revealed, from a batch other than this
  // row's and other than the one that created the workspace.
  text: `SELECT * FROM ${SCHEMA}.preclaimed_v1($1::uuid[], $2::uuid, $3::text)`,
  values: [accountIds, tenantId, batchId],
});

/** What preclaimedStatement returns. */
export interface Preclaimed {
  account_id: string;
  email: string;
}

/**
 * How a row names an account the guard found: the row's field, and the addresses as the row wrote
 * them that resolved to the account (pickAccount). Where Dify keeps normalised emails they may
 * differ from the account's own (the row's ceo+x@gmail.com is the account c.e.o@gmail.com); none
 * when no address of the row resolved to it (the refusal names the account's email then).
 */
export interface NamedBy {
  field: string;
  emails: readonly string[];
}

/**
 * The refusal shared by ingest's rows and apply's: the first pre-claimed account the operator did
 * not trust, named by its field and the row's address. Never says which batch.
 */
export const refusePreclaimed = (found: Preclaimed[], trusted: readonly string[] | undefined, namedBy: (accountId: string) => NamedBy) =>
  refuseFirstUntrusted(
    found,
    trusted,
    namedBy,
    (named, address) =>
      `${named}: this account was created or invited by another batch and is active, and its link was given to that batch's operator, ` +
      `not only mailed to the address itself: whoever held the link may have set its password; ` +
      `confirm it is the person (--trust-account ${address}) or use another address`,
  );

/**
 * The first of `found` the operator did not trust fails the row, named by its field. Trusted: one
 * of the row's addresses that resolved to the account, or the account's own email (compared
 * ignoring case, never by the normalised form; a row's job carries the trusted addresses it names
 * and those of the same normalised form, ingest's trustedOf: such an address trusts only the
 * account whose email it is, never another account that shares the form).
 * `words` gets the account as the refusal names it (the row's address, and the Dify account it
 * resolved to when that is another address) and the address its advice tells the operator to trust:
 * the row's, the one a --trust-account given at ingest or retry reaches the row with.
 */
function refuseFirstUntrusted(
  found: Preclaimed[],
  trusted: readonly string[] | undefined,
  namedBy: (accountId: string) => NamedBy,
  words: (named: string, address: string) => string,
): void {
  const trust = new Set((trusted ?? []).map((e) => e.toLowerCase()));
  for (const f of found) {
    const { field, emails } = namedBy(f.account_id);
    if ([...emails, f.email].some((e) => trust.has(e.toLowerCase()))) continue;
    const address = emails[0] ?? f.email;
    const named = address.toLowerCase() === f.email.toLowerCase() ? address : `${address} (Dify account ${f.email})`;
    throw new RowError(field, words(named, address));
  }
}

/**
 * The pre-claim guard for a row answered `existing` (its key's workspace was made already, maybe by
 * another batch whose row used the same external_id): of the accounts the row names, those with a
 * link of ours that went to the operator of a batch other than the row's (not only mailed; revealed
 * or still revealable), pending or active alike (an existing answer writes nothing, so nothing
 * revokes a pending person's link). Links of a batch sealed to the same operator key as the row's
 * batch are not counted: whoever can reveal one can reveal the other (a corrected file ingested
 * again under the same --seal-to). Found: the row is refused unless the operator trusts the address
 * (refuseExistingPreclaimed): else the report would call a workspace the row's own while another
 * batch's operator holds a link that sets its owner's password.
 */
export async function preclaimedForExisting(
  db: Db,
  accountIds: string[],
  batchId: string,
  /** A batch not recorded yet (a dry run): the public PEM it would be made with (--seal-to); a recorded batch keeps its own. */
  sealTo?: string,
): Promise<Preclaimed[]> {
  if (accountIds.length === 0) return [];
  const { rows } = await db.query<Preclaimed>(
    `WITH mine AS (
       SELECT CASE WHEN EXISTS (SELECT 1 FROM ${SCHEMA}.batches b WHERE b.id = $2)
                   THEN (SELECT b.options ->> 'sealTo' FROM ${SCHEMA}.batches b WHERE b.id = $2) ELSE $3::text END AS seal_to
     )
     SELECT DISTINCT a.id AS account_id, a.email::text AS email FROM accounts a
       JOIN ${SCHEMA}.invitations i ON i.account_id = a.id
      WHERE a.id = ANY($1::uuid[]) AND NOT i.mail_only AND (i.revealed_at IS NOT NULL OR i.superseded_at IS NULL)
        AND i.batch_id <> $2
        AND NOT EXISTS (SELECT 1 FROM mine, ${SCHEMA}.batches theirs
                         WHERE theirs.id = i.batch_id AND mine.seal_to IS NOT NULL AND mine.seal_to = theirs.options ->> 'sealTo')
      ORDER BY a.email::text`,
    [accountIds, batchId, sealTo ?? null],
  );
  return rows;
}

/**
 * How a row answered existing names each of its candidate accounts (`accounts`: accountCandidates'
 * for its addresses `emails`, the owner's first): its addresses that resolve to it as pickAccount
 * would resolve them (none for one missing or ambiguous), and the owner's field for the account
 * the owner's address resolves to (or, resolving to none, one of the owner's person).
 */
export function namedByAddresses(accounts: Account[], emails: readonly string[], rules: AccountRules): (accountId: string) => NamedBy {
  const resolved = emails.map((email, i) => {
    try {
      const a = pickAccount(accounts, email, i === 0 ? 'owner_email' : 'members', rules, true, true);
      return 'missing' in a ? undefined : a.id;
    } catch {
      return undefined;
    }
  });
  const ownerKey = personKey(emails[0]!, rules);
  return (id) => {
    const a = accounts.find((x) => x.id === id);
    const owner = resolved[0] === id || (!resolved.includes(id) && a !== undefined && personKey(a.email, rules) === ownerKey);
    return { field: owner ? 'owner_email' : 'members', emails: emails.filter((_, i) => resolved[i] === id) };
  };
}

/** preclaimedForExisting's refusal: the first account the operator did not trust, named by its field and the row's address; never which batch. */
export const refuseExistingPreclaimed = (
  found: Preclaimed[],
  trusted: readonly string[] | undefined,
  namedBy: (accountId: string) => NamedBy,
) =>
  refuseFirstUntrusted(
    found,
    trusted,
    namedBy,
    (named, address) =>
      `${named}: this row's workspace exists already, and this account's link was given to the operator of another batch, ` +
      `not only mailed to the address itself: whoever holds the link can set its password; nothing was changed; ` +
      `confirm it is the person (--trust-account ${address}) or check the row's external_id`,
  );

/** preclaimedStatement run on `db`: what it finds of these accounts for a row of `batchId` joining them to `tenantId`. */
export async function findPreclaimed(db: Db | Tx, accountIds: string[], tenantId: string, batchId: string): Promise<Preclaimed[]> {
  if (accountIds.length === 0) return [];
  const s = preclaimedStatement(accountIds, tenantId, batchId);
  const { rows } = await db.query<Preclaimed>(s.text, s.values);
  return rows;
}

/** findPreclaimed on the row's transaction, then refusePreclaimed. */
export async function checkPreclaimed(
  tx: Tx,
  row: { accountIds: string[]; tenantId: string; batchId: string; trusted: readonly string[] | undefined },
  namedBy: (accountId: string) => NamedBy,
): Promise<void> {
  refusePreclaimed(await findPreclaimed(tx, row.accountIds, row.tenantId, row.batchId), row.trusted, namedBy);
}

/**
 * Whether this database has the pre-claim guard's function (preclaimed_v1; store/schema.ts): a dry
 * run reads a database it never migrates, and one not yet migrated to this release lacks it.
 */
export async function preclaimGuardInstalled(db: Db): Promise<boolean> {
  const { rows } = await db.query<{ has: boolean }>(
    `SELECT to_regprocedure('${SCHEMA}.preclaimed_v1(uuid[], uuid, text)') IS NOT NULL AS has`,
  );
  return rows[0]!.has;
}

/** Why the sweep revoked a link (withdrawStrayLinks): the report's `invitations` column shows it. */
export const STRAY_LINK =
  "revoked: the person joined another workspace where dify-provision did not add them (in Dify's console, say); a link sets the password for every workspace";

/**
 * The sweep's guard for joins no row of ours made (Dify's console adding a pending person to a
 * workspace: nothing of ours revokes then): every current link, not only mailed, whose token may
 * still be valid and whose person is still pending and no longer at home (atHome) is revoked as
 * withdrawAwayFromHome revokes, revealed or not. Returns the revoked records.
 */
export async function withdrawStrayLinks(db: Db): Promise<{ id: string }[]> {
  const { rows } = await db.query<{ id: string }>(
    `UPDATE ${SCHEMA}.invitations i
        SET superseded_at = now(), pending_token = NULL, jwe = NULL, withdrawn = $1, revoke_pending = true
       FROM accounts a
      WHERE a.id = i.account_id AND a.status = 'pending'
        AND i.superseded_at IS NULL AND NOT i.mail_only
        AND (i.stored_at IS NULL OR i.stored_at + make_interval(secs => i.ttl_seconds) > now())
        AND NOT ${atHome('i.account_id', 'i.tenant_id')}
      RETURNING i.id`,
    [STRAY_LINK],
  );
  return rows;
}

/** Revoked invitations whose tokens are still to be deleted from Dify's Redis (all, or these; idle for idleSeconds). */
export async function revocationsDue(
  db: Db,
  opts: { ids?: string[]; idleSeconds?: number; limit?: number },
): Promise<{ id: string; account_id: string; tenant_id: string }[]> {
  const { rows } = await db.query<{ id: string; account_id: string; tenant_id: string }>(
    `SELECT id, account_id, tenant_id FROM ${SCHEMA}.invitations
      WHERE revoke_pending AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[])) AND superseded_at <= now() - make_interval(secs => $2)
      ORDER BY superseded_at, id LIMIT $3`,
    [opts.ids ?? null, opts.idleSeconds ?? 0, opts.limit ?? 500],
  );
  return rows;
}

export async function markRevoked(db: Db, ids: string[]): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.invitations SET revoke_pending = false WHERE id = ANY($1::uuid[])`, [ids]);
}

export interface InvitationRecord {
  id: string;
  batchId: string;
  line: number;
  tenantId: string;
  accountId: string;
  email: string;
  role: string;
  requiresSetup: boolean;
  /** The token, until it is in Dify's Redis. */
  pendingToken: string;
  revokeOthers: boolean;
  send: boolean;
  /** The link sealed to the operator's key; null for a link only mailed to the person (mailOnly). */
  jwe: string | null;
  /** The person is in other workspaces too: the link is mailed to them, never revealed. */
  mailOnly: boolean;
  ttlSeconds: number;
}

export async function recordInvitations(tx: Tx, records: InvitationRecord[]): Promise<void> {
  if (records.length === 0) return;
  await tx.query(
    `INSERT INTO ${SCHEMA}.invitations
       (id, batch_id, line, tenant_id, account_id, email, role, requires_setup, pending_token, revoke_others, send, jwe, mail_only, ttl_seconds)
     SELECT id, batch_id, line, tenant_id, account_id, email, role, requires_setup, pending_token, revoke_others, send, jwe, mail_only, ttl_seconds
       FROM jsonb_to_recordset($1::jsonb) AS t (id uuid, batch_id text, line int, tenant_id uuid, account_id uuid, email text, role text,
             requires_setup boolean, pending_token text, revoke_others boolean, send boolean, jwe text, mail_only boolean, ttl_seconds int)`,
    [
      JSON.stringify(
        records.map((r) => ({
          id: r.id,
          batch_id: r.batchId,
          line: r.line,
          tenant_id: r.tenantId,
          account_id: r.accountId,
          email: r.email,
          role: r.role,
          requires_setup: r.requiresSetup,
          pending_token: r.pendingToken,
          revoke_others: r.revokeOthers,
          send: r.send,
          jwe: r.jwe,
          mail_only: r.mailOnly,
          ttl_seconds: r.ttlSeconds,
        })),
      ),
    ],
  );
}

/** An invitation committed but not yet in Dify's Redis, with its workspace's name. */
export interface PendingInvitation {
  id: string;
  batch_id: string;
  line: number;
  tenant_id: string;
  workspace_name: string;
  account_id: string;
  email: string;
  role: string;
  requires_setup: boolean;
  pending_token: string;
  revoke_others: boolean;
  send: boolean;
  mail_only: boolean;
}

/** Pending invitations (of one row, or all issued at least `idleSeconds` ago), oldest first. */
export async function pendingInvitations(
  db: Db,
  opts: { batchId?: string; line?: number; idleSeconds?: number; limit?: number },
): Promise<PendingInvitation[]> {
  const { rows } = await db.query<PendingInvitation>(
    `SELECT i.id, i.batch_id, i.line, i.tenant_id, t.name AS workspace_name, i.account_id, i.email, i.role, i.requires_setup,
            i.pending_token, i.revoke_others, i.send, i.mail_only
       FROM ${SCHEMA}.invitations i JOIN tenants t ON t.id = i.tenant_id
      WHERE i.pending_token IS NOT NULL
        AND ($1::text IS NULL OR i.batch_id = $1) AND ($2::int IS NULL OR i.line = $2)
        AND i.issued_at <= now() - make_interval(secs => $3)
      ORDER BY i.issued_at, i.id LIMIT $4`,
    [opts.batchId ?? null, opts.line ?? null, opts.idleSeconds ?? 0, opts.limit ?? 1000],
  );
  return rows;
}

/** Pending → stored (the token leaves our schema); returns the ids this call moved (each once). */
export async function markStored(db: Db, ids: string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ id: string }>(
    `UPDATE ${SCHEMA}.invitations SET pending_token = NULL, stored_at = now() WHERE id = ANY($1::uuid[]) AND pending_token IS NOT NULL RETURNING id`,
    [ids],
  );
  return new Set(rows.map((r) => r.id));
}

/** The invitation a resend replaces: the latest of each person and workspace of the batch. */
export interface CurrentInvitation {
  id: string;
  line: number;
  tenant_id: string;
  account_id: string;
  email: string;
  role: string;
  send: boolean;
  mail_only: boolean;
  /** The account is still pending (it has not activated) and the workspace normal. */
  open: boolean;
  /** The workspace is the person's home (atHome): a link may go with it. */
  home: boolean;
}

/** The batch's current invitations, locked until the caller's transaction ends. */
export async function lockCurrentInvitations(tx: Tx, batchId: string): Promise<CurrentInvitation[]> {
  await lockPeople(tx, batchId);
  const { rows } = await tx.query<CurrentInvitation>(
    `SELECT i.id, i.line, i.tenant_id, i.account_id, a.email, i.role, i.send, i.mail_only,
            (a.status = 'pending' AND t.status = 'normal') AS open, ${atHome('i.account_id', 'i.tenant_id')} AS home
       FROM ${SCHEMA}.invitations i
       JOIN accounts a ON a.id = i.account_id
       JOIN tenants t ON t.id = i.tenant_id
      WHERE i.batch_id = $1 AND i.superseded_at IS NULL
      ORDER BY i.line, i.email
      FOR UPDATE OF i`,
    [batchId],
  );
  return rows;
}

/**
 * The accounts of the batch's current invitations, locked (shared) until the transaction ends:
 * a worker giving one of them a join in another workspace (it locks them FOR UPDATE) waits for
 * this transaction, then finds what it recorded; or this one waits and sees that join.
 */
async function lockPeople(tx: Tx, batchId: string): Promise<void> {
  await tx.query(
    `SELECT 1 FROM accounts WHERE id IN (SELECT account_id FROM ${SCHEMA}.invitations WHERE batch_id = $1 AND superseded_at IS NULL)
      ORDER BY id FOR SHARE`,
    [batchId],
  );
}

/** Replaced by a resend: never stored if it was not yet, never revealed if it was not yet. */
export async function supersede(tx: Tx, ids: string[]): Promise<void> {
  await tx.query(`UPDATE ${SCHEMA}.invitations SET superseded_at = now(), pending_token = NULL, jwe = NULL WHERE id = ANY($1::uuid[])`, [
    ids,
  ]);
}

/** Which of these invitations a resend replaced. */
export async function superseded(db: Db, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM ${SCHEMA}.invitations WHERE id = ANY($1::uuid[]) AND superseded_at IS NOT NULL`,
    [ids],
  );
  return new Set(rows.map((r) => r.id));
}

export interface SealedLink {
  id: string;
  line: number;
  tenant_id: string;
  workspace_name: string;
  email: string;
  role: string;
  jwe: string;
  expires_at: Date;
}

/** The batch's links not yet revealed whose token is in Dify's Redis, locked; and how many wait for it. */
export async function lockUnrevealedLinks(tx: Tx, batchId: string): Promise<{ links: SealedLink[]; waiting: number; total: number }> {
  await lockPeople(tx, batchId);
  // A link whose person joined another workspace since (in Dify's console, say) is not revealed.
  await tx.query(
    `UPDATE ${SCHEMA}.invitations i
        SET superseded_at = now(), pending_token = NULL, jwe = NULL, revoke_pending = true,
            withdrawn = 'not revealed: the person is in another workspace too'
      WHERE i.batch_id = $1 AND i.jwe IS NOT NULL AND i.superseded_at IS NULL AND NOT ${atHome('i.account_id', 'i.tenant_id')}`,
    [batchId],
  );
  const { rows } = await tx.query<SealedLink>(
    `SELECT i.id, i.line, i.tenant_id, t.name AS workspace_name, i.email, i.role, i.jwe,
            i.stored_at + make_interval(secs => i.ttl_seconds) AS expires_at
       FROM ${SCHEMA}.invitations i JOIN tenants t ON t.id = i.tenant_id
      WHERE i.batch_id = $1 AND i.jwe IS NOT NULL AND i.stored_at IS NOT NULL AND i.superseded_at IS NULL
      ORDER BY i.line, i.email
      FOR UPDATE OF i`,
    [batchId],
  );
  const { rows: counts } = await tx.query<{ waiting: number; total: number }>(
    `SELECT count(*) FILTER (WHERE pending_token IS NOT NULL)::int AS waiting, count(*)::int AS total
       FROM ${SCHEMA}.invitations WHERE batch_id = $1`,
    [batchId],
  );
  return { links: rows, ...counts[0]! };
}

export async function markLinksRevealed(tx: Tx, ids: string[]): Promise<void> {
  await tx.query(`UPDATE ${SCHEMA}.invitations SET jwe = NULL, revealed_at = now() WHERE id = ANY($1::uuid[])`, [ids]);
}

/** What became of an invitation's mail: sent, or the reason it was not (never the link or a credential). */
export async function recordMail(db: Db, id: string, outcome: { sent: true } | { sent: false; error: string }): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.invitations SET mailed_at = CASE WHEN $2 THEN now() END, mail_error = $3 WHERE id = $1`, [
    id,
    outcome.sent,
    outcome.sent ? null : outcome.error,
  ]);
}

/**
 * A person removed from a workspace (apply's remove_member), in the removal's transaction: every
 * invitation we issued them for it is superseded, so no sweep stores a token still pending and no
 * link is revealed. Returns the tokens not yet stored (their keys are known) and when the others
 * were stored (a token stored after a scan began is not in that scan).
 */
export const supersedePersonStatement = (tenantId: string, accountId: string): Statement => ({
  text: `WITH before AS (
       SELECT id, pending_token, stored_at FROM ${SCHEMA}.invitations
        WHERE tenant_id = $1::uuid AND account_id = $2::uuid AND superseded_at IS NULL FOR UPDATE
     ), done AS (
       UPDATE ${SCHEMA}.invitations i SET superseded_at = now(), pending_token = NULL, jwe = NULL FROM before b WHERE i.id = b.id
     )
     SELECT pending_token, stored_at FROM before`,
  values: [tenantId, accountId],
});

/** What supersedePersonStatement returns. */
export interface SupersededOfPerson {
  pending_token: string | null;
  stored_at: Date | null;
}

/** A removal's revocation left to the sweep (no Dify Redis here, or it did not answer): in the removal's transaction. */
export const recordRevocationStatement = (row: { batchId: string; line: number }, tenantId: string, accountId: string): Statement => ({
  text: `INSERT INTO ${SCHEMA}.revocations (batch_id, line, tenant_id, account_id) VALUES ($1::text, $2::int, $3::uuid, $4::uuid)`,
  values: [row.batchId, row.line, tenantId, accountId],
});

/** Removals' revocations still to be done (recordRevocationStatement), oldest first. */
export async function revocationsOfRemovalsDue(db: Db, limit: number): Promise<{ id: string; account_id: string; tenant_id: string }[]> {
  const { rows } = await db.query<{ id: string; account_id: string; tenant_id: string }>(
    `SELECT id::text, account_id, tenant_id FROM ${SCHEMA}.revocations WHERE done_at IS NULL ORDER BY recorded_at, id LIMIT $1`,
    [limit],
  );
  return rows;
}

export async function markRemovalsRevoked(db: Db, ids: string[]): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.revocations SET done_at = now() WHERE id = ANY($1::bigint[])`, [ids]);
}

/** The database's clock now: when a scan of Dify's Redis begins, in the clock stored_at is in. */
export async function databaseNow(db: Db): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>(`SELECT clock_timestamp() AS now`);
  return rows[0]!.now;
}

/** A person a batch created who is still pending and has no current invitation of the batch (`invite <batch>`). */
export interface Uninvited {
  line: number;
  tenant_id: string;
  workspace_name: string;
  account_id: string;
  email: string;
  role: string;
  /** The workspace is the person's home (atHome): a link may go with it. */
  home: boolean;
}

/**
 * The people the batch's rows created (in each row's workspace) who are still pending and have no
 * current invitation of the batch, their accounts locked (shared) as lockCurrentInvitations does:
 * a worker giving one of them a join elsewhere waits, or this sees it.
 */
export async function lockUninvited(tx: Tx, batchId: string): Promise<Uninvited[]> {
  // The people are locked first, in a statement of their own: `home` below is then read in a
  // snapshot taken once they are ours. Read in the locking statement itself, it would be the
  // snapshot from before the wait, missing the join in another workspace that a worker (it
  // holds the person FOR UPDATE) was committing meanwhile, and its revocation never sees the
  // invitation made here.
  await tx.query(
    `SELECT 1 FROM accounts WHERE id IN (
       SELECT a.id FROM ${SCHEMA}.rows r
        CROSS JOIN LATERAL unnest(r.created_accounts) AS c (email)
        JOIN accounts a ON lower(a.email) = lower(c.email)
       WHERE r.batch_id = $1 AND r.outcome IN ('created', 'existing'))
      ORDER BY id FOR SHARE`,
    [batchId],
  );
  const { rows } = await tx.query<Uninvited>(
    `SELECT r.line, r.tenant_id, t.name AS workspace_name, a.id AS account_id, a.email, j.role,
            ${atHome('a.id', 'r.tenant_id')} AS home
       FROM ${SCHEMA}.rows r
       CROSS JOIN LATERAL unnest(r.created_accounts) AS c (email)
       JOIN accounts a ON lower(a.email) = lower(c.email)
       JOIN tenant_account_joins j ON j.account_id = a.id AND j.tenant_id = r.tenant_id
       JOIN tenants t ON t.id = r.tenant_id
      WHERE r.batch_id = $1 AND r.outcome IN ('created', 'existing') AND a.status = 'pending' AND t.status = 'normal'
        AND NOT EXISTS (SELECT 1 FROM ${SCHEMA}.invitations i
                         WHERE i.batch_id = $1 AND i.account_id = a.id AND i.tenant_id = r.tenant_id AND i.superseded_at IS NULL)
      ORDER BY r.line, a.email
      FOR SHARE OF a`,
    [batchId],
  );
  return rows;
}
