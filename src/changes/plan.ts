// The dry run of a changes file, like `terraform plan`: what applying it would do, read from
// PostgreSQL without writing (no migration, no lock, no Redis). Each row goes through the same
// decide() the worker runs, on the workspaces as they are now, in line order, each row seeing the
// effect of the rows before it (an add_member, then the transfer_owner to that person).
import type { Db } from '../db/pool.js';
import { findAccounts, personKey, type AccountRules } from '../dify/accounts.js';
import { readWorkspaces, type WorkspaceState } from '../dify/membership.js';
import { tenantsOfExternalIds } from '../store/ledger.js';
import { findPreclaimed, preclaimGuardInstalled, refusePreclaimed } from '../store/invitations.js';
import { RowError } from '../common/errors.js';
import { generatedBatchId } from '../common/types.js';
import type { Account } from '../common/types.js';
import type { CheckedChange, ChangeRow } from './change-row.js';
import { CHANGE_KINDS, decide, type ChangeKind } from './decide.js';

export interface PlanProblem {
  line: number;
  field: string;
  message: string;
}

/** What a row would get. */
export type ChangeVerdict = ChangeKind | 'unchanged' | 'rejected' | 'refused';

export interface ChangePlanRow {
  line: number;
  action: string | null;
  verdict: ChangeVerdict;
  /** The workspace it names, when known. */
  tenantId: string | null;
  /** The external_id the row named its workspace by, if it did. */
  externalId: string | null;
  email: string | null;
  /** Why it is unchanged, refused or rejected. */
  note: string | null;
}

export interface ChangePlan {
  total: number;
  /** Rows that would change something, by what they change. */
  wouldApply: Record<ChangeKind, number>;
  /** Rows whose change Dify already shows. */
  unchanged: number;
  /** Invalid rows (line and field): apply records them rejected. */
  rejected: number;
  /** Valid rows Dify's rules would refuse now (unknown workspace or person, the owner, an archived workspace). */
  refused: number;
  problems: PlanProblem[];
  /** With `listRows`: the first rows read (that many at most), each with its verdict. */
  rows?: ChangePlanRow[];
}

export interface PlanChangesOptions {
  accounts: AccountRules;
  /** What --create-missing-owners would let add_member create. */
  createMissingAccounts?: boolean;
  chunkSize?: number;
  listRows?: number;
  /** The change batch the rows would be applied as (--batch-id; none: a new one, as apply makes). */
  batchId?: string;
  /** --trust-account: addresses the pre-claim guard lets through (ignoring case). */
  trustAccounts?: readonly string[];
  /** Hears every row with its verdict as it is decided (rejected rows as read, valid ones a chunk later). */
  onRow?: (row: ChangePlanRow) => void;
}

/** "would add 12, remove 3, re-role 2, transfer 1, rename 1, archive 1; 4 unchanged; 2 refused". */
export function describePlan(p: ChangePlan): string {
  const changes = CHANGE_KINDS.filter((k) => p.wouldApply[k] > 0).map((k) => `${k} ${p.wouldApply[k]}`);
  const parts = [changes.length > 0 ? `would ${changes.join(', ')}` : 'would change nothing'];
  if (p.unchanged > 0) parts.push(`${p.unchanged} unchanged`);
  if (p.refused + p.rejected > 0) parts.push(`${p.refused + p.rejected} refused`);
  return parts.join('; ');
}

export async function planChanges(rows: AsyncIterable<CheckedChange>, db: Db, opts: PlanChangesOptions): Promise<ChangePlan> {
  const plan: ChangePlan = {
    total: 0,
    wouldApply: Object.fromEntries(CHANGE_KINDS.map((k) => [k, 0])) as Record<ChangeKind, number>,
    unchanged: 0,
    rejected: 0,
    refused: 0,
    problems: [],
    ...(opts.listRows !== undefined ? { rows: [] } : {}),
  };
  const state = new PlanState(db, opts.accounts);
  // The worker's pre-claim guard (apply-change.ts) for an existing account an add_member joins or a
  // transfer_owner makes owner: refused in its words unless trusted (none without our function:
  // a database not migrated to this release).
  const batchId = (await preclaimGuardInstalled(db)) ? (opts.batchId ?? generatedBatchId('changes')) : undefined;
  const preclaimed = async (tenantId: string, accountId: string, email: string | undefined): Promise<RowError | undefined> => {
    if (batchId === undefined || accountId.startsWith('new:')) return undefined;
    try {
      refusePreclaimed(await findPreclaimed(db, [accountId], tenantId, batchId), opts.trustAccounts, () => ({
        field: 'email',
        emails: email !== undefined ? [email] : [],
      }));
      return undefined;
    } catch (err) {
      if (!(err instanceof RowError)) throw err;
      return err;
    }
  };
  const note = (r: ChangePlanRow) => {
    opts.onRow?.(r);
    if (plan.rows && plan.rows.length < opts.listRows!) plan.rows.push(r);
  };
  let chunk: Extract<CheckedChange, { ok: true }>[] = [];
  const flush = async () => {
    await state.load(chunk.map((c) => c.row));
    for (const { line, row } of chunk) {
      const tenantId = state.tenantOf(row);
      const ws = tenantId === undefined ? undefined : state.workspaces.get(tenantId);
      let d = decide(
        { ...row, createMissingAccounts: opts.createMissingAccounts ?? false },
        ws,
        state.accountsFor(row.email),
        opts.accounts,
      );
      if (d.verdict === 'apply' && (d.change === 'add' || d.change === 'transfer') && d.account && 'id' in d.account) {
        const refused = await preclaimed(tenantId!, d.account.id, row.email);
        if (refused) d = { verdict: 'refuse', field: refused.field, message: refused.message };
      }
      const base = { line, action: row.action, tenantId: tenantId ?? null, externalId: row.externalId ?? null, email: row.email ?? null };
      if (d.verdict === 'refuse') {
        plan.refused++;
        plan.problems.push({ line, field: d.field, message: d.message });
        note({ ...base, verdict: 'refused', note: `${d.field}: ${d.message}` });
      } else if (d.verdict === 'unchanged') {
        plan.unchanged++;
        note({ ...base, verdict: 'unchanged', note: d.note });
      } else {
        plan.wouldApply[d.change]++;
        state.simulate(ws!, row, d.change, d.account);
        note({ ...base, verdict: d.change, note: null });
      }
    }
    chunk = [];
  };
  for await (const r of rows) {
    plan.total++;
    if (!r.ok) {
      plan.rejected++;
      plan.problems.push(...r.errors.map((e) => ({ line: r.line, ...e })));
      note({
        line: r.line,
        action: null,
        verdict: 'rejected',
        tenantId: null,
        externalId: r.raw.externalId ?? null,
        email: r.raw.ownerEmail ?? null,
        note: r.errors.map((e) => `${e.field}: ${e.message}`).join('; '),
      });
      continue;
    }
    chunk.push(r);
    if (chunk.length >= (opts.chunkSize ?? 1000)) await flush();
  }
  if (chunk.length > 0) await flush();
  plan.problems.sort((a, b) => a.line - b.line);
  plan.rows?.sort((a, b) => a.line - b.line);
  return plan;
}

/** The workspaces and accounts the rows name, read once, then changed in memory as the plan applies rows. */
class PlanState {
  readonly workspaces = new Map<string, WorkspaceState>();
  private readonly external = new Map<string, string | null>();
  private readonly accounts = new Map<string, Account[]>();
  private readonly loadedTenants = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly rules: AccountRules,
  ) {}

  tenantOf(row: ChangeRow): string | undefined {
    return row.workspaceId ?? this.external.get(row.externalId!) ?? undefined;
  }

  accountsFor(email: string | undefined): Account[] {
    return email === undefined ? [] : (this.accounts.get(email.toLowerCase()) ?? []);
  }

  async load(rows: ChangeRow[]): Promise<void> {
    const externals = [
      ...new Set(rows.flatMap((r) => (r.externalId !== undefined && !this.external.has(r.externalId) ? [r.externalId] : []))),
    ];
    const found = await tenantsOfExternalIds(this.db, externals);
    for (const e of externals) this.external.set(e, found.get(e) ?? null);
    const ids = [...new Set(rows.map((r) => this.tenantOf(r)).filter((t): t is string => t !== undefined && !this.loadedTenants.has(t)))];
    for (const [id, ws] of await readWorkspaces(this.db, ids)) this.workspaces.set(id, ws);
    for (const id of ids) this.loadedTenants.add(id);
    const emails = [...new Set(rows.flatMap((r) => (r.email !== undefined && !this.accounts.has(r.email.toLowerCase()) ? [r.email] : [])))];
    if (emails.length > 0) {
      const found = await findAccounts(this.db, emails, this.rules);
      for (const e of emails) {
        const key = personKey(e, this.rules);
        this.accounts.set(
          e.toLowerCase(),
          found.filter((a) => a.email.toLowerCase() === e.toLowerCase() || (this.rules.normalized && a.normalizedEmail === key)),
        );
      }
    }
  }

  /** The row's effect, for the rows after it. A person to be created gets a stand-in account. */
  simulate(ws: WorkspaceState, row: ChangeRow, change: ChangeKind, account: Account | { missing: true; email: string } | undefined): void {
    let id = account && 'id' in account ? account.id : undefined;
    if (account && 'missing' in account) {
      const made: Account = { id: `new:${personKey(account.email, this.rules)}`, email: account.email.toLowerCase(), status: 'pending' };
      this.accounts.set(account.email.toLowerCase(), [made]);
      id = made.id;
    }
    switch (change) {
      case 'add':
      case 're-role':
        ws.roles.set(id!, row.role!);
        break;
      case 'remove':
        ws.roles.delete(id!);
        break;
      case 'transfer':
        for (const o of ws.owners) ws.roles.set(o, 'admin');
        ws.roles.set(id!, 'owner');
        ws.owners = [id!];
        break;
      case 'rename':
        ws.name = row.name!;
        break;
      case 'archive':
        ws.status = 'archive';
        break;
      case 'restore':
        ws.status = 'normal';
        break;
    }
  }
}
