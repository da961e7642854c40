// Reports as people use them: CSV for a spreadsheet (safe against formula injection) and JSON.
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
] as const;

/**
 * OWASP's advice against CSV injection: a cell a spreadsheet would read as a formula
 * (=, +, -, @, tab, carriage return first) is prefixed with a single quote.
 */
export function spreadsheetSafe(value: string): string {
  return /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
}

function cell(value: unknown): string {
  if (value === null || value === undefined) return '';
  const text = spreadsheetSafe(Array.isArray(value) ? value.join(';') : String(value));
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csvHeader(): string {
  return `${REPORT_COLUMNS.join(',')}\r\n`;
}

function csvLine(r: ReportRow): string {
  return (
    [
      r.line,
      r.externalId,
      r.workspaceName,
      r.ownerEmail,
      r.outcome,
      r.tenantId,
      r.fingerprint,
      r.attempts,
      r.durationMs,
      r.accountsCreated,
      r.apiKey,
      r.error,
    ]
      .map(cell)
      .join(',') + '\r\n'
  );
}

/** A JSON array of report rows, a piece at a time (reports of any size, in constant memory). */
export async function* jsonReport(rows: AsyncIterable<ReportRow>): AsyncGenerator<string> {
  let first = true;
  yield '[';
  for await (const r of rows) {
    yield `${first ? '\n' : ',\n'}${JSON.stringify(r)}`;
    first = false;
  }
  yield '\n]\n';
}

/** The report as CSV, a line at a time. */
export async function* csvReport(rows: AsyncIterable<ReportRow>): AsyncGenerator<string> {
  yield csvHeader();
  for await (const r of rows) yield csvLine(r);
}
