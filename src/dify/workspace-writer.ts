// Everything the connected Dify's own TenantService.create_tenant writes for a new workspace, row
// for row (docs/dify.md), plus the members' joins, in the caller's transaction. What is written
// is a table of capabilities per release band (schema-probe.ts), not conditions in the SQL.
import { createHash } from 'node:crypto';
import type { Statement, Tx } from '../db/pool.js';
import type { MemberRole } from '../common/types.js';
import type { DifySchema } from './schema-probe.js';

export interface NewWorkspace {
  tenantId: string;
  name: string;
  plan: string;
  publicPem: string;
  ownerId: string;
  /** `invited`: an account this transaction created for the row, as Dify's invite registers one. */
  members: { accountId: string; role: MemberRole; invited?: boolean }[];
}

export interface WorkspaceWriter {
  readonly schema: DifySchema;
  insertWorkspace(tx: Tx, ws: NewWorkspace): Promise<void>;
  /**
   * insertWorkspace's one statement, to send with others in one round trip (db/pool.ts inlined);
   * a writer without it (a test's) is called through insertWorkspace.
   */
  statement?(ws: NewWorkspace): Statement;
}

/** Band D: category → strategy_setting, as create_tenant seeds plugin auto-upgrade. */
export const AUTO_UPGRADE_CATEGORIES: readonly [string, string][] = [
  ['tool', 'fix_only'],
  ['model', 'latest'],
  ['extension', 'fix_only'],
  ['agent-strategy', 'fix_only'],
  ['datasource', 'fix_only'],
  ['trigger', 'fix_only'],
];

/** Dify's per-tenant upgrade slot (band D): SHA-256(id) → first 8 bytes, big-endian → mod 96 → × 900 s. */
export function upgradeTimeOfDay(tenantId: string): number {
  const digest = createHash('sha256').update(tenantId.toLowerCase()).digest();
  return Number(digest.readBigUInt64BE(0) % 96n) * 900;
}

// Parameters every statement shares: $1 tenant id, $2 name, $3 public key, $4 plan, $5 account
// ids, $6 roles, $7 invited (owner first, then members in order).
const TENANT = `tenant AS (
       INSERT INTO tenants (id, name, encrypt_public_key, plan, status) VALUES ($1, $2, $3, $4, 'normal')
     )`;
// The joins as Dify writes them (docs/dify.md): invited_by NULL (no Dify path writes it) and
// `current` false (create_tenant_member), except the join of an account Dify's invite creates:
// its switch_tenant marks that one current and, from 1.15, opened now (naive UTC, as Dify writes).
const JOINS = (
  lastOpenedAt: boolean,
) => `INSERT INTO tenant_account_joins (tenant_id, account_id, role, current${lastOpenedAt ? ', last_opened_at' : ''})
     SELECT $1, a.account_id, a.role, a.invited${lastOpenedAt ? ", CASE WHEN a.invited THEN now() AT TIME ZONE 'UTC' END" : ''}
       FROM unnest($5::uuid[], $6::text[], $7::boolean[]) WITH ORDINALITY AS a (account_id, role, invited, n)
      ORDER BY a.n`;
// Bands B and C: one row, fix_only at midnight, empty lists ('{}' for varchar[], '[]' for json).
const ONE_STRATEGY = (emptyList: string) => `strategies AS (
       INSERT INTO tenant_plugin_auto_upgrade_strategies
         (tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode, exclude_plugins, include_plugins)
       VALUES ($1, 'fix_only', 0, 'exclude', '${emptyList}', '${emptyList}')
     )`;
// Band D: six rows, one per category, at the tenant's slot.
const STRATEGY_PER_CATEGORY = (categories: string, settings: string, slot: string) => `strategies AS (
       INSERT INTO tenant_plugin_auto_upgrade_strategies
         (tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode, exclude_plugins, include_plugins, category)
       SELECT $1, c.setting, ${slot}, 'exclude', '[]', '[]', c.category
         FROM unnest(${categories}::text[], ${settings}::text[]) AS c (category, setting)
     )`;
// Bands C and D: the trial credit pool (HOSTED_POOL_CREDITS).
const CREDIT_POOL = (credits: string) => `pool AS (
       INSERT INTO tenant_credit_pools (tenant_id, pool_type, quota_limit, quota_used) VALUES ($1, 'trial', ${credits}, 0)
     )`;

/** The one statement (one round trip) that writes a new workspace in this band, and its extra parameters. */
function statementFor(schema: DifySchema, trialCredits: number): { sql: string; extra: (ws: NewWorkspace) => unknown[] } {
  const ctes = [TENANT];
  const extras: ((ws: NewWorkspace) => unknown)[] = [];
  const param = (value: (ws: NewWorkspace) => unknown) => `$${7 + extras.push(value)}`;
  if (schema.strategies === 'one') ctes.push(ONE_STRATEGY(schema.strategyLists === 'array' ? '{}' : '[]'));
  if (schema.strategies === 'per-category') {
    const categories = param(() => AUTO_UPGRADE_CATEGORIES.map((c) => c[0]));
    const settings = param(() => AUTO_UPGRADE_CATEGORIES.map((c) => c[1]));
    ctes.push(
      STRATEGY_PER_CATEGORY(
        categories,
        settings,
        param((ws) => upgradeTimeOfDay(ws.tenantId)),
      ),
    );
  }
  if (schema.creditPool) ctes.push(CREDIT_POOL(param(() => trialCredits)));
  return { sql: `WITH ${ctes.join(', ')}\n     ${JOINS(schema.lastOpenedAt)}`, extra: (ws) => extras.map((f) => f(ws)) };
}

export function workspaceWriter(schema: DifySchema, trialCredits: number): WorkspaceWriter {
  const { sql, extra } = statementFor(schema, trialCredits);
  const statement = (ws: NewWorkspace): Statement => {
    const accounts = [{ accountId: ws.ownerId, role: 'owner' as const, invited: false }, ...ws.members];
    return {
      text: sql,
      values: [
        ws.tenantId,
        ws.name,
        ws.publicPem,
        ws.plan,
        accounts.map((a) => a.accountId),
        accounts.map((a) => a.role),
        accounts.map((a) => a.invited ?? false),
        ...extra(ws),
      ],
    };
  };
  return {
    schema,
    async insertWorkspace(tx, ws) {
      const s = statement(ws);
      await tx.query(s.text, s.values);
    },
    statement,
  };
}
