// Everything the connected Dify's own TenantService.create_tenant writes for a new workspace, row
// for row (docs/dify.md), plus the members' joins, in the caller's transaction. What is written
// is a table of capabilities per release band (schema-probe.ts), handed to our function
// (store/schema.ts create_workspace_v1) as the branches it takes.
import { createHash } from 'node:crypto';
import type { Statement, Tx } from '../db/pool.js';
import type { MemberRole } from '../common/types.js';
import type { DifySchema } from './schema-probe.js';
import { CREATE_WORKSPACE_CALL } from '../store/schema.js';

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

/**
 * What create_tenant writes in this band, as the branches of our function (store/schema.ts
 * create_workspace_v1: planned once per connection; planned afresh, this statement cost
 * PostgreSQL more CPU than running it): bands B and C one strategy row (fix_only at midnight,
 * empty lists as '{}' for varchar[] or '[]' for json), band D one per category at the tenant's
 * slot; bands C and D the trial credit pool (HOSTED_POOL_CREDITS); from 1.15 the join of an
 * account Dify's invite creates is opened now. The joins as Dify writes them (docs/dify.md):
 * invited_by NULL (no Dify path writes it) and `current` false (create_tenant_member), except
 * that join: its switch_tenant marks it current.
 */
function branchesFor(schema: DifySchema, trialCredits: number): (ws: NewWorkspace) => unknown[] {
  const strategies = schema.strategies === 'one' ? (schema.strategyLists === 'array' ? 'one-array' : 'one-json') : schema.strategies;
  const perCategory = schema.strategies === 'per-category';
  // The same for every workspace of the band: built once.
  const categories = perCategory ? AUTO_UPGRADE_CATEGORIES.map((c) => c[0]) : null;
  const settings = perCategory ? AUTO_UPGRADE_CATEGORIES.map((c) => c[1]) : null;
  return (ws) => [
    strategies,
    categories,
    settings,
    perCategory ? upgradeTimeOfDay(ws.tenantId) : null,
    schema.creditPool ? trialCredits : null,
    schema.lastOpenedAt,
  ];
}

export function workspaceWriter(schema: DifySchema, trialCredits: number): WorkspaceWriter {
  const branches = branchesFor(schema, trialCredits);
  const statement = (ws: NewWorkspace): Statement => {
    const accounts = [{ accountId: ws.ownerId, role: 'owner' as const, invited: false }, ...ws.members];
    return {
      text: CREATE_WORKSPACE_CALL,
      values: [
        ws.tenantId,
        ws.name,
        ws.publicPem,
        ws.plan,
        accounts.map((a) => a.accountId),
        accounts.map((a) => a.role),
        accounts.map((a) => a.invited ?? false),
        ...branches(ws),
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
