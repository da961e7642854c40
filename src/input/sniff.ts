// What a file is, by its first bytes rather than its name: the formats we read (CSV text, an .xlsx
// zip) and the ones people send that we refuse by name, with what to do instead, instead of
// reading their bytes as a header. Legacy .xls (an OLE2 compound file) and OpenDocument .ods are
// refused: the one npm library that reads them (SheetJS) holds the whole workbook in memory and
// its npm releases are years behind its fixes, so neither fits our bounded, streamed reading.
import { CsvFormatError } from './decode.js';

/** Bytes read before deciding (an OpenDocument's mimetype entry ends within them). */
export const SNIFF_BYTES = 128;

const OLE2 = Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]);
const ZIP = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

export type Sniffed =
  | { kind: 'xlsx' }
  | { kind: 'text' }
  /** A file we know and refuse: what it is, in words, and what to do. */
  | { kind: 'refused'; what: string; instead: string };

const SAVE = 'save it as .xlsx (Excel Workbook) or CSV UTF-8 and ingest that';

/** A file's kind from its first bytes (at least SNIFF_BYTES of them, unless the file is shorter). */
export function sniff(head: Buffer): Sniffed {
  if (head.subarray(0, 8).equals(OLE2)) {
    // An OLE2 compound file: Excel 97-2003's .xls, but also a password-protected .xlsx or a .doc.
    // Their stream names (UTF-16LE) are in the directory, usually near the start.
    const has = (name: string) => head.includes(Buffer.from(name, 'utf16le'));
    if (has('EncryptedPackage'))
      return { kind: 'refused', what: 'a password-protected (encrypted) Office file', instead: `remove its password, then ${SAVE}` };
    if (has('WordDocument')) return { kind: 'refused', what: 'a Word document (.doc), not a workbook', instead: SAVE };
    return { kind: 'refused', what: 'an Excel 97–2003 workbook (.xls, an OLE2 compound file)', instead: SAVE };
  }
  if (head.subarray(0, 4).equals(ZIP)) {
    const mimetype = openDocumentType(head);
    if (mimetype === 'application/vnd.oasis.opendocument.spreadsheet')
      return { kind: 'refused', what: 'an OpenDocument spreadsheet (.ods)', instead: SAVE };
    if (mimetype !== undefined) return { kind: 'refused', what: `an OpenDocument file (${mimetype}), not a workbook`, instead: SAVE };
    return { kind: 'xlsx' };
  }
  if (head.subarray(0, 5).toString('latin1') === '%PDF-') return { kind: 'refused', what: 'a PDF document', instead: SAVE };
  if (head[0] === 0x1f && head[1] === 0x8b) return { kind: 'refused', what: 'a gzip-compressed file', instead: 'decompress it first' };
  return { kind: 'text' };
}

/**
 * An OpenDocument file's type: its first zip entry is `mimetype`, stored uncompressed (the
 * OpenDocument specification, part 3, 3.3), so its content is right after the local header.
 */
function openDocumentType(head: Buffer): string | undefined {
  if (head.length < 30) return undefined;
  const method = head.readUInt16LE(8);
  const size = head.readUInt32LE(18);
  const nameLength = head.readUInt16LE(26);
  const extraLength = head.readUInt16LE(28);
  if (method !== 0 || nameLength !== 8 || head.subarray(30, 38).toString('latin1') !== 'mimetype' || size > 100) return undefined;
  const start = 30 + nameLength + extraLength;
  const type = head.subarray(start, start + size).toString('latin1');
  return /^application\/vnd\.oasis\.opendocument\.[a-z.-]+$/.test(type) ? type : undefined;
}

/** The file as a whole refused, naming what it is and what to do (CsvFormatError, line 1). */
export function refuseFile(sniffed: Extract<Sniffed, { kind: 'refused' }>, source: string | undefined): CsvFormatError {
  const name = source !== undefined ? `"${source}" is ` : 'the file is ';
  return new CsvFormatError(1, `${name}${sniffed.what}, which dify-provision does not read: ${sniffed.instead}; nothing was read`);
}
