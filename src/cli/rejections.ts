// How ingest and apply tell the operator about invalid rows: each on stderr with its line and
// field, the summary on stdout (one JSON object with --json), and --strict's refusal (nothing
// queued, exit 2).
import { StrictValidationError } from '../input/input-rows.js';
import type { RejectedRow } from '../input/row-checker.js';
import { escapeControls } from './terminal.js';

/** "1 row", "2 rows": a count and its noun, singular for one. */
export const counted = (n: number, noun: string) => `${n} ${n === 1 ? noun : `${noun}s`}`;

/** Exit code when rows were invalid and nothing (strict) or not everything (dry run) would go. */
export const EXIT_INVALID = 2;

export function formatRejection(row: Pick<RejectedRow, 'line' | 'errors'>): string {
  return row.errors.map((e) => escapeControls(`line ${row.line} (${e.field}): ${e.message}`)).join('\n');
}

export const printRejection = (row: Pick<RejectedRow, 'line' | 'errors'>) => process.stderr.write(`${formatRejection(row)}\n`);

/** The summary: `text`, or `json` as one line with --json. */
export const print = (flags: { json?: boolean }, json: object, text: string) =>
  process.stdout.write(flags.json ? `${JSON.stringify(json)}\n` : `${text}\n`);

/**
 * The catch of a --strict enqueue: a StrictValidationError is each invalid row on stderr and
 * "nothing was queued" (undefined: the caller exits EXIT_INVALID); anything else is thrown on.
 */
export const refusedWhenStrict =
  (flags: { json?: boolean }) =>
  (err: unknown): undefined => {
    if (!(err instanceof StrictValidationError)) throw err;
    for (const r of err.rejected) printRejection(r);
    print(
      flags,
      { strict: true, queued: 0, rejected: err.rejected.length },
      `--strict: ${err.rejected.length} invalid row(s); nothing was queued`,
    );
    return undefined;
  };
