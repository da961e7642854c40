// What the connected Dify release writes for each change to an existing workspace (shared notes
// dify/NOTES.md, "Lifecycle"), row for row, in the caller's transaction. Like workspace-writer.ts,
// what differs between releases is a table of capabilities read from the schema (schema-probe.ts),
// not conditions scattered in the SQL:
//   - remove_member_from_tenant: from 1.15 the removed person's apps and datasets (`maintainer`
//     columns, where they exist) go to the owner; from 1.13 a still-pending account left with
//     no workspace is deleted;
//   - rename and archive/restore: `tenants.updated_at` is set where Dify's ORM sets it (from 1.10).
// The caller holds the workspace's advisory lock (store/locks.ts lockTenant) and has read the
// workspace with lockWorkspace: every precondition is read here, at the moment of the change.
import type { Db, Statement, Tx } from '../db/pool.js';
import type { MemberRole } from '../common/types.js';
import type { DifySchema } from './schema-probe.js';

/** What a release does beyond the rows every release writes. */
export interface MembershipCapabilities {
  /** Tables whose `maintainer` a removal hands to the owner. */
  maintainers: ('apps' | 'datasets')[];
  /** A pending account left with no join is deleted by a removal (1.13+). */
  deletesPendingAccount: boolean;
  /** tenants.updated_at follows a rename or a status change (ORM onupdate, 1.10+). */
  touchesUpdatedAt: boolean;
  /** tenant_account_joins.last_opened_at exists (1.15+): set on the join an invite switches a new account into. */
  lastOpenedAt: boolean;
}

/**
 * From the schema. The schema cannot tell every release apart: band C starts at 1.11.3, so a
 * 1.11.3–1.12.x Dify gets the 1.13 rule (its removal would leave a pending account without a
 * workspace; ours deletes it: the account could not sign in anywhere), and band B with varchar[]
 * lists ends at 1.10.0, which gets no updated_at (1.10.0 would set it).
 */
export function membershipCapabilities(schema: DifySchema): MembershipCapabilities {
  return {
    maintainers: schema.maintainers,
    deletesPendingAccount: schema.band === 'C' || schema.band === 'D',
    touchesUpdatedAt: schema.band === 'C' || schema.band === 'D' || (schema.band === 'B' && schema.strategyLists === 'json'),
    lastOpenedAt: schema.lastOpenedAt,
  };
}

export interface WorkspaceState {
  id: string;
  name: string;
  /** `normal` or `archive` (anything else as Dify stored it). */
  status: string;
  /** Every join: account id → role. */
  roles: Map<string, string>;
  /** The accounts whose join is `owner` (exactly one in a healthy workspace). */
  owners: string[];
}

/**
 * The workspace and its joins, its `tenants` row and join rows locked until the transaction ends
 * (so Dify's console, which takes no advisory lock, cannot change them under us): a statement to
 * send with the transaction's others (db/pool.ts inlined), its row read by workspaceOf.
 */
export const lockWorkspaceStatement = (tenantId: string): Statement => ({
  text: `SELECT t.id, t.name, t.status,
            (SELECT json_agg(json_build_object('a', j.account_id, 'r', j.role) ORDER BY j.id)
               FROM (SELECT account_id, role, id FROM tenant_account_joins WHERE tenant_id = t.id ORDER BY id FOR UPDATE) j) AS joins
       FROM tenants t WHERE t.id = $1::uuid
       FOR UPDATE OF t`,
  values: [tenantId],
});

/** lockWorkspaceStatement's answer: the workspace, or undefined when no such workspace exists. */
export function workspaceOf(
  rows: { id: string; name: string; status: string; joins: { a: string; r: string }[] | null }[],
): WorkspaceState | undefined {
  const t = rows[0];
  if (!t) return undefined;
  const joins = t.joins ?? [];
  return {
    id: t.id,
    name: t.name,
    status: t.status,
    roles: new Map(joins.map((j) => [j.a, j.r])),
    owners: joins.filter((j) => j.r === 'owner').map((j) => j.a),
  };
}

/** The workspaces with these ids as they are now, without locks (a plan, a sync's difference), with each member's email. */
export async function readWorkspaces(
  db: Db,
  ids: string[],
): Promise<Map<string, WorkspaceState & { members: { accountId: string; email: string; role: string }[] }>> {
  if (ids.length === 0) return new Map();
  const { rows } = await db.query<{ id: string; name: string; status: string; joins: { a: string; e: string; r: string }[] | null }>(
    `SELECT t.id, t.name, t.status,
            (SELECT json_agg(json_build_object('a', j.account_id, 'e', a.email, 'r', j.role) ORDER BY a.email)
               FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.tenant_id = t.id) AS joins
       FROM tenants t WHERE t.id = ANY($1::uuid[])`,
    [ids],
  );
  return new Map(
    rows.map((t) => {
      const joins = t.joins ?? [];
      return [
        t.id,
        {
          id: t.id,
          name: t.name,
          status: t.status,
          roles: new Map(joins.map((j) => [j.a, j.r])),
          owners: joins.filter((j) => j.r === 'owner').map((j) => j.a),
          members: joins.map((j) => ({ accountId: j.a, email: j.e, role: j.r })),
        },
      ];
    }),
  );
}

/** The account's row, locked (a removal may delete it); its status now, or undefined if it is gone. */
export async function lockAccount(tx: Tx, accountId: string): Promise<{ status: string } | undefined> {
  const { rows } = await tx.query<{ status: string }>(`SELECT status FROM accounts WHERE id = $1 FOR UPDATE`, [accountId]);
  return rows[0];
}

/**
 * What the connected release writes for each change, as statements for the workspace's
 * transaction (sent with its others in one round trip: db/pool.ts inlined).
 */
export class MembershipWriter {
  constructor(readonly caps: MembershipCapabilities) {}

  /**
   * create_tenant_member: a join with every other column at its default (`current` false,
   * invited_by NULL); for an account this transaction created as Dify's invite registers one,
   * its switch_tenant marks the join current and (1.15+) opened now, naive UTC, as ingest does.
   */
  addMember(tenantId: string, accountId: string, role: MemberRole, invited: boolean): Statement {
    const opened = this.caps.lastOpenedAt;
    return {
      text: `INSERT INTO tenant_account_joins (tenant_id, account_id, role, current${opened ? ', last_opened_at' : ''})
       VALUES ($1::uuid, $2::uuid, $3::text, $4::boolean${opened ? ", CASE WHEN $4::boolean THEN now() AT TIME ZONE 'UTC' END" : ''})`,
      values: [tenantId, accountId, role, invited],
    };
  }

  /**
   * remove_member_from_tenant: the join goes; the person's apps and datasets go to the owner
   * (where the release has maintainers); a pending account left with no workspace is deleted
   * (1.13+): the last statement returns a row when it was (none on releases that keep it).
   */
  removeMember(tenantId: string, accountId: string, ownerId: string): Statement[] {
    const ids = [tenantId, accountId, ownerId];
    return [
      { text: `DELETE FROM tenant_account_joins WHERE tenant_id = $1::uuid AND account_id = $2::uuid`, values: ids.slice(0, 2) },
      ...this.caps.maintainers.map((table) => ({
        text: `UPDATE ${table} SET maintainer = $3::uuid WHERE tenant_id = $1::uuid AND maintainer = $2::uuid`,
        values: ids,
      })),
      this.caps.deletesPendingAccount
        ? {
            text: `DELETE FROM accounts a WHERE a.id = $1::uuid AND a.status = 'pending'
                AND NOT EXISTS (SELECT 1 FROM tenant_account_joins j WHERE j.account_id = a.id) RETURNING a.id`,
            values: [accountId],
          }
        : { text: `SELECT 1 WHERE false`, values: [] },
    ];
  }

  /** update_member_role: only the role of the join. */
  setRole(tenantId: string, accountId: string, role: MemberRole): Statement {
    return {
      text: `UPDATE tenant_account_joins SET role = $3::text WHERE tenant_id = $1::uuid AND account_id = $2::uuid`,
      values: [tenantId, accountId, role],
    };
  }

  /** Ownership transfer: the old owner's join becomes admin, the new one's owner; nothing else changes. One statement. */
  transferOwner(tenantId: string, oldOwnerId: string, newOwnerId: string): Statement {
    return {
      text: `UPDATE tenant_account_joins SET role = CASE WHEN account_id = $3::uuid THEN 'owner' ELSE 'admin' END
        WHERE tenant_id = $1::uuid AND account_id IN ($2::uuid, $3::uuid)`,
      values: [tenantId, oldOwnerId, newOwnerId],
    };
  }

  /** The console's workspace rename: the name, and updated_at where the ORM sets it. */
  rename(tenantId: string, name: string): Statement {
    return { text: `UPDATE tenants SET name = $2::text${this.touched()} WHERE id = $1::uuid`, values: [tenantId, name] };
  }

  /** Archive (`archive`) or restore (`normal`), and updated_at where the ORM sets it. */
  setStatus(tenantId: string, status: 'archive' | 'normal'): Statement {
    return { text: `UPDATE tenants SET status = $2::text${this.touched()} WHERE id = $1::uuid`, values: [tenantId, status] };
  }

  // Dify's ORM sends CURRENT_TIMESTAMP, cast to the column's naive timestamp as the server does.
  private touched(): string {
    return this.caps.touchesUpdatedAt ? ', updated_at = CURRENT_TIMESTAMP' : '';
  }
}
