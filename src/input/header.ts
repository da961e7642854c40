// A header row as people write it: our column names, or the common spellings of them (a written
// alias table, compared language-neutrally: case-folded, accents and punctuation dropped), or a
// heading the operator maps (--map "Owner E-mail=owner_email"). A heading that is none of these
// is unknown (refused unless ignored), with "did you mean" for a near miss. What an error echoes
// of a heading is escaped and cut short: a binary file's first "row" never reaches a terminal or
// a page whole.
import type { Column } from './workspace-row.js';

/**
 * A heading's comparable form: compatibility-decomposed, accents dropped, case-folded, only its
 * letters and digits kept ("Owner E-mail", "owner_email" and "OWNER EMAIL" are all "owneremail").
 */
export function headingKey(cell: string): string {
  return cell
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toUpperCase() // ß → SS, then ss: a case fold
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, '');
}

/**
 * Other spellings of each column, as spreadsheets and CRM exports write them (compared by
 * headingKey, so "E-Mail", "e_mail" and "Email" are one entry). An alias names one column only:
 * a heading that could be two (a bare "Name" or "ID") is not here, and --map says which.
 */
export const COLUMN_ALIASES: Readonly<Record<Column, readonly string[]>> = {
  workspace_name: [
    'Workspace',
    'Workspace title',
    'Tenant',
    'Tenant name',
    'Company',
    'Company name',
    'Customer',
    'Customer name',
    'Client',
    'Client name',
    'Organization',
    'Organization name',
    'Organisation',
    'Organisation name',
    'Org',
    'Org name',
    'Team',
    'Team name',
    'Account name',
    'Entreprise', // fr
    'Firma', // de
    'Empresa', // es, pt
    'Espace de travail', // fr
  ],
  owner_email: [
    'Email',
    'Email address',
    'Mail',
    'Mail address',
    'Owner mail',
    'Owner email address',
    'Owner address',
    'Admin email',
    'Administrator email',
    'Contact email',
    'Customer email',
    'Primary email',
    'Courriel', // fr
    'Adresse email', // fr
    'Email adresse', // de
    'Emailadresse', // de (E-Mail-Adresse)
    'Correo', // es
    'Correo electronico', // es
  ],
  plan: ['Tier', 'Subscription', 'Subscription plan', 'Plan name', 'Pricing plan'],
  members: ['Users', 'Team members', 'Member emails', 'Members emails', 'Invitees'],
  external_id: [
    'Customer ID',
    'Customer number',
    'Customer no',
    'Client ID',
    'Account ID',
    'CRM ID',
    'External reference',
    'Reference',
    'Ref',
  ],
  workspace_id: ['Tenant ID', 'Workspace UUID', 'Tenant UUID'],
  dataset_api_key: ['Dataset key', 'Mint dataset key', 'Mint API key', 'Knowledge API key'],
  owner_name: ['Owner name', 'Owner full name', 'Full name', 'Contact name', 'Display name'],
  owner_language: ['Language', 'Interface language', 'Owner language', 'Locale', 'Owner locale', 'Lang', 'Langue', 'Sprache', 'Idioma'],
  owner_timezone: ['Timezone', 'Time zone', 'Owner timezone', 'Owner time zone', 'TZ', 'Fuseau horaire', 'Zeitzone', 'Zona horaria'],
};

/** What a kind of file calls its columns: their names, and other spellings of them. */
export interface Vocabulary {
  columns: readonly string[];
  aliases?: Readonly<Record<string, readonly string[]>>;
}

const known = new WeakMap<Vocabulary, ReadonlyMap<string, string>>();

/** Every comparable spelling → its column: the columns' own names first, then the aliases. */
function spellings(kind: Vocabulary): ReadonlyMap<string, string> {
  let map = known.get(kind);
  if (map) return map;
  const m = new Map<string, string>();
  for (const c of kind.columns) m.set(headingKey(c), c);
  for (const [c, aliases] of Object.entries(kind.aliases ?? {}))
    for (const alias of aliases) {
      const key = headingKey(alias);
      const had = m.get(key);
      if (had !== undefined && had !== c) throw new Error(`alias "${alias}" names both ${had} and ${c}`);
      m.set(key, c);
    }
  known.set(kind, (map = m));
  return map;
}

/** Headings the operator maps to columns (--map "Heading=column"); `-` drops the column. */
export type ColumnMap = Readonly<Record<string, string>>;

/** Why a --map entry can't be used with this kind of file (undefined when it can). */
export function mapEntryProblem(kind: Vocabulary, heading: string, column: string): string | undefined {
  if (headingKey(heading) === '') return `"${heading}" is not a heading (it has no letters or digits)`;
  if (column === '-') return undefined;
  if (!kind.columns.includes(column)) {
    const near = nearest(kind, headingKey(column));
    return `"${column}" is not a column${near ? ` (did you mean ${near}?)` : ''}: the columns are ${kind.columns.join(', ')}, or - to drop it`;
  }
  return undefined;
}

/** What a heading is read as: a column, dropped on purpose (mapped to -), or unknown (with a near miss). */
export type Heading = { column: string; as?: 'alias' | 'map' } | { dropped: true } | { unknown: true; suggestion?: string };

export function readHeading(kind: Vocabulary, cell: string, map: ColumnMap | undefined): Heading {
  const key = headingKey(cell);
  if (map) {
    for (const [heading, column] of Object.entries(map)) {
      if (headingKey(heading) !== key) continue;
      return column === '-' ? { dropped: true } : { column, as: 'map' };
    }
  }
  const column = spellings(kind).get(key);
  if (column !== undefined) return key === headingKey(column) ? { column } : { column, as: 'alias' };
  const suggestion = key === '' ? undefined : nearest(kind, key);
  return suggestion ? { unknown: true, suggestion } : { unknown: true };
}

/** The column whose spelling is nearest to `key`, when near enough to be a typo. */
function nearest(kind: Vocabulary, key: string): string | undefined {
  if (key.length < 3) return undefined;
  let best: { column: string; distance: number } | undefined;
  for (const [spelling, column] of spellings(kind)) {
    const d = editDistance(key, spelling, 3);
    if (best === undefined || d < best.distance) best = { column, distance: d };
  }
  // About one slip in four characters, at most 3.
  return best && best.distance <= Math.min(3, Math.max(1, Math.floor(key.length / 4))) ? best.column : undefined;
}

/** Levenshtein distance (insert, delete, substitute, and a swap of neighbours), cut at max + 1. */
export function editDistance(a: string, b: string, max = Infinity): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, j) => j)];
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let least = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, row[j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      row.push(d);
      least = Math.min(least, d);
    }
    if (least > max) return max + 1;
    rows.push(row);
  }
  return rows[a.length]![b.length]!;
}

/** At most this many characters of a heading are echoed in a message. */
const SHOWN_CHARS = 40;

/** A heading as a message quotes it: control and invisible characters escaped, at most 40 characters. */
export function shownHeading(cell: string): string {
  const chars = [...cell.trim()];
  const cut = chars.length > SHOWN_CHARS;
  const text = chars
    .slice(0, SHOWN_CHARS)
    .map((ch) => (/[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}\ufffd]/u.test(ch) ? escapeChar(ch) : ch))
    .join('');
  return `"${text}${cut ? '…' : ''}"`;
}

const escapeChar = (ch: string) => {
  const cp = ch.codePointAt(0)!;
  return cp <= 0xffff ? `\\u${cp.toString(16).padStart(4, '0')}` : `\\u{${cp.toString(16)}}`;
};

/** A row that is no header at all: control characters or bytes that were not text (a binary file). */
export function looksBinary(record: readonly string[]): boolean {
  return record.some((cell) => /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffd]/.test(cell));
}
