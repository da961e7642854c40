// Sync mode (apply --sync): the file lists the complete membership of each workspace it names
// (email, role), like a SCIM group sync from a spreadsheet. The plan is the difference with what
// Dify has when the batch is recorded, as ordinary change rows:
//   - a listed person who is not a member: add_member (their role);
//   - a member listed with another role: set_role; with the same role: add_member (answers unchanged);
//   - a member not listed: remove_member (numbered after the file's last line);
//   - the owner never changes unless the file says `owner` for a different person: then a
//     transfer_owner (an add_member first if that person is not a member yet), and the old owner's
//     own row (their new role) or removal runs after it (afterLine).
// Each resulting row is then run like any change: its preconditions are read again when it runs.
import { z } from 'zod';
import type { Db } from '../db/pool.js';
import { personKey, type AccountRules } from '../dify/accounts.js';
import { readWorkspaces } from '../dify/membership.js';
import type { Checked, RowKind } from '../input/read-rows.js';
import type { RawRow } from '../input/row-checker.js';
import { safeText, type FieldError } from '../input/workspace-row.js';
import { tenantsOfExternalIds } from '../store/ledger.js';
import { isStrictUuid, MEMBER_ROLES } from '../common/types.js';
import { heldBytes, HeldRows, type HeldLimits } from '../common/limits.js';
import { validateChange, workspaceRef, type ChangeInput, type CheckedChange } from './change-row.js';

export const SYNC_COLUMNS = ['workspace_id', 'external_id', 'email', 'role'] as const;
type SyncColumn = (typeof SYNC_COLUMNS)[number];
const SYNC_ROLES = ['owner', ...MEMBER_ROLES] as const;

/** One line of a membership file: this person has this role in this workspace. */
export interface SyncRow {
  workspaceId?: string;
  externalId?: string;
  email: string;
  role: (typeof SYNC_ROLES)[number];
}

const emailSchema = z.email();
const cell = (v: string | undefined) => {
  const t = v?.trim().normalize('NFC');
  return t === undefined || t === '' ? undefined : t;
};

function validateSync(record: Partial<Record<SyncColumn, string>>): { ok: true; row: SyncRow } | { ok: false; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const err = (field: string, message: string) => errors.push({ field, message: safeText(message) });
  const workspaceId = cell(record.workspace_id)?.toLowerCase();
  const externalId = cell(record.external_id);
  if (workspaceId === undefined && externalId === undefined) err('workspace_id', 'is required (or external_id)');
  if (workspaceId !== undefined && externalId !== undefined) err('external_id', 'give workspace_id or external_id, not both');
  if (workspaceId !== undefined && !isStrictUuid(workspaceId)) err('workspace_id', 'is not a strict UUID');
  const email = cell(record.email);
  if (email === undefined) err('email', 'is required');
  else if ([...email].length > 255 || !emailSchema.safeParse(email).success) err('email', 'is not a valid email address');
  const role = cell(record.role)?.toLowerCase();
  if (role === undefined) err('role', 'is required');
  else if (!(SYNC_ROLES as readonly string[]).includes(role)) err('role', `"${role}" is not a role: use one of ${SYNC_ROLES.join(', ')}`);
  if (errors.length > 0) return { ok: false, errors };
  return {
    ok: true,
    row: {
      ...(workspaceId !== undefined ? { workspaceId } : {}),
      ...(externalId !== undefined ? { externalId } : {}),
      email: email!,
      role: role as SyncRow['role'],
    },
  };
}

/**
 * The workspace a membership row names, when it can be read even though the row is rejected
 * (exactly one of workspace_id, a strict UUID, and external_id): a rejected row withholds that
 * workspace's removals; one whose workspace cannot be read withholds every removal (syncChanges).
 */
function readableWorkspace(record: Partial<Record<SyncColumn, string>>): { workspaceId: string } | { externalId: string } | object {
  const workspaceId = cell(record.workspace_id)?.toLowerCase();
  const externalId = cell(record.external_id);
  if (workspaceId !== undefined && externalId === undefined && isStrictUuid(workspaceId)) return { workspaceId };
  if (externalId !== undefined && workspaceId === undefined) return { externalId };
  return {};
}

/** One person once per workspace, one owner per workspace; the later line is refused, naming the earlier. */
class SyncChecker {
  private readonly people = new Map<string, number>();
  private readonly owners = new Map<string, number>();
  private readonly held: HeldRows;
  constructor(limits: HeldLimits = {}) {
    this.held = new HeldRows('the membership file (--sync)', limits);
  }
  check(record: Partial<Record<SyncColumn, string>>, line: number): Checked<SyncRow> {
    this.held.row(line);
    const raw: RawRow = { ...readableWorkspace(record), ...(record.email !== undefined ? { ownerEmail: record.email } : {}) };
    const v = validateSync(record);
    if (!v.ok) return { line, ok: false, errors: v.errors, raw };
    const ws = workspaceRef(v.row);
    const person = `${ws}|${v.row.email.toLowerCase()}`;
    const earlier = this.people.get(person);
    if (earlier !== undefined)
      return { line, ok: false, errors: [{ field: 'email', message: `line ${earlier} lists this person in this workspace already` }], raw };
    if (v.row.role === 'owner') {
      const owner = this.owners.get(ws);
      if (owner !== undefined)
        return {
          line,
          ok: false,
          errors: [{ field: 'role', message: `line ${owner} names this workspace's owner already: a workspace has one owner` }],
          raw,
        };
      this.owners.set(ws, line);
    }
    this.held.hold(line, heldBytes(person));
    this.people.set(person, line);
    return { line, ok: true, row: v.row };
  }
  close(): void {
    this.people.clear();
    this.owners.clear();
  }
}

/** The membership file (apply --sync), for the input reader. */
export const SYNC_ROWS: RowKind<SyncRow> = {
  columns: SYNC_COLUMNS,
  required: ['email', 'role'],
  checker: (opts) => new SyncChecker(opts),
  rawOf: (record) => (record.email !== undefined ? { ownerEmail: record.email } : {}),
};

interface Member {
  accountId: string;
  email: string;
  key: string;
  role: string;
}

/** "line 3", "lines 3, 5", "lines 3, 5, 8, 9, 12, … (14 lines)". */
function linesWords(lines: number[]): string {
  if (lines.length === 1) return `line ${lines[0]}`;
  const shown = lines.slice(0, 5).join(', ');
  return `lines ${shown}${lines.length > 5 ? `, … (${lines.length} lines)` : ''}`;
}

/**
 * The change rows that make each named workspace's membership what the file lists, from Dify's
 * state now, in the order they depend on each other (a plan reads them in this order). Invalid
 * file rows come through rejected. A workspace is the Dify workspace a row names, however it names
 * it (its id or the external_id our ledger resolves to it): a person listed twice or a second
 * owner is refused naming the earlier line even when the two lines name the workspace differently.
 * A person the file lists is never removed: while a line naming a workspace is rejected (it may
 * list a member), none of that workspace's removals is made, and while a rejected line's workspace
 * cannot be read (it could be any), none of the file's removals is made; each removal withheld is
 * a rejected row naming the person and the rejected lines. The rows that are fine still apply.
 * The whole file is held, with the members of the workspaces it names and the change rows it
 * becomes: all of it bounded by the batch's --max-rows (file rows and the removals it adds) and
 * --max-bytes (InputTooLargeError at the line that goes over).
 */
export async function syncChanges(
  rows: AsyncIterable<Checked<SyncRow>>,
  db: Db,
  rules: AccountRules,
  limits: HeldLimits = {},
): Promise<CheckedChange[]> {
  const held = new HeldRows('the membership file (--sync)', limits);
  const out: CheckedChange[] = [];
  const valid: { line: number; row: SyncRow }[] = [];
  // Rejected lines: whose workspace can be read (by its reference), and whose cannot.
  const rejectedIn: { line: number; ref: { workspaceId?: string; externalId?: string } }[] = [];
  const unreadable: number[] = [];
  let last = 0;
  for await (const r of rows) {
    last = Math.max(last, r.line);
    if (!r.ok) {
      held.row(r.line, heldBytes(JSON.stringify(r.errors)));
      out.push(r);
      if (r.raw.workspaceId !== undefined) rejectedIn.push({ line: r.line, ref: { workspaceId: r.raw.workspaceId } });
      else if (r.raw.externalId !== undefined) rejectedIn.push({ line: r.line, ref: { externalId: r.raw.externalId } });
      else unreadable.push(r.line);
      continue;
    }
    held.row(r.line, heldBytes(r.row.email, r.row.workspaceId ?? r.row.externalId) + 2 * heldBytes());
    valid.push({ line: r.line, row: r.row });
  }
  // Each reference resolved to its workspace: the ledger's tenant for an external_id it knows.
  const external = await tenantsOfExternalIds(db, [
    ...new Set(
      [...valid.map((v) => v.row), ...rejectedIn.map((r) => r.ref)].flatMap((r) => (r.externalId !== undefined ? [r.externalId] : [])),
    ),
  ]);
  const tenantOf = (r: { workspaceId?: string; externalId?: string }) => r.workspaceId ?? external.get(r.externalId!);
  const workspaceOf = (r: { workspaceId?: string; externalId?: string }) => {
    const t = tenantOf(r);
    return t !== undefined ? `id:${t}` : workspaceRef(r);
  };
  // Grouped by workspace; the file's rules (a person once, one owner) again across its references.
  const byWorkspace = new Map<string, { line: number; row: SyncRow }[]>();
  const withheld = new Map<string, number[]>();
  const withhold = (ws: string, line: number) => {
    const lines = withheld.get(ws);
    if (lines) lines.push(line);
    else withheld.set(ws, [line]);
  };
  for (const { line, ref } of rejectedIn) withhold(workspaceOf(ref), line);
  const people = new Map<string, number>();
  const owners = new Map<string, number>();
  for (const v of valid) {
    const ws = workspaceOf(v.row);
    const person = `${ws}|${v.row.email.toLowerCase()}`;
    const named =
      v.row.externalId !== undefined
        ? ` (external_id "${v.row.externalId}" is workspace ${tenantOf(v.row)})`
        : ' (the same workspace, named there by its external_id)';
    const refuse = (field: string, message: string) => {
      out.push({
        line: v.line,
        ok: false,
        errors: [{ field, message: safeText(message + named) }],
        raw: {
          ...(v.row.workspaceId !== undefined ? { workspaceId: v.row.workspaceId } : { externalId: v.row.externalId! }),
          ownerEmail: v.row.email,
        },
      });
      withhold(ws, v.line);
    };
    const earlier = people.get(person);
    if (earlier !== undefined) {
      refuse('email', `line ${earlier} lists this person in this workspace already`);
      continue;
    }
    if (v.row.role === 'owner') {
      const owner = owners.get(ws);
      if (owner !== undefined) {
        refuse('role', `line ${owner} names this workspace's owner already: a workspace has one owner`);
        continue;
      }
      owners.set(ws, v.line);
    }
    people.set(person, v.line);
    const listed = byWorkspace.get(ws);
    if (listed) listed.push(v);
    else byWorkspace.set(ws, [v]);
  }
  people.clear();
  owners.clear();
  const ids = [...byWorkspace.values()].map((v) => tenantOf(v[0]!.row)).filter((t): t is string => t !== undefined);
  const members = new Map<string, Member[]>();
  for (const [id, ws] of await readWorkspaces(db, ids)) {
    held.hold(
      last,
      ws.members.reduce((n, m) => n + heldBytes(m.accountId, m.email, m.email, m.role), 0),
    );
    members.set(
      id,
      ws.members.map((m) => ({ ...m, key: personKey(m.email, rules) })),
    );
  }

  let next = last;
  const change = (line: number, input: ChangeInput, afterLine?: number): CheckedChange => {
    const v = validateChange(input as Parameters<typeof validateChange>[0]);
    if (!v.ok) return { line, ok: false, errors: v.errors, raw: {} };
    return { line, ok: true, row: { ...v.row, ...(afterLine !== undefined ? { afterLine } : {}) } };
  };
  const whereOf = (r: SyncRow) => (r.workspaceId !== undefined ? { workspace_id: r.workspaceId } : { external_id: r.externalId! });
  for (const [ws, listed] of byWorkspace) {
    const first = listed[0]!.row;
    const where = whereOf(first);
    const current = members.get(tenantOf(first) ?? '') ?? [];
    const find = (email: string) => current.find((m) => m.key === personKey(email, rules));
    const owner = current.find((m) => m.role === 'owner');
    const newOwner = listed.find((l) => l.row.role === 'owner' && find(l.row.email)?.role !== 'owner');
    // 1. A different owner named: the transfer (after adding them if they are not a member).
    let transferLine: number | undefined;
    if (newOwner) {
      const at = whereOf(newOwner.row);
      if (find(newOwner.row.email)) {
        out.push(change(newOwner.line, { action: 'transfer_owner', ...at, email: newOwner.row.email }));
        transferLine = newOwner.line;
      } else {
        out.push(change(newOwner.line, { action: 'add_member', ...at, email: newOwner.row.email, role: 'admin' }));
        transferLine = ++next;
        held.row(transferLine, heldBytes(newOwner.row.email) + 2 * heldBytes());
        out.push(change(transferLine, { action: 'transfer_owner', ...at, email: newOwner.row.email }, newOwner.line));
      }
    }
    // 2. Everyone listed: added, re-roled, or found as listed (each line's change names the workspace as that line does).
    for (const { line, row } of listed) {
      if (row === newOwner?.row) continue;
      const at = whereOf(row);
      const m = find(row.email);
      const isOwner = m !== undefined && m === owner;
      if (row.role === 'owner' || (isOwner && !newOwner)) {
        // The owner stays the owner (sync changes it only for a different person named owner).
        out.push(change(line, { action: 'transfer_owner', ...at, email: row.email }));
      } else if (m && m.role !== row.role) {
        out.push(change(line, { action: 'set_role', ...at, email: row.email, role: row.role }, isOwner ? transferLine : undefined));
      } else {
        out.push(change(line, { action: 'add_member', ...at, email: row.email, role: row.role }, isOwner ? transferLine : undefined));
      }
    }
    // 3. Members the file does not list: removed (the old owner once ownership has moved; never the owner otherwise),
    // unless a rejected line may list them: then each removal is withheld, naming those lines.
    const blockers = [...unreadable, ...(withheld.get(ws) ?? [])].sort((a, b) => a - b);
    const listedKeys = new Set(listed.map((l) => personKey(l.row.email, rules)));
    for (const m of current) {
      if (listedKeys.has(m.key)) continue;
      if (m === owner && !newOwner) continue;
      held.row(++next, heldBytes(m.email) + 2 * heldBytes());
      if (blockers.length === 0) {
        out.push(change(next, { action: 'remove_member', ...where, email: m.email }, m === owner ? transferLine : undefined));
        continue;
      }
      const which = linesWords(blockers);
      const why =
        unreadable.length > 0
          ? `${linesWords(unreadable)} of the file ${unreadable.length > 1 ? 'are' : 'is'} rejected and ${unreadable.length > 1 ? 'their' : 'its'} workspace cannot be read: --sync removes no one while a rejected line could list them`
          : `${which} naming this workspace ${blockers.length > 1 ? 'are' : 'is'} rejected: --sync removes no one from a workspace while a rejected line may list them`;
      out.push({
        line: next,
        ok: false,
        errors: [
          { field: 'email', message: safeText(`${m.email} is not listed but is not removed: ${why}; correct ${which} and apply again`) },
        ],
        raw: {
          ...(first.workspaceId !== undefined ? { workspaceId: first.workspaceId } : { externalId: first.externalId! }),
          ownerEmail: m.email,
        },
      });
    }
  }
  return out;
}

/** A membership row as a script writes it (the file's columns). */
export interface SyncInput {
  workspace_id?: string;
  external_id?: string;
  email: string;
  role: string;
}

/** Rows given as objects: their line is their 1-based position; each goes through the file's checks. */
export async function* checkSyncInputs(
  rows: AsyncIterable<SyncInput> | Iterable<SyncInput>,
  limits: HeldLimits = {},
): AsyncGenerator<Checked<SyncRow>> {
  const checker = new SyncChecker(limits);
  let line = 0;
  try {
    for await (const input of rows) {
      line++;
      const record: Partial<Record<SyncColumn, string>> = {};
      if (typeof input === 'object' && input !== null)
        for (const c of SYNC_COLUMNS) {
          const v = (input as unknown as Record<string, unknown>)[c];
          if (typeof v === 'string' || typeof v === 'number') record[c] = String(v);
        }
      yield checker.check(record, line);
    }
  } finally {
    checker.close();
  }
}
