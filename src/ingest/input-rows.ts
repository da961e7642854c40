// Rows from a script go through the same checks as rows from a CSV (csv/row-checker.ts), and
// --strict means the same thing for both: every row is checked before any is queued.
import { RowChecker, type CheckedRow, type RejectedRow } from '../csv/row-checker.js';
import type { Column, FieldError } from '../csv/workspace-row.js';
import { ProvisionError } from '../errors.js';

/** A workspace to provision, as a script writes it (the CSV's columns, members as a list or string). */
export interface WorkspaceInput {
  workspace_name: string;
  owner_email: string;
  plan?: string;
  members?: string | { email: string; role: string }[];
  external_id?: string;
  workspace_id?: string;
  dataset_api_key?: string | boolean;
}

/** Rows given as objects: their line is their 1-based position. */
export async function* checkInputRows(rows: AsyncIterable<WorkspaceInput> | Iterable<WorkspaceInput>): AsyncGenerator<CheckedRow> {
  const checker = new RowChecker();
  let line = 0;
  for await (const input of rows) {
    line++;
    yield checker.check(asRecord(input), line);
  }
}

function asRecord(input: WorkspaceInput): Partial<Record<Column, string>> {
  const text = (v: unknown) => (v === undefined || v === null ? undefined : String(v));
  const members = Array.isArray(input.members) ? input.members.map((m) => `${m.email}:${m.role}`).join(';') : input.members;
  return {
    workspace_name: text(input.workspace_name),
    owner_email: text(input.owner_email),
    plan: text(input.plan),
    members: text(members),
    external_id: text(input.external_id),
    workspace_id: text(input.workspace_id),
    dataset_api_key: typeof input.dataset_api_key === 'boolean' ? (input.dataset_api_key ? 'yes' : 'no') : text(input.dataset_api_key),
  };
}

export class StrictValidationError extends ProvisionError {
  override readonly name: string = 'StrictValidationError';
  readonly code = 'STRICT_REJECTED';
  override readonly exitCode = 2;
  override readonly httpStatus = 422;
  constructor(readonly rejected: { line: number; errors: FieldError[] }[]) {
    super(
      `${rejected.length} invalid row(s); nothing was queued:\n${rejected.flatMap((r) => r.errors.map((e) => `  line ${r.line} (${e.field}): ${e.message}`)).join('\n')}`,
    );
  }
}

/**
 * Every row checked before any is returned: a source that can be read again (a file) is read
 * twice, keeping only the rejections; any other is held in memory.
 */
export async function strictly(
  open: () => AsyncIterable<CheckedRow>,
  reopenable: boolean,
): Promise<AsyncIterable<CheckedRow> | CheckedRow[]> {
  const bad: RejectedRow[] = [];
  const all: CheckedRow[] = [];
  for await (const r of open()) {
    if (!r.ok) bad.push(r);
    else if (!reopenable) all.push(r);
  }
  if (bad.length > 0) throw new StrictValidationError(bad.map((r) => ({ line: r.line, errors: r.errors })));
  return reopenable ? open() : all;
}
