// The batches list: every batch of this Dify, newest first; change batches (apply) beside
// provisioning ones (ingest), each with the outcomes of its kind.
import { api, el } from './dom.js';
import type { Listing } from './types.js';
import { bar, header, kindTag, outcomesText, stateTag, when } from './widgets.js';

export async function batchesPage(app: HTMLElement): Promise<void> {
  const [list, info] = await Promise.all([api<Listing[]>('/api/batches'), header()]);
  const rows = list.map((b) =>
    el(
      'tr',
      { 'data-batch': b.batchId, 'data-kind': b.kind },
      el('td', {}, el('a', { href: '/batches/' + encodeURIComponent(b.batchId), text: b.batchId })),
      el('td', {}, kindTag(b.kind)),
      el('td', { text: b.source ?? '' }),
      el('td', { class: 'when', text: when(b.createdAt) }),
      el('td', { text: String(b.total) }),
      el('td', { text: outcomesText(b) }),
      el('td', {}, bar(b)),
      el('td', {}, stateTag(b.state)),
    ),
  );
  const stalled = list.some((b) => b.state === 'stalled');
  const heads = ['batch', 'kind', 'file', 'created at (UTC)', 'rows', 'outcomes', 'progress', 'state'].map((h) => el('th', { text: h }));
  app.replaceChildren(
    el('h2', { text: 'Batches' }),
    ...(stalled && !info.redisUnreachable
      ? [el('div', { class: 'advice', id: 'advice', text: 'Some batches are stalled: ' + info.noWorker })]
      : []),
    list.length
      ? el('table', {}, el('tr', {}, ...heads), ...rows)
      : el('p', {
          class: 'muted',
          text: 'No batches yet: New batch (above), dify-provision ingest FILE, or dify-provision apply FILE (changes).',
        }),
  );
}
