// What a spreadsheet program wrote, as UTF-8 text: the encoding is decided on the first bytes
// (a BOM, or --encoding), the delimiter on the header line; the rest streams through unchanged
// (UTF-8) or through iconv-lite's streaming decoder, so memory stays flat however large the file.
import { isUtf8 } from 'node:buffer';
import iconv from 'iconv-lite';
import { ProvisionError } from '../common/errors.js';

export type Delimiter = ',' | ';' | '\t';
export const DELIMITERS: readonly Delimiter[] = [',', ';', '\t'];

/** What was read, for the ingest summary and the plan. */
export interface InputInfo {
  format: 'csv' | 'xlsx';
  /** csv: utf-8, utf-8 with BOM, utf-16le, utf-16be, or the --encoding given. */
  encoding?: string;
  delimiter?: Delimiter;
  /** xlsx: the sheet read. */
  sheet?: string;
  /** Rows whose cells are all blank (Excel's trailing `,,,,`): skipped, not rejected. */
  emptyRows: number;
  /** The header's line, when it is not the first (the lines above it, a title, were skipped). */
  headerLine?: number;
  /** Headings read as a column under another spelling (an alias, or --map), in header order. */
  renamed?: { heading: string; column: string }[];
}

export const newInputInfo = (): InputInfo => ({ format: 'csv', emptyRows: 0 });

/** The file as a whole can't be read (no header, bad header, wrong encoding): nothing in it is ingested. */
export class CsvFormatError extends ProvisionError {
  override readonly name: string = 'CsvFormatError';
  readonly code = 'CSV_FORMAT';
  override readonly httpStatus = 400;
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`line ${line}: ${message}`);
  }
}

export const delimiterName = (d: Delimiter): string => (d === '\t' ? 'TAB' : `"${d}"`);
/** How to pass it on the command line. */
export const delimiterFlag = (d: Delimiter): string => `--delimiter ${d === '\t' ? 'tab' : `'${d}'`}`;

/** In words, for the ingest summary and the plan: "CSV, UTF-8 with BOM, ";"-separated; skipped 3 empty rows". */
export function describeInput(info: InputInfo): string {
  const what =
    info.format === 'xlsx'
      ? `.xlsx, sheet "${info.sheet ?? ''}"`
      : `CSV, ${info.encoding ?? 'utf-8'}, ${info.delimiter ? delimiterName(info.delimiter) : '","'}-separated`;
  const parts = [what];
  if (info.headerLine !== undefined && info.headerLine > 1)
    parts.push(`header on line ${info.headerLine} (line${info.headerLine > 2 ? `s 1-${info.headerLine - 1}` : ' 1'} above it skipped)`);
  if (info.renamed?.length)
    parts.push(`columns ${info.renamed.map((r) => `${JSON.stringify(r.heading.slice(0, 40))} as ${r.column}`).join(', ')}`);
  if (info.emptyRows > 0) parts.push(`skipped ${info.emptyRows} empty row${info.emptyRows === 1 ? '' : 's'}`);
  return parts.join('; ');
}

/** The delimiter a header line uses: the most frequent of , ; TAB outside quotes (`,` if none). */
export function detectDelimiter(headerLine: string): Delimiter {
  const counts = new Map<Delimiter, number>(DELIMITERS.map((d) => [d, 0]));
  let quoted = false;
  for (const ch of headerLine) {
    if (ch === '"') quoted = !quoted;
    else if (!quoted && counts.has(ch as Delimiter)) counts.set(ch as Delimiter, counts.get(ch as Delimiter)! + 1);
  }
  let best: Delimiter = ',';
  for (const d of DELIMITERS) if (counts.get(d)! > counts.get(best)!) best = d;
  return best;
}

// Bytes Windows-1252 leaves undefined: a file holding one is not Windows-1252.
const NOT_1252 = new Set([0x81, 0x8d, 0x8f, 0x90, 0x9d]);
const looks1252 = (buf: Buffer) => !buf.some((b) => NOT_1252.has(b));
const ZIP = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

export type Start = { kind: 'zip'; chunks: AsyncIterable<Buffer> } | { kind: 'text'; chunks: AsyncIterable<Buffer> };

/**
 * The next chunks of `it` as one buffer: at least one, then more until `enough` (given the last
 * chunk and the bytes so far) says so or the input ends. The rest stays unread in `it`.
 */
export async function gather(it: AsyncIterator<Buffer | string>, enough: (chunk: Buffer, total: number) => boolean): Promise<Buffer> {
  const got: Buffer[] = [];
  let n = 0;
  for (;;) {
    const next = await it.next();
    if (next.done) break;
    const b = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    got.push(b);
    n += b.length;
    if (enough(b, n)) break;
  }
  return Buffer.concat(got);
}

/**
 * The input's first bytes (enough for a BOM, a zip signature or an OpenDocument's type: at least
 * `bytes` unless the input is shorter) and then the rest, unread.
 */
export async function peek(
  input: AsyncIterable<Buffer | string>,
  bytes = 4,
): Promise<{ head: Buffer; rest: AsyncIterator<Buffer | string> }> {
  const it = input[Symbol.asyncIterator]();
  return { head: await gather(it, (_chunk, n) => n >= bytes), rest: it };
}

export const isZip = (head: Buffer): boolean => head.subarray(0, 4).equals(ZIP);

/**
 * The text as UTF-8 bytes without a BOM. `info.encoding` says what it was. Invalid UTF-8 that
 * reads as Windows-1252 refuses the file (CsvFormatError) at the first such byte: the ingest's
 * transaction then records nothing; other invalid bytes stay and fail their own row.
 */
export async function* utf8Text(
  head: Buffer,
  rest: AsyncIterator<Buffer | string>,
  opts: { encoding?: string },
  info: InputInfo,
): AsyncGenerator<Buffer> {
  async function* chunks(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    for (let next = await rest.next(); !next.done; next = await rest.next())
      yield typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
  }
  const bom16 = head[0] === 0xff && head[1] === 0xfe ? 'utf-16le' : head[0] === 0xfe && head[1] === 0xff ? 'utf-16be' : undefined;
  const encoding = opts.encoding ?? bom16;
  if (encoding !== undefined && !iconv.encodingExists(encoding))
    throw new CsvFormatError(1, `unknown encoding "${encoding}" (e.g. windows-1252, iso-8859-1, utf-16le)`);
  if (encoding !== undefined && !/^utf-?8$/i.test(encoding)) {
    info.encoding = encoding;
    const decoder = iconv.getDecoder(encoding);
    let first = true;
    for await (const chunk of chunks()) {
      let s = decoder.write(chunk);
      if (first && s.length > 0) {
        s = s.replace(/^\ufeff/, '');
        first = false;
      }
      if (s.length > 0) yield Buffer.from(s);
    }
    const end = decoder.end();
    if (end) yield Buffer.from(end);
    return;
  }
  const bom = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf;
  info.encoding = bom ? 'utf-8 with BOM' : 'utf-8';
  let lines = 0;
  let carry: Buffer = Buffer.alloc(0);
  let checked = false; // once a non-1252 invalid byte was let through, the file is not refused later
  let skip = bom ? 3 : 0;
  for await (const raw of chunks()) {
    let chunk: Buffer = carry.length > 0 ? Buffer.concat([carry, raw]) : raw;
    if (skip > 0) {
      const cut = Math.min(skip, chunk.length);
      chunk = chunk.subarray(cut);
      skip -= cut;
    }
    const end = completeUpTo(chunk);
    const body = chunk.subarray(0, end);
    carry = Buffer.from(chunk.subarray(end));
    if (!checked && !isUtf8(body)) {
      if (looks1252(body)) throw windows1252(lines, body);
      checked = true;
    }
    if (!checked) lines += countLines(body);
    if (body.length > 0) yield body;
  }
  if (carry.length > 0) {
    if (!checked && looks1252(carry)) throw windows1252(lines, carry);
    yield carry;
  }
}

function windows1252(linesBefore: number, body: Buffer): CsvFormatError {
  const text = body.toString('utf8');
  const at = text.indexOf('\ufffd');
  const line = linesBefore + 1 + (at < 0 ? 0 : text.slice(0, at).split('\n').length - 1);
  return new CsvFormatError(
    line,
    'the file is not UTF-8; this looks like Windows-1252: re-save as CSV UTF-8 or pass `--encoding windows-1252` ' +
      "(library: encoding: 'windows-1252'); nothing was read",
  );
}

function countLines(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(0x0a); i !== -1; i = buf.indexOf(0x0a, i + 1)) n++;
  return n;
}

/** Where the last complete UTF-8 sequence ends (a multi-byte character may straddle two chunks). */
function completeUpTo(buf: Buffer): number {
  for (let back = 1; back <= Math.min(3, buf.length); back++) {
    const b = buf[buf.length - back]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back
    if (b < 0x80) return buf.length;
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? buf.length - back : buf.length;
  }
  return buf.length;
}
