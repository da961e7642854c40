// Before the first job: is this database Dify's, and does it keep tenant keys as local PEMs?
import type { Db } from '../db/pool.js';
import { PreflightError } from '../errors.js';

const REQUIRED: Record<string, string[]> = {
  accounts: ['id', 'email', 'status'],
  tenants: ['id', 'name', 'encrypt_public_key', 'plan', 'status'],
  tenant_account_joins: ['tenant_id', 'account_id', 'role', 'invited_by', 'current'],
  tenant_plugin_auto_upgrade_strategies: ['tenant_id', 'strategy_setting', 'upgrade_time_of_day', 'upgrade_mode', 'exclude_plugins', 'include_plugins', 'category'],
  tenant_credit_pools: ['tenant_id', 'pool_type', 'quota_limit', 'quota_used'],
};

export async function checkDifyDatabase(db: Db): Promise<void> {
  const { rows } = await db.query<{ table_name: string; column_name: string }>(
    `SELECT table_name, column_name FROM information_schema.columns
      WHERE table_schema = current_schema() AND table_name = ANY($1)`,
    [Object.keys(REQUIRED)],
  );
  const have = new Set(rows.map((r) => `${r.table_name}.${r.column_name}`));
  const missing = Object.entries(REQUIRED).flatMap(([t, cols]) => cols.filter((c) => !have.has(`${t}.${c}`)).map((c) => `${t}.${c}`));
  if (missing.length > 0) {
    throw new PreflightError(
      `this database does not look like Dify's (missing ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', …' : ''}): ` +
        `point DATABASE_URL at Dify's PostgreSQL database, migrated to a current version`,
    );
  }
  const { rows: vault } = await db.query<{ id: string }>(
    `SELECT id FROM tenants
      WHERE encrypt_public_key IS NOT NULL AND encrypt_public_key NOT LIKE '-----BEGIN PUBLIC KEY-----%'
      LIMIT 1`,
  );
  if (vault.length > 0) {
    throw new PreflightError(
      `tenant ${vault[0]!.id} has an encrypt_public_key that is not a PEM: this Dify keeps tenant keys in a key vault ` +
        `(KEY_PROVIDER_TYPE other than "local"), which dify-provision does not support`,
    );
  }
}
