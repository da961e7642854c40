// How a file of rows is read (shared by the CSV and the workbook readers), and what a reader yields.
import { open } from 'node:fs/promises';
import { UsageError } from '../common/errors.js';
import type { Delimiter } from './decode.js';
import type { RejectedRow } from './row-checker.js';

export interface ReadOptions {
  /** Drop columns we don't know instead of refusing the file. */
  ignoreUnknownColumns?: boolean;
  /** Largest record accepted, in characters; a larger one is rejected (and skipped). */
  maxRecordSize?: number;
  /** The column delimiter (default: detected from the header line, `,` `;` or TAB). */
  delimiter?: Delimiter;
  /** The file's encoding when it is not UTF-8 (or UTF-16 with a BOM), e.g. windows-1252. */
  encoding?: string;
  /** .xlsx: the sheet to read (default: the first). */
  sheet?: string;
  /** Let rows through that look like another row's customer (same owner and workspace name). */
  allowDuplicateNames?: boolean;
  /** The input's name (a file), in messages about the file as a whole. */
  source?: string;
  /**
   * .xlsx: all of the workbook's parts together, unpacked, at most this many bytes (default 1 GiB,
   * the batch's --max-bytes); its shared strings at most a sixteenth of it.
   */
  maxBytes?: number;
  /**
   * The header's line (the sheet's row number): the lines above it are skipped. Default: the
   * first of the first HEADER_SEARCH non-empty lines that names every required column (a title
   * above the header is skipped), else the first.
   */
  headerRow?: number;
  /**
   * Headings read as columns (--map "Owner E-mail=owner_email"): compared as headings are (case,
   * accents, spaces and punctuation aside); `-` as the column drops that column.
   */
  columnMap?: Readonly<Record<string, string>>;
  /**
   * A changes or membership file (apply): rows its checks across the file (and sync, which reads
   * it whole) hold at most (default 1,000,000, the batch's --max-rows).
   */
  maxRows?: number;
}

/** A record with its line, or a line that could not be read as a record (already a rejected row). */
export type RecordItem = { line: number; record: string[] } | { row: RejectedRow };

/** Why a file cannot be read, in words (by errno code). */
export const UNREADABLE: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'a folder, not a file',
};

/**
 * The input file (ingest's, apply's, a plan's; the CLI's and the library's) can be opened: else one
 * line naming it and why (a UsageError), not Node's raw error nor a stream's unhandled one.
 */
export async function checkInputFile(file: string): Promise<void> {
  if (file === '-') return;
  const cannot = (code: string | undefined, message: string) => new UsageError(`cannot read ${file}: ${UNREADABLE[code ?? ''] ?? message}`);
  const fh = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
    throw cannot(err.code, err.message);
  });
  try {
    if ((await fh.stat()).isDirectory()) throw cannot('EISDIR', '');
  } finally {
    await fh.close();
  }
}
