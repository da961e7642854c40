// The one validation path for input rows, whether they come from a CSV or from a script: the
// row's own rules (workspace-row.ts), then duplicates within the batch (the same idempotency key
// or the same workspace_id twice, or the same customer: same-customer.ts), named by the line that
// had it first.
import { KeyIndex } from './key-index.js';
import { customerKey, duplicateOfLine } from './same-customer.js';
import { validateRow, type Column, type FieldError, type WorkspaceRow } from './workspace-row.js';

/** What a rejected row said, cut to a printable size, for reports. */
export interface RawRow {
  workspaceName?: string;
  ownerEmail?: string;
  externalId?: string;
  /** A change or membership row's workspace_id, when the row names its workspace readably (a membership file's rejected row: changes/sync.ts). */
  workspaceId?: string;
  /** A change row's action and role as written (apply), kept for the report (rows.input). */
  action?: string;
  role?: string;
}

export type CheckedRow = { line: number; ok: true; row: WorkspaceRow } | { line: number; ok: false; errors: FieldError[]; raw: RawRow };
export type RejectedRow = Extract<CheckedRow, { ok: false }>;

export class RowChecker {
  private readonly keys = new KeyIndex();
  private readonly ids = new KeyIndex();
  private readonly customers = new KeyIndex();

  /** allowDuplicateNames: don't reject rows that only look like an earlier row's customer. */
  constructor(private readonly opts: { allowDuplicateNames?: boolean } = {}) {}

  check(record: Partial<Record<Column, string>>, line: number): CheckedRow {
    const raw = rawOf(record);
    const checked = validateRow(record);
    if (!checked.ok) return { line, ok: false, errors: checked.errors, raw };
    const { row } = checked;
    const earlier = this.keys.firstLine(row.key, line);
    if (earlier !== undefined) {
      const field = row.externalId !== undefined ? 'external_id' : 'workspace_name';
      const what = row.externalId !== undefined ? `external_id "${row.externalId}"` : 'this owner and workspace name';
      return { line, ok: false, errors: [{ field, message: `duplicate: line ${earlier} has ${what} already` }], raw };
    }
    const earlierId = row.workspaceId === undefined ? undefined : this.ids.firstLine(row.workspaceId, line);
    if (earlierId !== undefined) {
      return { line, ok: false, errors: [{ field: 'workspace_id', message: `duplicate: line ${earlierId} uses it already` }], raw };
    }
    // Whatever its external_id: an external_id names a row for re-runs, not another customer.
    const sameCustomer = this.opts.allowDuplicateNames
      ? undefined
      : this.customers.firstLine(customerKey(row.ownerEmail, row.workspaceName), line);
    if (sameCustomer !== undefined)
      return { line, ok: false, errors: [{ field: 'workspace_name', message: duplicateOfLine(sameCustomer) }], raw };
    return { line, ok: true, row };
  }

  /** Frees the indexes' temporary files. */
  close(): void {
    for (const index of [this.keys, this.ids, this.customers]) index.close();
  }
}

// Kept for reports and messages: no NUL, no lone surrogate (PostgreSQL refuses both), ≤ 255 characters.
const clip = (s: string | undefined) => (s === undefined ? undefined : printable(s));

/** Text PostgreSQL accepts: NULs dropped, lone surrogates replaced. */
export const storable = (s: string): string => s.replace(/\u0000/g, '').toWellFormed();

/** A cell's text safe to store and print, at most 255 characters. */
export function printable(s: string): string {
  return [...storable(s)].slice(0, 255).join('');
}

export function rawOf(record: Partial<Record<Column, string>>): RawRow {
  return {
    workspaceName: clip(record.workspace_name),
    ownerEmail: clip(record.owner_email),
    externalId: clip(record.external_id),
  };
}
