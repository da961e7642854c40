// Everything Dify's own TenantService.create_tenant writes for a new workspace, row for row
// (see docs/dify.md), plus the members' joins. Runs inside the caller's transaction.
import { createHash } from 'node:crypto';
import type { Tx } from '../db/pool.js';
import type { MemberRole } from '../types.js';

export interface NewWorkspace {
  tenantId: string;
  name: string;
  plan: string;
  publicPem: string;
  ownerId: string;
  members: { accountId: string; role: MemberRole }[];
  trialCredits: number;
}

/** Category → strategy_setting, as create_tenant seeds plugin auto-upgrade. */
export const AUTO_UPGRADE_CATEGORIES: readonly [string, string][] = [
  ['tool', 'fix_only'],
  ['model', 'latest'],
  ['extension', 'fix_only'],
  ['agent-strategy', 'fix_only'],
  ['datasource', 'fix_only'],
  ['trigger', 'fix_only'],
];

/** Dify's per-tenant upgrade slot: SHA-256(id) → first 8 bytes, big-endian → mod 96 → × 900 s. */
export function upgradeTimeOfDay(tenantId: string): number {
  const digest = createHash('sha256').update(tenantId.toLowerCase()).digest();
  return Number(digest.readBigUInt64BE(0) % 96n) * 900;
}

/**
 * One statement, one round trip: the tenant, its six auto-upgrade strategies, its trial credit
 * pool and its joins. The caller has locked the accounts (lockAccounts) in an earlier statement,
 * so this statement's snapshot sees every join committed before: an account's first workspace
 * opens as "current", later ones don't.
 */
export async function insertWorkspace(tx: Tx, ws: NewWorkspace): Promise<void> {
  const accounts = [{ accountId: ws.ownerId, role: 'owner' as const }, ...ws.members];
  await tx.query(
    `WITH tenant AS (
       INSERT INTO tenants (id, name, encrypt_public_key, plan, status)
       VALUES ($1, $2, $3, $4, 'normal')
     ), strategies AS (
       INSERT INTO tenant_plugin_auto_upgrade_strategies
         (tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode, exclude_plugins, include_plugins, category)
       SELECT $1, c.setting, $5, 'exclude', '[]', '[]', c.category
         FROM unnest($6::text[], $7::text[]) AS c (category, setting)
     ), pool AS (
       INSERT INTO tenant_credit_pools (tenant_id, pool_type, quota_limit, quota_used)
       VALUES ($1, 'trial', $8, 0)
     )
     INSERT INTO tenant_account_joins (tenant_id, account_id, role, invited_by, current)
     SELECT $1, a.account_id, a.role, CASE WHEN a.role = 'owner' THEN NULL ELSE $9::uuid END,
            NOT EXISTS (SELECT 1 FROM tenant_account_joins j WHERE j.account_id = a.account_id)
       FROM unnest($10::uuid[], $11::text[]) WITH ORDINALITY AS a (account_id, role, n)
      ORDER BY a.n`,
    [
      ws.tenantId,
      ws.name,
      ws.publicPem,
      ws.plan,
      upgradeTimeOfDay(ws.tenantId),
      AUTO_UPGRADE_CATEGORIES.map((c) => c[0]),
      AUTO_UPGRADE_CATEGORIES.map((c) => c[1]),
      ws.trialCredits,
      ws.ownerId,
      accounts.map((a) => a.accountId),
      accounts.map((a) => a.role),
    ],
  );
}
