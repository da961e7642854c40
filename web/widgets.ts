// Pieces shared by the console's pages: the state tag, the progress bar, the header line.
import { api, el } from './dom.js';
import type { Counts, Info, Kind } from './types.js';

const WORDS: Record<string, string> = {
  ingesting: 'ingesting',
  running: 'running',
  stalled: 'stalled: no worker',
  done: 'done',
  'done-with-failures': 'done with failures',
  cancelled: 'cancelled',
};

export const stateTag = (state: string, id?: string) =>
  el('span', { class: 'state ' + state, 'data-state': state, id, text: WORDS[state] ?? state });

type Progress = { total: number; counts: Counts };

/** Percent of the rows with their final answer. */
export const pct = (s: Progress) => (s.total === 0 ? 100 : Math.floor((100 * (s.total - s.counts.queued - s.counts.active)) / s.total));

/** Finished rows by kind, each in its colour: a batch with failures never looks like a clean one. */
export function bar(s: Progress, big = false): HTMLDivElement {
  const part = (n: number) => (s.total === 0 ? 0 : (100 * n) / s.total);
  const piece = (kind: string, width: number) => {
    const d = el('div', { class: kind });
    d.style.width = width + '%';
    return d;
  };
  const b = el(
    'div',
    { class: 'bar' + (big ? ' big' : ''), role: 'progressbar', 'aria-valuenow': String(pct(s)), id: big ? 'progress' : undefined },
    piece('ok', s.total === 0 ? 100 : part(s.counts.created + s.counts.existing + s.counts.applied + s.counts.unchanged)),
    ...(['failed', 'rejected', 'cancelled'] as const).map((o) => piece(o, part(s.counts[o]))),
  );
  if (big) b.append(el('span', { text: pct(s) + '%' }));
  return b;
}

/** A batch's finished rows in words: what its kind answers (created/existing, or applied/unchanged), then what went wrong. */
export const outcomesText = (b: { kind: Kind; counts: Counts }) =>
  (b.kind === 'changes'
    ? [b.counts.applied + ' applied', b.counts.unchanged + ' unchanged']
    : [b.counts.created + ' created', b.counts.existing + ' existing']
  )
    .concat([b.counts.failed + ' failed', b.counts.rejected + ' rejected'])
    .join(', ');

/** What a batch does, in a word. */
export const kindTag = (kind: Kind) =>
  el('span', { class: 'kind ' + kind, 'data-kind': kind, text: kind === 'changes' ? 'changes' : 'new workspaces' });

/** Every time the console shows, in one format: ISO 8601 in UTC, to the second (the API's, without the milliseconds). */
export const when = (iso: string | null | undefined): string => (iso ? new Date(iso).toISOString().replace(/\.\d{3}Z$/, 'Z') : '');

export const workersText = (n: number | null) => (n === null ? 'workers: unknown' : n === 1 ? '1 worker' : n + ' workers');

/** The header's line: which Dify, which queue, how many workers serve it now (or that Redis does not answer). */
export async function header(): Promise<Info> {
  const info = await api<Info>('/api/info');
  document.getElementById('serves')!.textContent =
    'Dify database "' +
    info.database +
    '" · queue ' +
    info.queue +
    ' · ' +
    (info.redisUnreachable ? info.redisAdvice : workersText(info.workers));
  // On every page while Redis does not answer: the counts are PostgreSQL's, and nothing moves.
  const banner = document.getElementById('redis-down')!;
  banner.textContent = info.redisAdvice;
  banner.hidden = !info.redisUnreachable;
  document.getElementById('board-link')!.title = info.boardNote;
  return info;
}
