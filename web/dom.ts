// Small helpers for the console's pages: elements built with every value set as text, never as
// HTML (workspace names are whatever the CSV said), and the dashboard's JSON API.

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

/** A JSON answer of the dashboard, or an error that says what went wrong. */
export async function api<T>(path: string, opts: RequestInit = {}): Promise<T> {
  const r = await fetch(path, {
    credentials: 'same-origin',
    ...opts,
    headers: { ...SAME_PAGE, ...(opts.headers as Record<string, string>) },
  });
  if (r.status === 401) throw new Error(SESSION_ENDED);
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return (await r.json()) as T;
}
