// An .xlsx workbook read as it streams (exceljs's streaming WorkbookReader): one sheet's rows, each
// cell as text the way the sheet shows it, with the sheet's own row numbers. The workbook is never
// held whole: the zip is inflated entry by entry, rows are parsed as SAX events. An untrusted
// workbook is bounded as it inflates (a zip bomb is refused before memory or disk fill up): all its
// parts together at most --max-bytes, its shared strings (held in memory) at most a sixteenth of
// that, and the sheet's XML between two rows at most 1 MiB. A sheet that comes before the shared
// strings in the zip (Excel's order) is spooled to a nameless temporary file (scratch-file.ts).
import { closeSync, createReadStream, writeSync } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import type { Cell, CellValue } from 'exceljs';
import { BATCH_LIMITS, sizeWords } from '../common/limits.js';
import { CsvFormatError, type InputInfo } from './decode.js';
import type { ReadOptions, RecordItem } from './read-options.js';
import { openScratchFile } from './scratch-file.js';

/** The sheet's XML between two rows (or before the first): beyond it, a row would be held whole in memory. */
export const SHEET_ROW_BYTES = 1 << 20;
/** The shared strings are held in memory: at most this share of --max-bytes, unpacked. */
export const SHARED_STRINGS_SHARE = 16;

export async function* sheetRecords(
  head: Buffer,
  rest: AsyncIterator<Buffer | string>,
  opts: ReadOptions,
  info: InputInfo,
): AsyncGenerator<RecordItem> {
  info.format = 'xlsx';
  delete info.encoding;
  delete info.delimiter;
  const { default: ExcelJS } = await import('exceljs');
  const input = Readable.from(
    (async function* () {
      yield head;
      for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
    })(),
  );
  const budget = new Budget(opts);
  const reader = new ExcelJS.stream.xlsx.WorkbookReader(input, {
    worksheets: 'emit',
    sharedStrings: 'cache',
    // Styles give each cell its number format (a date, a zero-padded id); hyperlinks are not needed.
    styles: 'cache',
    hyperlinks: 'ignore',
    entries: 'ignore',
  });
  utf8Safe(reader);
  bounded(reader, input, budget);
  const seen: string[] = [];
  try {
    for await (const sheet of reader) {
      const name = (sheet as unknown as { name?: string }).name ?? `Sheet${seen.length + 1}`;
      seen.push(name);
      if (opts.sheet !== undefined && name !== opts.sheet) continue;
      info.sheet = name;
      let width = 0;
      for await (const row of sheet) {
        budget.rowSeen(row.number);
        const record: string[] = [];
        const cells = row.cellCount;
        for (let c = 1; c <= Math.max(cells, width); c++) record.push(c <= cells ? cellText(row.getCell(c)) : '');
        while (record.length > width && record.length > 0 && record[record.length - 1]!.trim() === '') record.pop();
        // Cells left blank at the end of a row are absent from the sheet: pad to the header's width.
        if (width === 0 && record.length > 0) width = record.length;
        while (record.length < width) record.push('');
        yield { line: row.number, record };
      }
      return;
    }
  } catch (err) {
    if (err instanceof CsvFormatError) throw err;
    throw new CsvFormatError(1, `the .xlsx workbook could not be read: ${(err as Error).message}`);
  } finally {
    input.destroy();
  }
  throw new CsvFormatError(
    1,
    opts.sheet !== undefined
      ? `the workbook has no sheet named "${opts.sheet}": its sheets are ${seen.map((s) => `"${s}"`).join(', ')}`
      : 'the workbook has no sheet',
  );
}

/**
 * exceljs 4.4 decodes each inflated chunk on its own, so a character cut by a chunk boundary
 * becomes U+FFFD (exceljs issues #2084, #2316, open). Its sheets and shared strings are given
 * whole characters here: a StringDecoder carries a cut sequence over to the next chunk.
 */
function utf8Safe(reader: object): void {
  type Internals = {
    _parseSharedStrings(entry: Readable): AsyncGenerator<unknown>;
    _parseWorksheet(iterator: AsyncIterable<Buffer | string>, sheetNo: string): Generator<unknown>;
  };
  const r = reader as Internals;
  const sharedStrings = r._parseSharedStrings.bind(reader);
  r._parseSharedStrings = (entry) => {
    entry.setEncoding('utf8');
    return sharedStrings(entry);
  };
  const worksheet = r._parseWorksheet.bind(reader);
  r._parseWorksheet = (iterator, sheetNo) => worksheet(wholeCharacters(iterator), sheetNo);
}

async function* wholeCharacters(chunks: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  for await (const chunk of chunks) yield typeof chunk === 'string' ? chunk : decoder.write(chunk);
  const end = decoder.end();
  if (end) yield end;
}

/**
 * A cell's text as the sheet shows it: text cells verbatim (ids and phone numbers typed as text
 * stay text), whole numbers without a decimal point or exponent, zero-padded number formats
 * (`00000`) padded, dates as YYYY-MM-DD (and hh:mm when there is a time) from the cell's own
 * serial value, never shifted by the reader's time zone.
 */
export function cellText(cell: Cell): string {
  return valueText(cell.value, cell.numFmt);
}

function valueText(v: CellValue, numFmt: string | undefined): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return numberText(v, numFmt);
  if (typeof v === 'boolean') return v ? 'TRUE' : 'FALSE';
  if (v instanceof Date) return dateText(v);
  if ('richText' in v) return v.richText.map((t) => t.text).join('');
  if ('result' in v) return valueText(v.result as CellValue, numFmt);
  if ('formula' in v || 'sharedFormula' in v) return '';
  if ('hyperlink' in v) return typeof v.text === 'string' ? v.text : valueText(v.text as CellValue, numFmt);
  if ('error' in v) return String(v.error);
  return '';
}

function numberText(n: number, numFmt: string | undefined): string {
  const padded = numFmt !== undefined && /^0+$/.test(numFmt) ? numFmt.length : 0;
  const text = Number.isInteger(n) && Math.abs(n) < 1e21 ? BigInt(n).toString() : String(n);
  return padded > text.length && n >= 0 ? text.padStart(padded, '0') : text;
}

function dateText(d: Date): string {
  if (Number.isNaN(d.getTime())) return '';
  const iso = d.toISOString();
  const time = iso.slice(11, 16);
  return time === '00:00' ? iso.slice(0, 10) : `${iso.slice(0, 10)} ${time}`;
}

/** What a workbook may unpack to, counted as its parts inflate (see the top of this file). */
class Budget {
  private unpacked = 0;
  private sinceRow = 0;
  private lastRow = 0;
  private readonly total: number;
  private readonly name: string;

  constructor(opts: ReadOptions) {
    this.total = opts.maxBytes ?? BATCH_LIMITS.bytes;
    this.name = opts.source !== undefined ? `the workbook "${opts.source}"` : 'the workbook';
  }

  /** An entry's bytes as they inflate, counted against the whole workbook's limit (and the shared strings'). */
  meter(entry: Readable, sharedStrings: boolean): Transform {
    let own = 0;
    const strings = Math.floor(this.total / SHARED_STRINGS_SHARE);
    const part = new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        own += chunk.length;
        this.unpacked += chunk.length;
        if (sharedStrings && own > strings)
          done(
            this.refuse(
              1,
              `its shared strings (xl/sharedStrings.xml) unpack to more than ${sizeWords(strings)}, the limit for texts held in memory ` +
                `(a sixteenth of --max-bytes; library: maxBytes): it was refused; save the sheet as CSV UTF-8 instead`,
            ),
          );
        else if (this.unpacked > this.total)
          done(
            this.refuse(
              1,
              `it unpacks to more than ${sizeWords(this.total)} (--max-bytes; library: maxBytes): it was refused before reading further (a zip bomb?)`,
            ),
          );
        else done(null, chunk);
      },
    });
    entry.on('error', (err) => part.destroy(err));
    entry.pipe(part);
    return part;
  }

  /** A sheet's XML, refused when too much of it goes by without a row (a cell that would be held whole). */
  async *rows(chunks: AsyncIterable<Buffer | string>): AsyncGenerator<Buffer | string> {
    for await (const chunk of chunks) {
      this.sinceRow += chunk.length;
      if (this.sinceRow > SHEET_ROW_BYTES)
        throw this.refuse(
          this.lastRow + 1,
          `over ${sizeWords(SHEET_ROW_BYTES)} of the sheet's XML after row ${this.lastRow} holds no complete row (a cell too large?): the workbook was refused`,
        );
      yield chunk;
    }
  }

  rowSeen(line: number): void {
    this.sinceRow = 0;
    this.lastRow = line;
  }

  private refuse(line: number, why: string): CsvFormatError {
    return new CsvFormatError(line, `${this.name}: ${why}`);
  }
}

interface ZipEntry extends Readable {
  path: string;
}

/**
 * exceljs's own loop over the zip's entries, with every entry metered (budget) and a sheet that
 * must wait for the shared strings spooled to a nameless file that is always closed (exceljs
 * spools it to a named temporary file, unbounded, removed only at exit).
 */
function bounded(reader: object, input: Readable, budget: Budget): void {
  type Internals = {
    sharedStrings?: unknown;
    workbookRels?: unknown;
    parse(): AsyncGenerator<unknown>;
    _parseRels(entry: Readable): Promise<void>;
    _parseWorkbook(entry: Readable): Promise<void>;
    _parseStyles(entry: Readable): Promise<void>;
    _parseSharedStrings(entry: Readable): AsyncGenerator<unknown>;
    _parseWorksheet(iterator: AsyncIterable<Buffer | string>, sheetNo: string): Generator<unknown>;
  };
  const r = reader as Internals;
  r.parse = async function* () {
    const { default: unzipper } = await import('unzipper');
    const zip = unzipper.Parse({ forceStream: true }) as unknown as Transform;
    pipeline(input, zip).catch(() => {}); // an input error ends the loop below with it
    const waiting: { sheetNo: string; fd: number | undefined }[] = [];
    let reading: Readable | undefined;
    try {
      for await (const entry of zip as AsyncIterable<ZipEntry>) {
        const sheetNo = /^xl\/worksheets\/sheet(\d+)\.xml$/.exec(entry.path)?.[1];
        const part = budget.meter(entry, entry.path === 'xl/sharedStrings.xml');
        const ended = new Promise<void>((resolve, reject) => {
          part.on('end', resolve).on('close', resolve).on('error', reject);
        });
        ended.catch(() => {}); // awaited below unless the reader stops early
        if (entry.path === 'xl/_rels/workbook.xml.rels') await r._parseRels(part);
        else if (entry.path === 'xl/workbook.xml') await r._parseWorkbook(part);
        else if (entry.path === 'xl/styles.xml') await r._parseStyles(part);
        else if (entry.path === 'xl/sharedStrings.xml') yield* r._parseSharedStrings(part);
        else if (sheetNo !== undefined && r.sharedStrings && r.workbookRels) yield* r._parseWorksheet(budget.rows(part), sheetNo);
        else if (sheetNo !== undefined) {
          const spool = { sheetNo, fd: openScratchFile('sheet') as number | undefined };
          waiting.push(spool);
          // Written here, not by a WriteStream: one that is destroyed closes the descriptor itself.
          for await (const chunk of part as AsyncIterable<Buffer>) writeAll(spool.fd!, chunk);
        }
        // Whatever was not read (other parts, a sheet not asked for) still inflates, and counts.
        part.resume();
        await ended;
      }
      for (const spool of waiting) {
        reading = createReadStream('', { fd: spool.fd!, start: 0, autoClose: true });
        spool.fd = undefined; // the stream closes it
        yield* r._parseWorksheet(budget.rows(reading), spool.sheetNo);
      }
    } finally {
      // The stream owns its descriptor: closed (asynchronously) once destroyed; waited for here.
      if (reading && !reading.closed) await new Promise((resolve) => reading!.once('close', resolve).destroy());
      for (const spool of waiting) if (spool.fd !== undefined) closeSync(spool.fd);
      zip.destroy();
    }
  };
}

function writeAll(fd: number, chunk: Buffer): void {
  for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off, chunk.length - off);
}
