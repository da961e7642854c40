// A row that looks like a workspace its owner already has in Dify (made in Dify, or by an earlier
// batch under another key): the same owner and workspace name once normalised (same-customer.ts).
// Rows whose key Dify already has through our ledger are not this: they are "existing".
import type { RejectedRow } from '../input/row-checker.js';
import { customerKey, duplicateOfTenant, normalizedEmail } from '../input/same-customer.js';
import type { WorkspaceRow } from '../input/workspace-row.js';
import type { Db, Tx } from '../db/pool.js';
import { difyNormalizedEmailSql } from '../dify/normalized-email.js';
import { SCHEMA } from './schema.js';

/**
 * The rows that look like a workspace their owner has, as rejections by the row's index. With
 * `ledger` (our schema exists), a tenant our ledger made under the row's own key is not one.
 */
export async function sameCustomerInDify(
  db: Db | Tx,
  rows: { line: number; row: WorkspaceRow }[],
  ledger: boolean,
): Promise<Map<number, RejectedRow>> {
  const out = new Map<number, RejectedRow>();
  if (rows.length === 0) return out;
  const { rows: owned } = await db.query<{ email: string; id: string; name: string; key: string | null }>(
    `SELECT a.email, t.id, t.name, ${ledger ? 'l.idempotency_key' : 'NULL'} AS key
       FROM accounts a
       JOIN tenant_account_joins j ON j.account_id = a.id AND j.role = 'owner'
       JOIN tenants t ON t.id = j.tenant_id
       ${ledger ? `LEFT JOIN ${SCHEMA}.ledger l ON l.tenant_id = t.id` : ''}
      WHERE ${difyNormalizedEmailSql('a.email')} = ANY($1::text[])`,
    [[...new Set(rows.map((r) => normalizedEmail(r.row.ownerEmail)))]],
  );
  if (owned.length === 0) return out;
  const byCustomer = new Map<string, typeof owned>();
  for (const t of owned) {
    const k = customerKey(t.email, t.name);
    byCustomer.set(k, [...(byCustomer.get(k) ?? []), t]);
  }
  rows.forEach(({ line, row }, i) => {
    const same = byCustomer.get(customerKey(row.ownerEmail, row.workspaceName)) ?? [];
    // A tenant made under this row's own key (or the id it names) is this row's: "existing".
    if (same.some((t) => t.key === row.key || t.id === row.workspaceId)) return;
    const tenant = same[0];
    if (!tenant) return;
    const raw = { workspaceName: row.workspaceName, ownerEmail: row.ownerEmail, externalId: row.externalId };
    const message = duplicateOfTenant(row.ownerEmail, tenant.name, tenant.id);
    out.set(i, { line, ok: false, raw, errors: [{ field: 'workspace_name', message }] });
  });
  return out;
}
