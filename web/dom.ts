// Small helpers for the console's pages: elements built with every value set as text, never as
// HTML (workspace names are whatever the CSV said), and the dashboard's JSON API.

/** A session made from a read-only token (status and reports only): the server marks its page so. */
export const readOnly = document.documentElement.dataset['role'] === 'read';

type Child = Node | string;
type Attrs = { text?: string } & Record<string, string | ((e: Event) => unknown) | undefined>;

/** An element with attributes, `text` as its text, `on…` as listeners, and children. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...kids: Child[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined) continue;
    if (k === 'text') e.textContent = v as string;
    else if (typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';
/** An SVG element with its attributes. */
export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

export const SESSION_ENDED = 'This session has ended (sessions last an hour): open the dashboard address with ?token=… again.';

/** The header every request from this page carries: a state change without it is refused (CSRF). */
export const SAME_PAGE = { 'x-requested-with': 'dify-provision' };

const call = (path: string, opts: RequestInit) =>
  fetch(path, { credentials: 'same-origin', ...opts, headers: { ...SAME_PAGE, ...(opts.headers as Record<string, string>) } });

/** A JSON answer of the dashboard, or an error that says what went wrong. */
export async function api<T>(path: string, opts: RequestInit = {}): Promise<T> {
  const r = await call(path, opts);
  if (r.status === 401) throw new Error(SESSION_ENDED);
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return (await r.json()) as T;
}

/** A row's problems, by line, as /api/v1 lists them in an error. */
export interface RowProblems {
  line: number;
  errors: { field: string; message: string }[];
}

/** /api/v1's error body ({ error: { code, message, rows? } }), thrown. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly rows: RowProblems[] = [],
  ) {
    super(message);
  }
}

/** A JSON answer of /api/v1, or its error as an ApiError. */
export async function apiV1<T>(path: string, opts: RequestInit = {}): Promise<T> {
  const r = await call('/api/v1' + path, opts);
  if (r.status === 401) throw new ApiError(401, 'UNAUTHORIZED', SESSION_ENDED);
  const body = (await r.json().catch(() => null)) as { error?: { code: string; message: string; rows?: RowProblems[] } } | null;
  if (!r.ok) {
    const error = body?.error;
    throw new ApiError(r.status, error?.code ?? 'HTTP_' + r.status, error?.message ?? path + ': ' + r.status, error?.rows);
  }
  return body as T;
}

/** The ingest options the API takes (name → kind), for consoleWords: filled once from /api/ingest-options. */
export const optionKinds = new Map<string, string>();

/** The CLI's flags whose option has another name in the API (and on New batch). */
const FLAG_OPTIONS: Record<string, string> = { map: 'column_map' };

/**
 * A message in the console's words: the library's errors give the CLI's advice ("pass
 * `--encoding windows-1252`", "--allow-duplicate-names (library: allowDuplicateNames)", "`retry`");
 * here an option of New batch is named as it is on the page ("set encoding to windows-1252", "tick
 * allow duplicate names"), a command the page has a button for by its button ("retry" the row's,
 * "Queue cancelled rows again" the batch's; --trust-account the row's retry) and the library's names are left out. Other flags (the dashboard's own
 * --max-bytes) stay as they are: they are the operator's.
 */
export function consoleWords(message: string): string {
  return (
    message
      // The CLI's retry is a button here: the row's own, the selection's, or the batch's.
      .replace(/`(?:dify-provision )?retry --cancelled(?: BATCH)?`/g, '"Queue cancelled rows again" (the batch\'s button)')
      .replace(/`(?:dify-provision )?retry`/g, '"retry" (the row\'s button, or "Retry failed rows")')
      // The pre-claim guard's --trust-account: the row's retry offers it (batch.ts trustPanel).
      .replace(/ \(--trust-account [^\s)]+\)/g, ' (the row\'s "retry" offers to trust it)')
      .replace(/ \(library: [^)]*\)/g, '')
      .replace(/; library: [^)]*\)/g, ')')
      .replace(
        /(?:\bpass )?`?--([a-z][a-z0-9-]*)(?: ('[^']*'|"[^"]*"|[^\s`;,)]+))?`?/g,
        (all: string, flag: string, value: string | undefined) => {
          const name = FLAG_OPTIONS[flag] ?? flag.replace(/-/g, '_');
          const kind = optionKinds.get(name);
          if (kind === undefined) return all;
          const words = name.replace(/_/g, ' ');
          // A box takes no value: what followed the flag is the sentence's.
          if (kind === 'boolean') return `tick "${words}" (options above)${value === undefined ? '' : ' ' + value}`;
          if (value === undefined) return `"${words}" (options above)`;
          const v = value.replace(/^['"]|['"]$/g, '');
          if (kind === 'map') return `a line ${v} in "${words}" (options above)`;
          return `set "${words}" to ${v === 'tab' ? 'tab' : v} (options above)`;
        },
      )
  );
}
