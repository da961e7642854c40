// Reports as people use them: CSV for a spreadsheet (safe against formula injection) and JSON.
import { escapeControls } from '../cli/terminal.js';
import type { ReportRow } from '../store/report.js';

export const REPORT_COLUMNS = [
  'line',
  'external_id',
  'workspace_name',
  'owner_email',
  'outcome',
  'tenant_id',
  'public_key_sha256',
  'attempts',
  'duration_ms',
  'accounts_created',
  'api_key',
  'error',
  'mail',
  'dify_tasks',
  'invitations',
] as const;

/**
 * OWASP's advice against CSV injection: a cell a spreadsheet would read as a formula is prefixed
 * with a single quote. Spreadsheets skip blanks before the sign (spaces, no-break and other
 * Unicode spaces, line breaks) and show nothing for format characters (Unicode category Cf:
 * zero-width spaces and joiners, U+2060 word joiner, U+00AD soft hyphen, bidi marks, BOM) and
 * other default-ignorable ones, and the blank braille pattern U+2800 (which workspace names count
 * as showing nothing too), so the sign is looked for after any run of all of them. The signs: =, +, -,
 * @ and every compatibility form of them (full-width U+FF1D, small U+FE66, superscript U+207C,
 * subscript U+208A, ...: whatever NFKC folds into one). A cell
 * starting with a tab, carriage return or line feed is prefixed whatever follows.
 */
const FORMULA = /^(?:[\s\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]*[=+\-@]|[\t\r\n])/u;
export function spreadsheetSafe(value: string): string {
  // NFKC folds every compatibility form of a sign into it: full-width (U+FF1D), small (U+FE66),
  // superscript and subscript (U+207C, U+208A), the Hebrew alternative plus (U+FB29), ...
  return FORMULA.test(value) || FORMULA.test(value.normalize('NFKC')) ? `'${value}` : value;
}

/**
 * A change batch's report (apply): each row's action, its workspace and person, its outcome
 * (applied, unchanged, rejected, failed) and the detail: why it was refused or failed, why it is
 * unchanged, what else the change did (an account created or deleted, tokens revoked).
 */
export const CHANGE_REPORT_COLUMNS = [
  'line',
  'action',
  'workspace_id',
  'external_id',
  'email',
  'role',
  'name',
  'outcome',
  'detail',
  'accounts_created',
  'attempts',
  'duration_ms',
  'mail',
] as const;

export type ChangeReportRecord = RecordOf<typeof CHANGE_REPORT_COLUMNS>;

export function changeRecord(r: ReportRow): ChangeReportRecord {
  return {
    line: r.line,
    action: r.action,
    workspace_id: r.tenantId,
    external_id: r.externalId,
    email: r.ownerEmail,
    role: r.role,
    name: r.workspaceName,
    outcome: r.outcome,
    detail: r.error,
    accounts_created: r.accountsCreated,
    attempts: r.attempts,
    duration_ms: r.durationMs,
    mail: r.mail,
  };
}

/**
 * A change batch's row as the library's report() gives it: the change's own fields (`email`,
 * `name`, `detail`) beside ReportRow's, and `error` only on a failed or rejected row (the detail of
 * an applied or unchanged row is no error). `ownerEmail` and `workspaceName` keep the same values,
 * as before `email` and `name` were added.
 */
export function changeReportRow(r: ReportRow): ReportRow {
  const failed = r.outcome === 'failed' || r.outcome === 'rejected';
  return { ...r, email: r.ownerEmail, name: r.workspaceName, detail: r.error, error: failed ? r.error : null };
}

export interface ReportTextOptions {
  /** The batch's kind: a change batch (apply) has its own columns (CHANGE_REPORT_COLUMNS). */
  kind?: 'provision' | 'changes';
  /**
   * For a terminal: every control character inside a cell (line breaks and tabs too) is shown
   * as \uXXXX, so a cell can neither drive the terminal nor start a line of its own.
   */
  escapeControls?: boolean;
}

/** One CSV cell: spreadsheet-safe, quoted when needed. */
export function csvCell(value: unknown, opts: ReportTextOptions = {}): string {
  if (value === null || value === undefined) return '';
  const raw = spreadsheetSafe(Array.isArray(value) ? value.join(';') : String(value));
  const text = opts.escapeControls ? escapeControls(raw, { all: true }) : raw;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

const columnsOf = (opts: ReportTextOptions): readonly string[] => (opts.kind === 'changes' ? CHANGE_REPORT_COLUMNS : REPORT_COLUMNS);
const recordOf = (r: ReportRow, opts: ReportTextOptions): Record<string, unknown> =>
  opts.kind === 'changes' ? changeRecord(r) : reportRecord(r);

/** A report row as people read it, in the JSON report and the API: the CSV's columns, in order. */
/** Each column's type, by its name (one rule for both kinds of report). */
type RecordOf<Columns extends readonly string[]> = {
  [K in Columns[number]]: K extends 'line' | 'attempts'
    ? number
    : K extends 'duration_ms'
      ? number | null
      : K extends 'accounts_created'
        ? string[] | null
        : K extends 'outcome'
          ? ReportRow['outcome']
          : string | null;
};

export type ReportRecord = RecordOf<typeof REPORT_COLUMNS>;

export function reportRecord(r: ReportRow): ReportRecord {
  return {
    line: r.line,
    external_id: r.externalId,
    workspace_name: r.workspaceName,
    owner_email: r.ownerEmail,
    outcome: r.outcome,
    tenant_id: r.tenantId,
    public_key_sha256: r.fingerprint,
    attempts: r.attempts,
    duration_ms: r.durationMs,
    accounts_created: r.accountsCreated,
    api_key: r.apiKey,
    error: r.error,
    mail: r.mail,
    dify_tasks: r.difyTasks,
    invitations: r.invitations,
  };
}

function csvLine(r: ReportRow, opts: ReportTextOptions): string {
  const record = recordOf(r, opts);
  return (
    columnsOf(opts)
      .map((c) => csvCell(record[c], opts))
      .join(',') + '\r\n'
  );
}

/**
 * A JSON array of report rows (snake_case, the CSV's column names), a piece at a time (reports of any size, in constant memory).
 * JSON.stringify escapes C0 controls; DEL and C1 controls (U+0080-009F: a single-character CSI
 * for some terminals) are escaped as well, losslessly, so the JSON is safe on a terminal too.
 */
export async function* jsonReport(rows: AsyncIterable<ReportRow>, opts: Pick<ReportTextOptions, 'kind'> = {}): AsyncGenerator<string> {
  let first = true;
  yield '[';
  for await (const r of rows) {
    yield `${first ? '\n' : ',\n'}${escapeControls(JSON.stringify(recordOf(r, opts)), { all: true })}`;
    first = false;
  }
  yield '\n]\n';
}

/** The report as CSV, a line at a time (exact data, unless escaped for a terminal). */
export async function* csvReport(rows: AsyncIterable<ReportRow>, opts: ReportTextOptions = {}): AsyncGenerator<string> {
  yield `${columnsOf(opts).join(',')}\r\n`;
  for await (const r of rows) yield csvLine(r, opts);
}
