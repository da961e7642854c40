// The invitations we issued: every statement on dify_provision.invitations. A link is kept only
// sealed (dropped once revealed); a token in the clear only from the commit that records it to
// its SETEX in Dify's Redis (markStored clears it).
import type { Db, Tx } from '../db/pool.js';
import { SCHEMA } from './schema.js';

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
  /** The link sealed to the operator's key. */
  jwe: string;
  ttlSeconds: number;
}

export async function recordInvitations(tx: Tx, records: InvitationRecord[]): Promise<void> {
  if (records.length === 0) return;
  await tx.query(
    `INSERT INTO ${SCHEMA}.invitations
       (id, batch_id, line, tenant_id, account_id, email, role, requires_setup, pending_token, revoke_others, send, jwe, ttl_seconds)
     SELECT id, batch_id, line, tenant_id, account_id, email, role, requires_setup, pending_token, revoke_others, send, jwe, ttl_seconds
       FROM jsonb_to_recordset($1::jsonb) AS t (id uuid, batch_id text, line int, tenant_id uuid, account_id uuid, email text, role text,
             requires_setup boolean, pending_token text, revoke_others boolean, send boolean, jwe text, ttl_seconds int)`,
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
}

/** Pending invitations (of one row, or all issued at least `idleSeconds` ago), oldest first. */
export async function pendingInvitations(
  db: Db,
  opts: { batchId?: string; line?: number; idleSeconds?: number; limit?: number },
): Promise<PendingInvitation[]> {
  const { rows } = await db.query<PendingInvitation>(
    `SELECT i.id, i.batch_id, i.line, i.tenant_id, t.name AS workspace_name, i.account_id, i.email, i.role, i.requires_setup,
            i.pending_token, i.revoke_others, i.send
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
  /** The account is still pending (it has not activated) and the workspace normal. */
  open: boolean;
}

/** The batch's current invitations, locked until the caller's transaction ends. */
export async function lockCurrentInvitations(tx: Tx, batchId: string): Promise<CurrentInvitation[]> {
  const { rows } = await tx.query<CurrentInvitation>(
    `SELECT i.id, i.line, i.tenant_id, i.account_id, a.email, i.role, i.send,
            (a.status = 'pending' AND t.status = 'normal') AS open
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
 * A person removed from a workspace (apply's remove_member): every invitation we issued them for
 * it is superseded, so no sweep stores a token still pending and no link is revealed. Returns how many.
 */
export async function supersedePerson(tx: Tx, tenantId: string, accountId: string): Promise<number> {
  const { rowCount } = await tx.query(
    `UPDATE ${SCHEMA}.invitations SET superseded_at = now(), pending_token = NULL, jwe = NULL
      WHERE tenant_id = $1 AND account_id = $2 AND superseded_at IS NULL`,
    [tenantId, accountId],
  );
  return rowCount ?? 0;
}
