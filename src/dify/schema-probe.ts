// Which Dify is this? The release band is read from the schema, not from alembic_version (forks
// and hotfix branches carry their own revisions): ../../docs/dify.md, "Telling the bands apart".
// Done once at worker start and by every command that writes or checks Dify's rows.
import type { Db } from '../db/pool.js';
import { PreflightError } from '../common/errors.js';
import { detectScoping, type Scoping } from './api-keys.js';

export type Band = 'A' | 'B' | 'C' | 'D';

export interface DifySchema {
  band: Band;
  /** The Dify releases that write this, e.g. "1.11.3 – 1.14.2". */
  releases: string;
  /** What create_tenant writes there, in a few words. */
  writes: string;
  strategies: 'none' | 'one' | 'per-category';
  /** How the strategy rows hold their plugin lists (bands B–D). */
  strategyLists: 'array' | 'json' | null;
  creditPool: boolean;
  /** How dataset API keys are scoped to knowledge bases. */
  scoping: Scoping;
  /** api_tokens has tenant_id (dataset keys can be minted). */
  apiTokens: boolean;
  /** accounts.normalized_email (later main): filled for accounts we create, and used to find people. */
  normalizedEmail: boolean;
  /** tenant_account_joins.last_opened_at (1.15+): set on the join Dify's invite switches a new account into. */
  lastOpenedAt: boolean;
  /** Tables with a `maintainer` column (RBAC maintainers, 1.15+): a removed member's are handed to the owner. */
  maintainers: ('apps' | 'datasets')[];
}

export const SUPPORTED_RELEASES = 'Dify 0.15.0 to 1.16.x and later main (bands A–D)';

/** One line for logs, status, doctor and plans. */
export const describeSchema = (s: DifySchema) => `Dify schema: ${s.releases} (${s.writes})`;

const BASE: Record<string, string[]> = {
  accounts: ['id', 'email', 'status'],
  tenants: ['id', 'name', 'encrypt_public_key', 'plan', 'status'],
  tenant_account_joins: ['tenant_id', 'account_id', 'role', 'invited_by', 'current'],
};
const STRATEGY_COLUMNS = ['tenant_id', 'strategy_setting', 'upgrade_time_of_day', 'upgrade_mode', 'exclude_plugins', 'include_plugins'];
const POOL_COLUMNS = ['tenant_id', 'pool_type', 'quota_limit', 'quota_used'];

export async function probeDifySchema(db: Db): Promise<DifySchema> {
  const { rows } = await db.query<{ table_name: string; column_name: string; data_type: string }>(
    `SELECT table_name, column_name, data_type FROM information_schema.columns
      WHERE table_schema = current_schema()
        AND table_name = ANY($1)`,
    [[...Object.keys(BASE), 'tenant_plugin_auto_upgrade_strategies', 'tenant_credit_pools', 'api_tokens', 'apps', 'datasets']],
  );
  const type = new Map(rows.map((r) => [`${r.table_name}.${r.column_name}`, r.data_type]));
  const missing = Object.entries(BASE).flatMap(([t, cols]) => cols.filter((c) => !type.has(`${t}.${c}`)).map((c) => `${t}.${c}`));
  if (missing.length > 0) {
    throw new PreflightError(
      `this database does not look like Dify's (missing ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', …' : ''}): ` +
        `point DATABASE_URL at Dify's PostgreSQL database (${SUPPORTED_RELEASES} are supported)`,
    );
  }
  const hasTable = (t: string) => [...type.keys()].some((k) => k.startsWith(`${t}.`));
  const need = (table: string, cols: string[], what: string) => {
    const gone = cols.filter((c) => !type.has(`${table}.${c}`));
    if (gone.length > 0) throw unknownSchema(`${what} but ${table} lacks ${gone.join(', ')}`);
  };
  const strategiesTable = hasTable('tenant_plugin_auto_upgrade_strategies');
  const creditPool = hasTable('tenant_credit_pools');
  const category = type.has('tenant_plugin_auto_upgrade_strategies.category');
  const listType = type.get('tenant_plugin_auto_upgrade_strategies.exclude_plugins');
  const strategyLists =
    listType === undefined ? null : listType === 'ARRAY' ? 'array' : listType === 'json' || listType === 'jsonb' ? 'json' : undefined;
  if (strategiesTable) need('tenant_plugin_auto_upgrade_strategies', STRATEGY_COLUMNS, 'a plugin auto-upgrade strategy table');
  if (creditPool) need('tenant_credit_pools', POOL_COLUMNS, 'a credit pool table');
  if (strategyLists === undefined) throw unknownSchema(`tenant_plugin_auto_upgrade_strategies.exclude_plugins is of type ${listType}`);

  let band: Pick<DifySchema, 'band' | 'releases' | 'writes' | 'strategies'>;
  if (!strategiesTable) {
    if (creditPool) throw unknownSchema('tenant_credit_pools exists but tenant_plugin_auto_upgrade_strategies does not');
    band = { band: 'A', releases: '0.15.0 – 1.6.0', writes: 'the tenant and its joins only', strategies: 'none' };
  } else if (!category) {
    if (creditPool && strategyLists === 'array')
      throw unknownSchema('a credit pool table, but strategy lists are varchar[] (no release has both)');
    band = creditPool
      ? { band: 'C', releases: '1.11.3 – 1.14.2', writes: 'one auto-upgrade strategy row, trial credit pool', strategies: 'one' }
      : strategyLists === 'array'
        ? { band: 'B', releases: '1.7.0 – 1.10.0', writes: 'one auto-upgrade strategy row, varchar[] lists', strategies: 'one' }
        : { band: 'B', releases: '1.10.1 – 1.11.2', writes: 'one auto-upgrade strategy row, json lists', strategies: 'one' };
  } else {
    if (!creditPool) throw unknownSchema('tenant_plugin_auto_upgrade_strategies has a category column but there is no tenant_credit_pools');
    if (strategyLists !== 'json') throw unknownSchema('a category column, but strategy lists are not json');
    band = {
      band: 'D',
      releases: '1.15.0 and later',
      writes: 'six auto-upgrade strategy rows, trial credit pool',
      strategies: 'per-category',
    };
  }
  await refuseKeyVault(db);
  return {
    ...band,
    strategyLists,
    creditPool,
    scoping: await detectScoping(db),
    apiTokens: type.has('api_tokens.tenant_id'),
    normalizedEmail: type.has('accounts.normalized_email'),
    lastOpenedAt: type.has('tenant_account_joins.last_opened_at'),
    maintainers: (['apps', 'datasets'] as const).filter((t) => type.has(`${t}.maintainer`)),
  };
}

function unknownSchema(found: string): PreflightError {
  return new PreflightError(
    `this Dify schema is not one dify-provision knows (${found}): ${SUPPORTED_RELEASES} are supported; nothing was written`,
  );
}

/** Tenant keys in a cloud key vault (KEY_PROVIDER_TYPE other than local) are not supported. */
async function refuseKeyVault(db: Db): Promise<void> {
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
