// One row of a changes file (apply): its shape, checked the same way whether it comes from a CSV,
// an .xlsx sheet or a script's objects; and the rules that hold across the rows of one file (the
// rows of a batch run in parallel, in any order, so two rows whose result would depend on their
// order are refused: the later one names the earlier line).
import { z } from 'zod';
import type { RowKind } from '../input/read-rows.js';
import type { RawRow } from '../input/row-checker.js';
import { CONTROL, safeText, unseenName, type FieldError } from '../input/workspace-row.js';
import { CHANGE_ACTIONS, isStrictUuid, MEMBER_ROLES, type ChangeAction, type MemberRole } from '../common/types.js';
import { heldBytes, HeldRows, type HeldLimits } from '../common/limits.js';

export const CHANGE_COLUMNS = ['action', 'workspace_id', 'external_id', 'email', 'role', 'name'] as const;
export type ChangeColumn = (typeof CHANGE_COLUMNS)[number];

/** A change, validated. */
export interface ChangeRow {
  action: ChangeAction;
  /** The workspace by its Dify id, or by the external_id our ledger recorded for it: exactly one. */
  workspaceId?: string;
  externalId?: string;
  email?: string;
  role?: MemberRole;
  /** rename: the new name (trimmed, NFC). */
  name?: string;
  /** Identifies the row within its batch: a different file under the same batch id is refused. */
  key: string;
  /**
   * An earlier line of this file this row waits for (it runs once that row is answered): a
   * transfer_owner waits for the add_member of its person, a member change waits for the
   * transfer_owner of its workspace (so removing the old owner after the transfer works).
   */
  afterLine?: number;
}

/** Which fields each action needs (the others must be empty: a shifted column is caught). */
const NEEDS: Record<ChangeAction, ('email' | 'role' | 'name')[]> = {
  add_member: ['email', 'role'],
  remove_member: ['email'],
  set_role: ['email', 'role'],
  transfer_owner: ['email'],
  rename: ['name'],
  archive: [],
  restore: [],
};
export const MEMBER_ACTIONS: readonly ChangeAction[] = ['add_member', 'remove_member', 'set_role', 'transfer_owner'];

const cell = (v: string | undefined) => {
  const t = v?.trim().normalize('NFC');
  return t === undefined || t === '' ? undefined : t;
};
const printable = (s: string, max: number): string | undefined => {
  if (s.includes('\ufffd') || !s.isWellFormed()) return 'is not valid UTF-8';
  if (CONTROL.test(s)) return 'contains control characters';
  if ([...s].length > max) return `is longer than ${max} characters`;
  return undefined;
};
const emailSchema = z.email();

/** The row's own rules: the action, its workspace, and exactly the fields the action needs. */
export function validateChange(
  record: Partial<Record<ChangeColumn, string>>,
): { ok: true; row: ChangeRow } | { ok: false; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const err = (field: string, message: string) => errors.push({ field, message: safeText(message) });
  const actionText = cell(record.action)?.toLowerCase();
  const action = CHANGE_ACTIONS.find((a) => a === actionText);
  if (actionText === undefined) err('action', 'is required');
  else if (!action) err('action', `"${actionText}" is not an action: use one of ${CHANGE_ACTIONS.join(', ')}`);

  const workspaceId = cell(record.workspace_id)?.toLowerCase();
  const externalId = cell(record.external_id);
  if (workspaceId === undefined && externalId === undefined)
    err('workspace_id', 'is required (or external_id: the id the workspace was ingested with)');
  if (workspaceId !== undefined && externalId !== undefined) err('external_id', 'give workspace_id or external_id, not both');
  if (workspaceId !== undefined && !isStrictUuid(workspaceId))
    err('workspace_id', 'is not a strict UUID (xxxxxxxx-xxxx-Mxxx-Nxxx-xxxxxxxxxxxx)');
  if (externalId !== undefined) {
    const bad = printable(externalId, 255);
    if (bad) err('external_id', bad);
  }

  const email = cell(record.email);
  const roleText = cell(record.role)?.toLowerCase();
  const name = cell(record.name);
  let role: MemberRole | undefined;
  if (action) {
    const needs = NEEDS[action];
    const given = { email, role: roleText, name };
    for (const f of ['email', 'role', 'name'] as const) {
      if (needs.includes(f) && given[f] === undefined) err(f, `is required for ${action}`);
      if (!needs.includes(f) && given[f] !== undefined) err(f, `is not used by ${action}: leave it empty`);
    }
    if (email !== undefined && needs.includes('email')) {
      const bad = printable(email, 255) ?? (emailSchema.safeParse(email).success ? undefined : 'is not a valid email address');
      if (bad) err('email', bad);
    }
    if (roleText !== undefined && needs.includes('role')) {
      if (roleText === 'owner')
        err('role', `cannot be owner: a workspace has one owner, changed only by transfer_owner (which makes the old owner admin)`);
      else if (!(MEMBER_ROLES as readonly string[]).includes(roleText))
        err('role', `"${roleText}" is not a role: use one of ${MEMBER_ROLES.join(', ')}`);
      else role = roleText as MemberRole;
    }
    if (name !== undefined && needs.includes('name')) {
      const bad = printable(name, 255) ?? unseenName(name);
      if (bad) err('name', bad);
    }
  }
  if (errors.length > 0 || !action) return { ok: false, errors };
  const row: ChangeRow = {
    action,
    ...(workspaceId !== undefined ? { workspaceId } : {}),
    ...(externalId !== undefined ? { externalId } : {}),
    ...(email !== undefined ? { email } : {}),
    ...(role !== undefined ? { role } : {}),
    ...(name !== undefined && action === 'rename' ? { name } : {}),
    key: '',
  };
  row.key = `change:${JSON.stringify([action, workspaceRef(row), email?.toLowerCase() ?? null, role ?? null, row.name ?? null])}`;
  return { ok: true, row };
}

/** How a row names its workspace, as compared within one file. */
export const workspaceRef = (r: { workspaceId?: string; externalId?: string }): string =>
  r.workspaceId !== undefined ? `id:${r.workspaceId}` : `external:${r.externalId}`;

export type CheckedChange = { line: number; ok: true; row: ChangeRow } | { line: number; ok: false; errors: FieldError[]; raw: RawRow };

export function rawOfChange(record: Partial<Record<ChangeColumn, string>>): RawRow {
  const clip = (s: string | undefined) =>
    s === undefined ? undefined : [...s.replace(/\u0000/g, '').toWellFormed()].slice(0, 255).join('');
  return {
    ...(record.name !== undefined ? { workspaceName: clip(record.name)! } : {}),
    ...(record.email !== undefined ? { ownerEmail: clip(record.email)! } : {}),
    ...(record.external_id !== undefined ? { externalId: clip(record.external_id)! } : {}),
    ...(record.action !== undefined ? { action: clip(record.action)! } : {}),
    ...(record.workspace_id !== undefined ? { workspaceId: clip(record.workspace_id)! } : {}),
    ...(record.role !== undefined ? { role: clip(record.role)! } : {}),
  };
}

/**
 * The rules across one file's rows (they run in parallel, in any order):
 * - one change per person and workspace, except an add_member followed by a transfer_owner to
 *   the person it adds (the transfer waits for the add: `afterLine`); a member change after a
 *   transfer_owner of its workspace waits for the transfer;
 * - one rename, one transfer_owner, and one archive or restore per workspace;
 * - no member change in a workspace the file archives or restores (it would depend on the order).
 * The same row twice is refused as a duplicate. A workspace is what `ws` says it is: the reference
 * as written when the file is read (ChangeChecker), the Dify id it resolves to once the database
 * is read (changes/same-workspace.ts), so a workspace named once by external_id and once by its id
 * is one workspace. What these rules remember is bounded by the batch's --max-rows and --max-bytes
 * (InputTooLargeError at the line that goes over).
 */
export class FileRules {
  private readonly keys = new Map<string, number>();
  private readonly people = new Map<string, { line: number; action: ChangeAction }>();
  private readonly workspaces = new Map<string, { rename?: number; transfer?: number; status?: number; members?: number }>();
  private readonly held: HeldRows;

  constructor(what: string, limits: HeldLimits = {}) {
    this.held = new HeldRows(what, limits);
  }

  /** A row held that these rules do not see (an invalid one). */
  countRow(line: number): void {
    this.held.row(line);
  }

  /** The row's refusal (naming the earlier line), or undefined: then it is remembered (and may get its afterLine). */
  check(row: ChangeRow, line: number, ws: string): FieldError | undefined {
    this.held.row(line);
    const refuse = (field: string, message: string): FieldError => ({ field, message });
    const same = this.keys.get(row.key);
    if (same !== undefined) return refuse('action', `duplicate: line ${same} has this change already`);
    const w = this.workspaces.get(ws) ?? {};
    const member = MEMBER_ACTIONS.includes(row.action);
    if (member && w.status !== undefined)
      return refuse('action', `line ${w.status} archives or restores this workspace: put member changes of it in another file`);
    if ((row.action === 'archive' || row.action === 'restore') && (w.status !== undefined || w.members !== undefined))
      return refuse(
        'action',
        w.status !== undefined
          ? `line ${w.status} archives or restores this workspace already`
          : `line ${w.members} changes this workspace's members: archive or restore it in another file`,
      );
    if (row.action === 'rename' && w.rename !== undefined) return refuse('action', `line ${w.rename} renames this workspace already`);
    if (row.action === 'transfer_owner' && w.transfer !== undefined)
      return refuse('action', `line ${w.transfer} transfers this workspace's ownership already: it has one owner`);
    let person: string | undefined;
    if (row.email !== undefined) {
      person = `${ws}|${row.email.toLowerCase()}`;
      const earlier = this.people.get(person);
      if (earlier) {
        if (row.action === 'transfer_owner' && earlier.action === 'add_member') row.afterLine = earlier.line;
        else
          return refuse(
            'email',
            `line ${earlier.line} changes this person in this workspace already (${earlier.action}): one change per person and workspace in a file`,
          );
      }
      this.people.set(person, { line, action: row.action });
    }
    if (member && row.action !== 'transfer_owner' && w.transfer !== undefined) row.afterLine = w.transfer;
    this.held.hold(line, heldBytes(row.key, person, this.workspaces.has(ws) ? undefined : ws));
    this.keys.set(row.key, line);
    if (member) w.members ??= line;
    if (row.action === 'rename') w.rename = line;
    if (row.action === 'transfer_owner') w.transfer = line;
    if (row.action === 'archive' || row.action === 'restore') w.status = line;
    this.workspaces.set(ws, w);
    return undefined;
  }

  close(): void {
    this.keys.clear();
    this.people.clear();
    this.workspaces.clear();
  }
}

/** Each row's own rules, then the rules across the file with each workspace as the row names it. */
export class ChangeChecker {
  private readonly rules: FileRules;

  constructor(limits: HeldLimits = {}) {
    this.rules = new FileRules('the changes file', limits);
  }

  check(record: Partial<Record<ChangeColumn, string>>, line: number): CheckedChange {
    const raw = rawOfChange(record);
    const v = validateChange(record);
    if (!v.ok) {
      this.rules.countRow(line);
      return { line, ok: false, errors: v.errors, raw };
    }
    const refused = this.rules.check(v.row, line, workspaceRef(v.row));
    return refused ? { line, ok: false, errors: [refused], raw } : { line, ok: true, row: v.row };
  }

  close(): void {
    this.rules.close();
  }
}

/** The changes file, for the input reader (src/csv/read-rows.ts readRecords): CSV and .xlsx alike. */
export const CHANGE_ROWS: RowKind<ChangeRow> = {
  columns: CHANGE_COLUMNS,
  required: ['action'],
  checker: (opts) => new ChangeChecker(opts),
  rawOf: rawOfChange,
};

/** A change as a script writes it (the file's columns). */
export interface ChangeInput {
  action: string;
  workspace_id?: string;
  external_id?: string;
  email?: string;
  role?: string;
  name?: string;
}

/** Rows given as objects: their line is their 1-based position; each goes through the file's checks. */
export async function* checkChangeInputs(
  rows: AsyncIterable<ChangeInput> | Iterable<ChangeInput>,
  limits: HeldLimits = {},
): AsyncGenerator<CheckedChange> {
  const checker = new ChangeChecker(limits);
  let line = 0;
  try {
    for await (const input of rows) {
      line++;
      if (typeof input !== 'object' || input === null || Array.isArray(input)) {
        yield {
          line,
          ok: false,
          errors: [{ field: 'row', message: 'must be an object with action and workspace_id (or external_id)' }],
          raw: {},
        };
        continue;
      }
      const record: Partial<Record<ChangeColumn, string>> = {};
      let bad: FieldError | undefined;
      for (const c of CHANGE_COLUMNS) {
        let v: unknown;
        try {
          v = (input as unknown as Record<string, unknown>)[c];
        } catch {
          bad = { field: c, message: 'could not be read (a property threw when read)' };
          break;
        }
        if (v === undefined || v === null) continue;
        if (typeof v !== 'string' && typeof v !== 'number') {
          bad = { field: c, message: `must be text, not ${Array.isArray(v) ? 'a list' : typeof v}` };
          break;
        }
        record[c] = String(v);
      }
      yield bad ? { line, ok: false, errors: [bad], raw: {} } : checker.check(record, line);
    }
  } finally {
    checker.close();
  }
}
