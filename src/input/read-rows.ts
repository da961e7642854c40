// Streams a CSV of workspaces: header checks, then one validated row at a time with its line number.
// The file is never held in memory; only a compact index of the keys seen so far is, to name
// duplicate rows (key-index.ts).
import { parse, type CsvError, type Info } from 'csv-parse';
import { Readable, Transform } from 'node:stream';
import {
  CsvFormatError,
  delimiterFlag,
  delimiterName,
  DELIMITERS,
  detectDelimiter,
  gather,
  newInputInfo,
  peek,
  utf8Text,
  type InputInfo,
} from './decode.js';
import { sheetRecords } from './read-sheet.js';
import { refuseFile, sniff, SNIFF_BYTES } from './sniff.js';
import { COLUMN_ALIASES, looksBinary, readHeading, shownHeading } from './header.js';
import { rawOf, RowChecker, type CheckedRow, type RawRow, type RejectedRow } from './row-checker.js';
import { COLUMNS, REQUIRED_COLUMNS } from './workspace-row.js';
import type { ReadOptions, RecordItem } from './read-options.js';

export type { ReadOptions, RecordItem };

export type { RawRow, InputInfo };
export { CsvFormatError };
export type CsvRow = CheckedRow;

/** A row of some kind of input file, checked: the row, or why not (with its line). */
export type Checked<Row> = { line: number; ok: true; row: Row } | RejectedRow;

/**
 * What a kind of input file is: its columns, the ones it must have, and the one check each row
 * goes through (the same for a file and for a script's rows). Workspaces (ingest) and changes
 * (apply) are two kinds, read by the same reader.
 */
export interface RowKind<Row> {
  columns: readonly string[];
  required: readonly string[];
  /** A checker for one input (it may remember rows, to name duplicates); closed when the input ends. */
  checker(opts: ReadOptions): { check(record: Record<string, string | undefined>, line: number): Checked<Row>; close(): void };
  /** What a rejected row said, for reports. */
  rawOf(record: Record<string, string | undefined>): RawRow;
  /** Other spellings of its columns that a header may use (header.ts compares them). */
  aliases?: Readonly<Record<string, readonly string[]>>;
}

/** The workspaces file (ingest). */
export const WORKSPACE_ROWS: RowKind<Extract<CheckedRow, { ok: true }>['row']> = {
  columns: COLUMNS,
  required: REQUIRED_COLUMNS,
  checker: (opts) => new RowChecker(opts),
  rawOf,
  aliases: COLUMN_ALIASES,
};

/**
 * The rows of a CSV or an .xlsx workbook, validated, with their line numbers (the sheet's row
 * numbers). `info` is filled in as the file is read: its format, encoding, delimiter or sheet,
 * and the empty rows skipped.
 */
export function readRows(input: Readable, opts: ReadOptions = {}, info: InputInfo = newInputInfo()): AsyncGenerator<CsvRow> {
  return readRecords(input, WORKSPACE_ROWS, opts, info);
}

/** The rows of a CSV or .xlsx file of the given kind, checked, with their line numbers (see readRows). */
export async function* readRecords<Row>(
  input: Readable,
  kind: RowKind<Row>,
  opts: ReadOptions = {},
  info: InputInfo = newInputInfo(),
): AsyncGenerator<Checked<Row>> {
  let start: Awaited<ReturnType<typeof peek>>;
  try {
    start = await peek(input as AsyncIterable<Buffer | string>, SNIFF_BYTES);
  } catch (err) {
    throw new CsvFormatError(1, `the file could not be read: ${(err as Error).message}`);
  }
  const format = sniff(start.head);
  if (format.kind === 'refused') throw refuseFile(format, opts.source);
  const records =
    format.kind === 'xlsx' ? sheetRecords(start.head, start.rest, opts, info) : csvRecords(start.head, start.rest, opts, info);
  let columns: (string | undefined)[] | undefined;
  // Before the header is found: the non-empty lines read so far (a title above the header).
  const above: { record: string[]; line: number }[] = [];
  const checker = kind.checker(opts);
  try {
    for await (const item of records) {
      if ('row' in item) {
        if (columns) yield item.row;
        continue;
      }
      const { record, line } = item;
      if (record.every((f) => f.trim() === '')) {
        // Excel's trailing `,,,,` rows (and blank lines before the header).
        if (columns) info.emptyRows++;
        continue;
      }
      if (!columns) {
        if (opts.headerRow !== undefined) {
          if (line < opts.headerRow) continue;
          if (line > opts.headerRow)
            throw new CsvFormatError(opts.headerRow, `the header row (--header-row ${opts.headerRow}) is empty or past the end of a row`);
        } else if (!namesRequired(record, opts, kind)) {
          // A title above the header: look further, up to HEADER_SEARCH lines.
          above.push({ record, line });
          if (above.length < HEADER_SEARCH) continue;
          refuseHeader(above, opts, info, kind);
        }
        columns = readHeader(record, line, opts, info, kind, false);
        if (line > 1) info.headerLine = line;
        continue;
      }
      // A sheet leaves a row's blank cells at its end out: the header's width, not the first line's (a title).
      if (info.format === 'xlsx') {
        while (record.length < columns.length) record.push('');
        while (record.length > columns.length && record[record.length - 1]!.trim() === '') record.pop();
      }
      yield checkRow(record, columns, line, checker, kind);
    }
  } finally {
    checker.close();
  }
  // Fewer lines than HEADER_SEARCH and none a header: the first one's error, as its header.
  if (!columns && above.length > 0) refuseHeader(above, opts, info, kind);
  if (!columns && opts.headerRow !== undefined)
    throw new CsvFormatError(opts.headerRow, `the file ends before line ${opts.headerRow} (--header-row)`);
  if (!columns) throw new CsvFormatError(1, `the file is empty: expected a header row with ${kind.required.join(' and ')}`);
}

/** Lines searched for the header when the first one is not it (a title row or two above it). */
export const HEADER_SEARCH = 10;

/**
 * No line among the first is a header: the one that came nearest (the most headings that are
 * columns, or near misses of one; the first of equals) is refused as the header, saying why.
 */
function refuseHeader<Row>(lines: { record: string[]; line: number }[], opts: ReadOptions, info: InputInfo, kind: RowKind<Row>): never {
  const score = (record: string[]) =>
    record.filter((cell) => {
      const h = readHeading(kind, cell, opts.columnMap);
      return 'column' in h || ('unknown' in h && h.suggestion !== undefined);
    }).length;
  let best = lines[0]!;
  for (const l of lines) if (score(l.record) > score(best.record)) best = l;
  readHeader(best.record, best.line, opts, info, kind, true);
  throw new CsvFormatError(best.line, `no header: expected a line naming ${kind.required.join(' and ')}`);
}

/** Whether a line names every required column (so it is the header). */
function namesRequired<Row>(record: string[], opts: ReadOptions, kind: RowKind<Row>): boolean {
  const named = new Set(record.map((cell) => readHeading(kind, cell, opts.columnMap)).flatMap((h) => ('column' in h ? [h.column] : [])));
  return kind.required.every((c) => named.has(c));
}

async function* csvRecords(
  head: Buffer,
  rest: AsyncIterator<Buffer | string>,
  opts: ReadOptions,
  info: InputInfo,
): AsyncGenerator<RecordItem> {
  let text: AsyncIterator<Buffer>;
  let first: Buffer;
  try {
    text = utf8Text(head, rest, opts, info)[Symbol.asyncIterator]();
    first = await headerChunk(text);
  } catch (err) {
    if (err instanceof CsvFormatError) throw err;
    throw new CsvFormatError(1, `the CSV could not be read: ${(err as Error).message}`);
  }
  const nl = first.indexOf(0x0a);
  const delimiter = opts.delimiter ?? detectDelimiter(first.subarray(0, nl < 0 ? first.length : nl).toString('utf8'));
  info.format = 'csv';
  info.delimiter = delimiter;
  // A record csv-parse can't read is pushed into the same stream, so it keeps its place in order.
  const parser: Transform = parse({
    bom: true,
    delimiter,
    info: true,
    record_delimiter: ['\r\n', '\n', '\r'],
    relax_column_count: true,
    skip_empty_lines: true,
    // Lines over maxRecordSize never reach the parser (see guardLines); this only bounds a
    // quoted field that runs over many lines.
    max_record_size: 4 * (opts.maxRecordSize ?? MAX_RECORD),
    skip_records_with_error: true,
    on_skip: (err: CsvError | undefined) => {
      if (err) parser.push({ skipped: err });
    },
  });
  const source = Readable.from(
    (async function* () {
      if (first.length > 0) yield first;
      for (let next = await text.next(); !next.done; next = await text.next()) yield next.value;
    })(),
  );
  source.on('error', (err) => parser.destroy(err));
  source.pipe(guardLines(opts.maxRecordSize ?? MAX_RECORD)).pipe(parser);

  const lines = { end: 0, empty: 0 };
  try {
    for await (const item of parser as AsyncIterable<{ record: string[]; info: Info } | { skipped: CsvError }>) {
      if ('skipped' in item) {
        yield { row: unreadable(item.skipped, lines.end + 1) };
        lines.end = Number(item.skipped.lines ?? lines.end + 1);
        continue;
      }
      yield { line: startLine(item.info, lines), record: item.record };
    }
  } catch (err) {
    if (err instanceof CsvFormatError) throw err;
    throw new CsvFormatError(Number((err as CsvError).lines ?? 0), `the CSV could not be read: ${(err as Error).message}`);
  } finally {
    source.destroy();
  }
}

/** The text up to the end of its first line (or 64 KiB): enough to see the header's delimiter. */
const headerChunk = (text: AsyncIterator<Buffer>): Promise<Buffer> => gather(text, (chunk, n) => chunk.includes(0x0a) || n >= 64 * 1024);

// csv-parse counts lines up to the end of a record (a quoted field can span lines): a record
// starts on the line after the previous one ended, past any empty lines it skipped.
function startLine(info: Info, prev: { end: number; empty: number }): number {
  const start = prev.end + 1 + (Number(info.empty_lines) - prev.empty);
  prev.end = Number(info.lines);
  prev.empty = Number(info.empty_lines);
  return start;
}

const MAX_RECORD = 64 * 1024;
/** Stands in for a line too long to read; a control character, so no real cell can equal it. */
const TOO_LARGE = '\u0001too-large\u0001';

/**
 * Before parsing, line by line (bytes: 0x0a/0x0d never occur inside UTF-8 multi-byte sequences):
 * - CRLF → LF: csv-parse counts a CRLF inside a quoted field as two lines, which would shift
 *   every later line number;
 * - a line longer than `max` bytes is replaced by a marker line, so it is rejected on its own
 *   line number while the rest of the file is still read (csv-parse's own record-size limit
 *   stops reading the file there), and so that no line is ever held whole in memory.
 */
function guardLines(max: number): Transform {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let dropping = false;
  const line = (body: Buffer[], bytes: number): Buffer => {
    let buf = Buffer.concat(body, bytes);
    if (buf.length > 0 && buf[buf.length - 1] === 0x0d) buf = buf.subarray(0, buf.length - 1);
    return buf;
  };
  return new Transform({
    transform(chunk: Buffer | string, _enc, done) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      const out: Buffer[] = [];
      let start = 0;
      for (let nl = buf.indexOf(0x0a, start); nl !== -1; nl = buf.indexOf(0x0a, start)) {
        const piece = buf.subarray(start, nl);
        if (!dropping && pendingBytes + piece.length > max) dropping = true;
        out.push(dropping ? Buffer.from(TOO_LARGE) : line([...pending, piece], pendingBytes + piece.length), Buffer.from([0x0a]));
        pending = [];
        pendingBytes = 0;
        dropping = false;
        start = nl + 1;
      }
      const rest = buf.subarray(start);
      if (!dropping) {
        pending.push(rest);
        pendingBytes += rest.length;
        if (pendingBytes > max) {
          dropping = true;
          pending = [];
          pendingBytes = 0;
        }
      }
      done(null, Buffer.concat(out));
    },
    flush(done) {
      done(null, dropping ? Buffer.from(TOO_LARGE) : line(pending, pendingBytes));
    },
  });
}

/** At most this many unknown headings are named in a message. */
const SHOWN_HEADINGS = 8;

/**
 * The header's columns (undefined: a column dropped), or the reason it is not a header: a
 * heading that is no column (unknown, with the nearest column), a column named twice, a required
 * column missing. `searched`: no line among the first HEADER_SEARCH was a header either.
 */
function readHeader<Row>(
  record: string[],
  line: number,
  opts: ReadOptions,
  info: InputInfo,
  kind: RowKind<Row>,
  searched: boolean,
): (string | undefined)[] {
  if (looksBinary(record))
    throw new CsvFormatError(
      line,
      'the header holds control characters or bytes that are not text: this is not a CSV or .xlsx file of rows (or it is UTF-16 without a BOM: pass --encoding utf-16le)',
    );
  const headings = record.map((cell) => readHeading(kind, cell, opts.columnMap));
  const names = headings.map((h) => ('column' in h ? h.column : undefined));
  const dupAt = names.findIndex((n, i) => n !== undefined && names.indexOf(n) !== i);
  if (dupAt >= 0) {
    const dup = names[dupAt]!;
    const cells = record.filter((_, i) => names[i] === dup).map(shownHeading);
    const as = cells.every((c) => c === `"${dup}"`) ? '' : ` (${cells.join(' and ')})`;
    throw new CsvFormatError(line, `the header names column "${dup}" twice${as}`);
  }
  const unknown = record.flatMap((cell, i) => {
    const h = headings[i]!;
    return 'unknown' in h ? [{ cell, suggestion: h.suggestion }] : [];
  });
  const missing = kind.required.filter((c) => !names.includes(c));
  const delimiter = info.delimiter;
  const how =
    delimiter === undefined
      ? `sheet "${info.sheet ?? ''}"`
      : `columns split on ${delimiterName(delimiter)}${opts.delimiter ? ` (${delimiterFlag(delimiter)})` : ', detected'}`;
  // Only a flag that would make this header work is suggested.
  const other = DELIMITERS.find(
    (d) =>
      delimiter !== undefined &&
      d !== delimiter &&
      namesRequired(
        record
          .join(delimiter)
          .split(d)
          .map((h) => h.trim().replace(/^"|"$/g, '')),
        opts,
        kind,
      ),
  );
  const hint = other ? `; the header looks ${delimiterName(other)}-separated: pass ${delimiterFlag(other)}` : '';
  const notFound =
    searched && !other
      ? `; no line among the first ${HEADER_SEARCH} names ${kind.required.join(' and ')}: name the header's line with --header-row N, or its headings with --map "Heading=column"`
      : '';
  if (unknown.length > 0 && !opts.ignoreUnknownColumns) {
    const ignore = missing.length === 0 && !other ? ' (or pass --ignore-unknown-columns to drop them)' : '';
    const listed = unknown
      .slice(0, SHOWN_HEADINGS)
      .map(
        (u) =>
          `${shownHeading(u.cell)}${u.suggestion ? ` (did you mean ${u.suggestion}? --map ${shownHeading(`${u.cell.trim()}=${u.suggestion}`)})` : ''}`,
      );
    const more = unknown.length > SHOWN_HEADINGS ? ` and ${unknown.length - SHOWN_HEADINGS} more` : '';
    throw new CsvFormatError(
      line,
      `unknown column(s) ${listed.join(', ')}${more} (${how}): the columns are ${kind.columns.join(', ')}${ignore}${hint}${notFound}`,
    );
  }
  if (missing.length > 0) {
    const header = record
      .slice(0, SHOWN_HEADINGS)
      .map((c) => shownHeading(c).slice(1, -1))
      .join(',');
    throw new CsvFormatError(
      line,
      `missing required column(s) ${missing.join(', ')} (${how}; header: ${header}${record.length > SHOWN_HEADINGS ? ',…' : ''})${hint}${notFound}`,
    );
  }
  const renamed = record.flatMap((cell, i) => {
    const h = headings[i]!;
    return 'as' in h && h.as !== undefined ? [{ heading: cell.trim(), column: h.column }] : [];
  });
  if (renamed.length > 0) info.renamed = renamed;
  return names;
}

function checkRow<Row>(
  fields: string[],
  columns: (string | undefined)[],
  line: number,
  checker: ReturnType<RowKind<Row>['checker']>,
  kind: RowKind<Row>,
): Checked<Row> {
  const record: Record<string, string | undefined> = {};
  columns.forEach((c, i) => {
    if (c !== undefined && fields[i] !== undefined) record[c] = fields[i];
  });
  if (fields.length === 1 && fields[0] === TOO_LARGE) {
    return {
      line,
      ok: false,
      errors: [{ field: 'row', message: `the row is too large (over ${MAX_RECORD / 1024} KiB); it was skipped` }],
      raw: {},
    };
  }
  if (fields.length !== columns.length) {
    const message = `has ${fields.length} field(s) but the header has ${columns.length}`;
    return { line, ok: false, errors: [{ field: 'row', message }], raw: kind.rawOf(record) };
  }
  return checker.check(record, line);
}

function unreadable(err: CsvError, line: number): RejectedRow {
  const reason =
    err.code === 'CSV_QUOTE_NOT_CLOSED'
      ? 'the row opens a quote that is never closed: everything from here to the end of the file was read as one field, so no later row was read'
      : err.code === 'CSV_MAX_RECORD_SIZE'
        ? 'the row is too large (a quoted field runs over too many lines); it and the rest of the file were skipped'
        : `the row is not valid CSV (${err.message.replace(/^Invalid Record Length: |^Invalid Opening Quote: /, '')})`;
  return { line, ok: false, errors: [{ field: 'row', message: reason }], raw: {} };
}
