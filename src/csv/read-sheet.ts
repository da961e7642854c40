// An .xlsx workbook read as it streams (exceljs's streaming WorkbookReader): one sheet's rows, each
// cell as text the way the sheet shows it, with the sheet's own row numbers. The workbook is never
// held whole: the zip is inflated entry by entry, rows are parsed as SAX events (a sheet that comes
// before the shared strings in the zip is spooled to a temporary file, not to memory).
import { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { Cell, CellValue } from 'exceljs';
import { CsvFormatError, type InputInfo } from './decode.js';
import type { ReadOptions, RecordItem } from './read-rows.js';

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
  const reader = new ExcelJS.stream.xlsx.WorkbookReader(input, {
    worksheets: 'emit',
    sharedStrings: 'cache',
    // Styles give each cell its number format (a date, a zero-padded id); hyperlinks are not needed.
    styles: 'cache',
    hyperlinks: 'ignore',
    entries: 'ignore',
  });
  utf8Safe(reader);
  const seen: string[] = [];
  try {
    for await (const sheet of reader) {
      const name = (sheet as unknown as { name?: string }).name ?? `Sheet${seen.length + 1}`;
      seen.push(name);
      if (opts.sheet !== undefined && name !== opts.sheet) continue;
      info.sheet = name;
      let width = 0;
      for await (const row of sheet) {
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
