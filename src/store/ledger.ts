// The idempotency ledger: one row per idempotency key that ever made a tenant. It is what makes
// a re-ingest, a retry or a job run twice answer "existing" instead of creating again.
import type { Db, Statement, Tx } from '../db/pool.js';
import { RowError } from '../common/errors.js';
import { SCHEMA } from './schema.js';

export interface LedgerEntry {
  tenantId: string;
  fingerprint: string;
}

/** A ledger entry with what its key was first asked for: the row that made it, and whether the tenant still exists. */
export interface KnownEntry extends LedgerEntry {
  batchId: string;
  line: number;
  /** The owner and workspace name recorded for that row (absent if the row is gone). */
  ownerEmail?: string;
  workspaceName?: string;
  /** The tenant still exists in Dify (it may have been deleted there). */
  alive: boolean;
  /** What Dify says now: the workspace's name and its owner's email (changed by `apply`, or in Dify). */
  currentName?: string;
  currentOwner?: string;
}

/** Selected by KNOWN_COLUMNS, read by knownOf. */
export interface KnownColumns {
  tenant_id: string | null;
  fingerprint: string | null;
  known_batch: string | null;
  known_line: number | null;
  known_owner: string | null;
  known_name: string | null;
  known_alive: boolean | null;
  current_name: string | null;
  current_owner: string | null;
}

/** The ledger entry of the key in `keyParam`, with its recorded row and tenant: joined in a caller's statement (no extra round trip). */
export const knownJoin = (keyParam: string) =>
  `LEFT JOIN ${SCHEMA}.ledger l ON l.idempotency_key = ${keyParam}
   LEFT JOIN ${SCHEMA}.rows k ON k.batch_id = l.batch_id AND k.line = l.line`;
export const KNOWN_COLUMNS = `l.tenant_id, l.fingerprint, l.batch_id AS known_batch, l.line AS known_line,
  k.owner_email AS known_owner, k.workspace_name AS known_name,
  EXISTS (SELECT 1 FROM tenants t WHERE t.id = l.tenant_id) AS known_alive,
  (SELECT t.name FROM tenants t WHERE t.id = l.tenant_id) AS current_name,
  (SELECT a.email FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id
    WHERE j.tenant_id = l.tenant_id AND j.role = 'owner' ORDER BY j.created_at LIMIT 1) AS current_owner`;

export function knownOf(r: KnownColumns): KnownEntry | undefined {
  if (!r.tenant_id) return undefined;
  return {
    tenantId: r.tenant_id,
    fingerprint: r.fingerprint!,
    batchId: r.known_batch!,
    line: r.known_line!,
    ...(r.known_owner !== null ? { ownerEmail: r.known_owner } : {}),
    ...(r.known_name !== null ? { workspaceName: r.known_name } : {}),
    alive: r.known_alive === true,
    ...(r.current_name !== null && r.current_name !== undefined ? { currentName: r.current_name } : {}),
    ...(r.current_owner !== null && r.current_owner !== undefined ? { currentOwner: r.current_owner } : {}),
  };
}

const same = (a: string, b: string) => a.normalize('NFC') === b.normalize('NFC');

/**
 * What a row whose key the ledger knows is answered: `existing` with the recorded tenant only if
 * that tenant still exists and the row asks for the same owner and workspace name as the row
 * that made it. A reused external_id (another customer's) or a workspace deleted in Dify fails
 * the row, naming the recorded line, batch and tenant: answering `existing` would hand out
 * another workspace, or one that is gone. A name or owner that Dify's workspace has now (an
 * `apply` rename or transfer_owner) is the same customer's.
 */
export function answerKnown(row: { ownerEmail: string; workspaceName: string; externalId?: string }, known: KnownEntry): LedgerEntry {
  const where = `tenant ${known.tenantId}, made for line ${known.line} of batch "${known.batchId}"`;
  // The row that made it, or the workspace as Dify has it now: after an `apply` rename or
  // transfer_owner, a file with the new name or owner is the same customer.
  const sameEmail = (a?: string) => a !== undefined && same(a.toLowerCase(), row.ownerEmail.toLowerCase());
  const sameOwner = known.ownerEmail === undefined || sameEmail(known.ownerEmail) || sameEmail(known.currentOwner);
  const sameName =
    known.workspaceName === undefined ||
    same(known.workspaceName, row.workspaceName) ||
    (known.currentName !== undefined && same(known.currentName, row.workspaceName));
  if (!sameOwner || !sameName) {
    const what = row.externalId !== undefined ? `external_id "${row.externalId}"` : 'this key';
    throw new RowError(
      row.externalId !== undefined ? 'external_id' : 'workspace_name',
      `${what} belongs to ${where}, with another ${sameOwner ? 'workspace name' : sameName ? 'owner' : 'owner and workspace name'}: nothing was created. ` +
        changeAdvice(row, known, { name: sameName, owner: sameOwner }),
    );
  }
  if (!known.alive) {
    throw new RowError(
      'workspace_id',
      `this row's workspace was made before (${where}) and has since been deleted from Dify: nothing was created. ` +
        `To create it again, forget the old one (DELETE FROM ${SCHEMA}.ledger WHERE tenant_id = '${known.tenantId}') and \`retry\``,
    );
  }
  return { tenantId: known.tenantId, fingerprint: known.fingerprint };
}

/**
 * What a row that names a known workspace with another name or owner needs: a change of that
 * workspace (`apply`: rename, transfer_owner), not a new external_id (which would make a second
 * workspace for the same customer). A new external_id only if the row is another customer.
 */
function changeAdvice(
  row: { ownerEmail: string; workspaceName: string; externalId?: string },
  known: KnownEntry,
  same: { name: boolean; owner: boolean },
): string {
  const target = row.externalId !== undefined ? `external_id=${row.externalId}` : `workspace_id=${known.tenantId}`;
  const rows = [
    ...(same.name ? [] : [`action=rename, ${target}, name=${row.workspaceName}`]),
    ...(same.owner ? [] : [`action=transfer_owner, ${target}, email=${row.ownerEmail} (after an add_member row if they are not a member)`]),
  ];
  return (
    `If it is the same customer, change that workspace instead: \`dify-provision apply\` with the row${rows.length > 1 ? 's' : ''} ` +
    `${rows.join('; ')} (docs/changes.md), then \`retry\` this batch; only another customer needs an external_id of its own`
  );
}

export async function findLedgerEntry(db: Db | Tx, key: string): Promise<LedgerEntry | undefined> {
  const { rows } = await db.query<{ tenant_id: string; fingerprint: string }>(
    `SELECT tenant_id, fingerprint FROM ${SCHEMA}.ledger WHERE idempotency_key = $1`,
    [key],
  );
  const hit = rows[0];
  return hit ? { tenantId: hit.tenant_id, fingerprint: hit.fingerprint } : undefined;
}

/**
 * In the workspace's transaction, after its advisory locks: the ledger entry (a duplicate may
 * have committed while we waited), whether the tenant id is taken, and row locks on the accounts
 * that will join, taken in id order; `lockedAccounts` says how many of them still exist.
 */
export async function checkLocked(tx: Tx, key: string, tenantId: string, accountIds: string[]): Promise<LockedCheck> {
  const s = checkLockedStatement(key, tenantId, accountIds);
  const { rows } = await tx.query<CheckedColumns>(s.text, s.values);
  return checkedOf(rows[0]!);
}

export interface LockedCheck {
  known?: KnownEntry;
  tenantTaken: boolean;
  lockedAccounts: number;
}

/** What checkLockedStatement's one row holds (read by checkedOf). */
export type CheckedColumns = KnownColumns & { tenant_taken: boolean; locked: number };

/**
 * checkLocked as a statement, to send right behind the locks in one round trip (db/pool.ts
 * inlined): the known columns (KNOWN_COLUMNS), whether the tenant id is taken, and the row's
 * accounts locked FOR UPDATE in id order, counted. It calls our function check_locked_v1
 * (store/schema.ts), which each connection plans once, instead of planning the query each time.
 */
export const checkLockedStatement = (key: string, tenantId: string, accountIds: string[]): Statement => ({
  text: `SELECT * FROM ${SCHEMA}.check_locked_v1($1::text, $2::uuid, $3::uuid[])`,
  values: [key, tenantId, accountIds],
});

export function checkedOf(r: CheckedColumns): LockedCheck {
  const known = knownOf(r);
  return { tenantTaken: r.tenant_taken, lockedAccounts: r.locked, ...(known ? { known } : {}) };
}

/** The ledger entries of these keys (read-only; empty before our schema exists). */
export async function knownEntries(db: Db, keys: string[]): Promise<Map<string, KnownEntry>> {
  const { rows: has } = await db.query(`SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'ledger'`, [
    SCHEMA,
  ]);
  if (has.length === 0) return new Map();
  const { rows } = await db.query<KnownColumns & { key: string }>(
    `SELECT l.idempotency_key AS key, ${KNOWN_COLUMNS}
       FROM unnest($1::text[]) AS wanted (key)
       ${knownJoin('wanted.key')}
      WHERE l.tenant_id IS NOT NULL`,
    [keys],
  );
  return new Map(rows.map((r) => [r.key, knownOf(r)!]));
}

/** Ledger rows whose tenant no longer exists (deleted by hand, say). */
export async function ledgerWithoutTenant(db: Db): Promise<{ tenant_id: string; idempotency_key: string }[]> {
  const { rows } = await db
    .query<{ tenant_id: string; idempotency_key: string }>(
      `SELECT l.tenant_id, l.idempotency_key FROM ${SCHEMA}.ledger l LEFT JOIN tenants t ON t.id = l.tenant_id WHERE t.id IS NULL`,
    )
    .catch(() => ({ rows: [] as { tenant_id: string; idempotency_key: string }[] }));
  return rows;
}

/** Whether our schema's ledger exists yet (a plan may run against a Dify we never wrote to). */
export async function ledgerExists(db: Db | Tx): Promise<boolean> {
  const { rows } = await db.query<{ has: boolean }>(`SELECT to_regclass('${SCHEMA}.ledger') IS NOT NULL AS has`);
  return rows[0]!.has;
}

/** The workspace our ledger recorded for an external_id (ingest's key for it), if any. */
export async function tenantOfExternalId(db: Db | Tx, externalId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ tenant_id: string }>(`SELECT tenant_id FROM ${SCHEMA}.ledger WHERE idempotency_key = $1`, [
    `external:${externalId}`,
  ]);
  return rows[0]?.tenant_id;
}

/** The workspaces our ledger recorded for these external_ids (read-only; empty before our schema exists). */
export async function tenantsOfExternalIds(db: Db, externalIds: string[]): Promise<Map<string, string>> {
  if (externalIds.length === 0 || !(await ledgerExists(db))) return new Map();
  const { rows } = await db.query<{ key: string; tenant_id: string }>(
    `SELECT idempotency_key AS key, tenant_id FROM ${SCHEMA}.ledger WHERE idempotency_key = ANY($1::text[])`,
    [externalIds.map((e) => `external:${e}`)],
  );
  return new Map(rows.map((r) => [r.key.slice('external:'.length), r.tenant_id]));
}

/**
 * Of these workspaces, the ones our ledger recorded as created by a row of one of these batches
 * (apply --within: a customer's changes act only on their own workspaces). Read-only; none
 * before our schema exists.
 */
export async function tenantsOfBatches(db: Db | Tx, tenantIds: string[], batchIds: string[]): Promise<Set<string>> {
  if (tenantIds.length === 0 || batchIds.length === 0 || !(await ledgerExists(db))) return new Set();
  const { rows } = await db.query<{ tenant_id: string }>(
    `SELECT tenant_id::text AS tenant_id FROM ${SCHEMA}.ledger WHERE tenant_id::text = ANY($1::text[]) AND batch_id = ANY($2::text[])`,
    [tenantIds, batchIds],
  );
  return new Set(rows.map((r) => r.tenant_id));
}
