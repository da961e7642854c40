// An .xlsx zip bomb: a valid workbook whose one part inflates to `inflated` bytes from a few
// hundred KiB. The big part is one chunk deflated with a full flush (a byte-aligned, self-contained
// run of deflate blocks), repeated: deflate allows that, so nothing of the size is ever in memory.
import { crc32, deflateRawSync, constants } from 'node:zlib';

interface Part {
  name: string;
  /** Stored as is. */
  text?: string;
  /** Deflated: head, `body` repeated `times`, tail. */
  bomb?: { head: string; body: string; times: number; tail: string };
}

function le(bytes: number, value: number): Buffer {
  const b = Buffer.alloc(bytes);
  if (bytes === 2) b.writeUInt16LE(value);
  else b.writeUInt32LE(value >>> 0);
  return b;
}

function zip(parts: Part[]): Uint8Array<ArrayBuffer> {
  const out: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const part of parts) {
    let data: Buffer;
    let crc: number;
    let size: number;
    let method: number;
    if (part.text !== undefined) {
      data = Buffer.from(part.text);
      crc = crc32(data);
      size = data.length;
      method = 0;
    } else {
      const { head, body, times, tail } = part.bomb!;
      const flush = { finishFlush: constants.Z_FULL_FLUSH };
      const block = deflateRawSync(Buffer.from(body), flush);
      data = Buffer.concat([
        deflateRawSync(Buffer.from(head), flush),
        ...Array<Buffer>(times).fill(block),
        deflateRawSync(Buffer.from(tail)),
      ]);
      crc = crc32(head);
      const b = Buffer.from(body);
      for (let i = 0; i < times; i++) crc = crc32(b, crc);
      crc = crc32(tail, crc);
      size = Buffer.byteLength(head) + b.length * times + Buffer.byteLength(tail);
      method = 8;
    }
    const name = Buffer.from(part.name);
    const common = [
      le(2, 20),
      le(2, 0),
      le(2, method),
      le(2, 0),
      le(2, 0),
      le(4, crc),
      le(4, data.length),
      le(4, size),
      le(2, name.length),
      le(2, 0),
    ];
    const local = Buffer.concat([le(4, 0x04034b50), ...common, name]);
    central.push(Buffer.concat([le(4, 0x02014b50), le(2, 20), ...common, le(2, 0), le(2, 0), le(2, 0), le(4, 0), le(4, offset), name]));
    out.push(local, data);
    offset += local.length + data.length;
  }
  const dir = Buffer.concat(central);
  const end = Buffer.concat([
    le(4, 0x06054b50),
    le(2, 0),
    le(2, 0),
    le(2, parts.length),
    le(2, parts.length),
    le(4, dir.length),
    le(4, offset),
    le(2, 0),
  ]);
  return new Uint8Array(Buffer.concat([...out, dir, end]));
}

const MAIN = 'http://schemas.openxmlformats.org/spreadsheetml/2006/main';
const REL = 'http://schemas.openxmlformats.org/officeDocument/2006/relationships';

/**
 * A workbook of one sheet (a header and one row) whose shared strings (`part: 'sharedStrings'`)
 * or sheet (`part: 'sheet'`, which then comes before the shared strings in the zip, as exceljs
 * spools to a temp file) inflate to about `inflated` bytes.
 */
export function xlsxBomb(part: 'sharedStrings' | 'sheet', inflated: number): Uint8Array<ArrayBuffer> {
  const chunk = (unit: string) => {
    const body = unit.repeat(Math.ceil((64 << 10) / unit.length));
    return { body, times: Math.ceil(inflated / body.length) };
  };
  const rowXml = (r: number) => `<row r="${r}"><c r="A${r}" t="s"><v>${2 * r - 2}</v></c><c r="B${r}" t="s"><v>${2 * r - 1}</v></c></row>`;
  const strings = `<si><t>workspace_name</t></si><si><t>owner_email</t></si><si><t>Acme</t></si><si><t>owner1@example.com</t></si>`;
  const sheetHead = `<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="${MAIN}"><sheetData>${rowXml(1)}${rowXml(2)}`;
  const sheet: Part =
    part === 'sheet'
      ? { name: 'xl/worksheets/sheet1.xml', bomb: { head: sheetHead, ...chunk('<row r="3"/>'), tail: '</sheetData></worksheet>' } }
      : { name: 'xl/worksheets/sheet1.xml', text: `${sheetHead}</sheetData></worksheet>` };
  const shared: Part =
    part === 'sharedStrings'
      ? {
          name: 'xl/sharedStrings.xml',
          bomb: {
            head: `<?xml version="1.0" encoding="UTF-8"?><sst xmlns="${MAIN}">${strings}`,
            ...chunk(`<si><t>${'A'.repeat(1000)}</t></si>`),
            tail: '</sst>',
          },
        }
      : { name: 'xl/sharedStrings.xml', text: `<?xml version="1.0" encoding="UTF-8"?><sst xmlns="${MAIN}">${strings}</sst>` };
  return zip([
    {
      name: '[Content_Types].xml',
      text: `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>`,
    },
    {
      name: 'xl/workbook.xml',
      text: `<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="${MAIN}" xmlns:r="${REL}"><sheets><sheet name="Customers" sheetId="1" r:id="rId1"/></sheets></workbook>`,
    },
    {
      name: 'xl/_rels/workbook.xml.rels',
      text: `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="${REL}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`,
    },
    ...(part === 'sheet' ? [sheet, shared] : [shared, sheet]),
  ]);
}
