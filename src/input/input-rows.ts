// Rows from a script go through the same checks as rows from a CSV (row-checker.ts), and
// --strict means the same thing for both: every row is checked before any is queued.
import { RowChecker, type CheckedRow, type RejectedRow } from './row-checker.js';
import { MAX_MEMBERS, type Column, type FieldError } from './workspace-row.js';
import { ProvisionError } from '../common/errors.js';

/** A workspace to provision, as a script writes it (the CSV's columns, members as a list or string). */
export interface WorkspaceInput {
  workspace_name: string;
  owner_email: string;
  plan?: string;
  members?: string | { email: string; role: string }[];
  external_id?: string;
  workspace_id?: string;
  dataset_api_key?: string | boolean;
  /** The owner's profile, used if the row creates the owner's account. */
  owner_name?: string;
  /** One of Dify's interface languages (en-US, fr-FR, ja-JP, …). */
  owner_language?: string;
  /** A timezone from pytz's list (Europe/Paris, …); default: the one Dify maps the language to. */
  owner_timezone?: string;
}

/** Rows given as objects: their line is their 1-based position. */
export async function* checkInputRows(
  rows: AsyncIterable<WorkspaceInput> | Iterable<WorkspaceInput>,
  opts: { allowDuplicateNames?: boolean } = {},
): AsyncGenerator<CheckedRow> {
  const checker = new RowChecker(opts);
  try {
    let line = 0;
    for await (const input of rows) {
      line++;
      // Whatever a script passes (a Symbol, a deep array, a throwing getter or toString) is that
      // row's error, never the batch's.
      let record: Partial<Record<Column, string>>;
      try {
        record = asRecord(input as unknown);
      } catch (err) {
        const error =
          err instanceof InputShapeError ? err.error : { field: 'row', message: 'could not be read (a property threw when read)' };
        yield { line, ok: false, errors: [error], raw: {} };
        continue;
      }
      yield checker.check(record, line);
    }
  } finally {
    checker.close();
  }
}

class InputShapeError extends Error {
  constructor(readonly error: FieldError) {
    super(error.message);
  }
}

/** A cell as text: strings, numbers and booleans only (never a call into the value: no toString). */
function text(field: string, v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  throw new InputShapeError({ field, message: `must be text, not ${Array.isArray(v) ? 'a list' : typeof v}` });
}

function membersText(v: unknown): string | undefined {
  if (!Array.isArray(v)) return text('members', v);
  if (v.length > MAX_MEMBERS)
    throw new InputShapeError({ field: 'members', message: `names ${v.length} members; at most ${MAX_MEMBERS} per row` });
  return v
    .map((m: unknown, i) => {
      if (typeof m !== 'object' || m === null || Array.isArray(m))
        throw new InputShapeError({ field: 'members', message: `member ${i + 1} must be { email, role }` });
      const { email, role } = m as { email?: unknown; role?: unknown };
      return `${text('members', email) ?? ''}:${text('members', role) ?? ''}`;
    })
    .join(';');
}

function asRecord(input: unknown): Partial<Record<Column, string>> {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw new InputShapeError({ field: 'row', message: 'must be an object with workspace_name and owner_email' });
  const row = input as Record<string, unknown>;
  const key = row.dataset_api_key;
  return {
    workspace_name: text('workspace_name', row.workspace_name),
    owner_email: text('owner_email', row.owner_email),
    plan: text('plan', row.plan),
    members: membersText(row.members),
    external_id: text('external_id', row.external_id),
    workspace_id: text('workspace_id', row.workspace_id),
    dataset_api_key: typeof key === 'boolean' ? (key ? 'yes' : 'no') : text('dataset_api_key', key),
    owner_name: text('owner_name', row.owner_name),
    owner_language: text('owner_language', row.owner_language),
    owner_timezone: text('owner_timezone', row.owner_timezone),
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
export async function strictly<T extends { line: number; ok: true } | RejectedRow = CheckedRow>(
  open: () => AsyncIterable<T>,
  reopenable: boolean,
): Promise<AsyncIterable<T> | T[]> {
  const bad: RejectedRow[] = [];
  const all: T[] = [];
  for await (const r of open()) {
    if (!r.ok) bad.push(r);
    else if (!reopenable) all.push(r);
  }
  if (bad.length > 0) throw new StrictValidationError(bad.map((r) => ({ line: r.line, errors: r.errors })));
  return reopenable ? open() : all;
}
