// One batch, live: progress, counts, completions over time, the rows a page at a time, and the
// actions that apply (retry failed rows, cancel waiting ones, queue cancelled ones again). A change
// batch (apply) shows its own outcomes (applied, unchanged) and each row's action, person and detail.
import { api, el, readOnly, svg } from './dom.js';
import { OUTCOMES_OF, type Row, type RowsPage, type Status } from './types.js';
import { bar, header, kindTag, stateTag, workersText } from './widgets.js';

/** What the page shows across refreshes: the outcome filter, the pages seen, the last notice. */
const view = { outcome: '', pages: [0], notice: '' };

const eta = (s: number | null) =>
  s === null
    ? '?'
    : s < 60
      ? Math.ceil(s) + 's'
      : s < 3600
        ? Math.floor(s / 60) + 'm' + String(Math.ceil(s % 60)).padStart(2, '0') + 's'
        : Math.floor(s / 3600) + 'h' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';

function chart(tl: Status['throughput']): SVGSVGElement {
  const w = 600;
  const h = 120;
  const max = Math.max(1, ...tl.timeline.map((p) => p.n));
  const chart = svg('svg', { width: w, height: h, id: 'chart' });
  const bw = w / Math.max(tl.timeline.length, 1);
  tl.timeline.forEach((p, i) => {
    const bh = ((h - 20) * p.n) / max;
    chart.append(svg('rect', { x: i * bw + 1, y: h - bh, width: Math.max(bw - 2, 1), height: bh, fill: '#4c6ef5' }));
  });
  const t = svg('text', { x: 6, y: 14, 'font-size': 11 });
  t.textContent = 'rows finished per ' + tl.bucketSeconds + ' s (peak ' + max + ')';
  chart.append(t);
  return chart;
}

type Column = [heading: string, cell: (r: Row) => HTMLTableCellElement];
const text = (f: (r: Row) => string | null | number, cls?: string) => (r: Row) => el('td', { class: cls, text: String(f(r) ?? '') });
const outcome = (r: Row) => el('td', {}, el('span', { class: 'pill ' + r.outcome, text: r.outcome }));

const PROVISION_COLUMNS: Column[] = [
  ['line', text((r) => r.line)],
  ['workspace', text((r) => r.workspaceName)],
  ['owner', text((r) => r.ownerEmail)],
  ['outcome', outcome],
  ['tenant id', text((r) => r.tenantId, 'id')],
  ['attempts', text((r) => r.attempts)],
  ['API key', text((r) => r.apiKey)],
  ['error', text((r) => r.error, 'err')],
];

/** A change row: its workspace (id, or the external_id it names), person, role or new name, and why it is as it is. */
const CHANGE_COLUMNS: Column[] = [
  ['line', text((r) => r.line)],
  ['action', text((r) => r.action, 'action')],
  ['workspace', text((r) => r.tenantId ?? r.externalId, 'id')],
  ['person', text((r) => r.ownerEmail)],
  ['role / name', text((r) => r.role ?? r.workspaceName)],
  ['outcome', outcome],
  ['attempts', text((r) => r.attempts)],
  ['detail', text((r) => r.error, 'err')],
];

export async function batchPage(app: HTMLElement, id: string, render: () => void): Promise<void> {
  const enc = encodeURIComponent(id);
  const after = view.pages[view.pages.length - 1];
  const [s, page, info] = await Promise.all([
    api<Status>('/api/batches/' + enc),
    api<RowsPage>('/api/batches/' + enc + '/rows?limit=50&after=' + after + (view.outcome ? '&outcome=' + view.outcome : '')),
    header(),
  ]);
  const outcomes = OUTCOMES_OF[s.kind] ?? OUTCOMES_OF.provision;
  const counts = outcomes.map((o) => el('div', { class: o, id: 'count-' + o }, el('b', { text: String(s.counts[o]) }), o));
  const filter = el(
    'select',
    {
      id: 'filter',
      onchange: (e) => {
        view.outcome = (e.target as HTMLSelectElement).value;
        view.pages = [0];
        render();
      },
    },
    ...['', ...outcomes].map((o) => {
      const opt = el('option', { value: o, text: o || 'all outcomes' });
      opt.selected = o === view.outcome;
      return opt;
    }),
  );
  const act = (what: string) => async (e: Event) => {
    const button = e.target as HTMLButtonElement;
    button.disabled = true;
    try {
      const r = await api<{ message: string }>('/api/batches/' + enc + '/' + what, { method: 'POST' });
      view.notice = r.message;
    } finally {
      button.disabled = false;
      render();
    }
  };
  const columns = s.kind === 'changes' ? CHANGE_COLUMNS : PROVISION_COLUMNS;
  const table = el(
    'table',
    { id: 'rows' },
    el('tr', {}, ...columns.map(([h]) => el('th', { text: h }))),
    ...page.rows.map((r) => el('tr', { 'data-outcome': r.outcome, 'data-line': String(r.line) }, ...columns.map(([, cell]) => cell(r)))),
  );
  const prev = el('button', {
    id: 'prev',
    text: '← previous',
    onclick: () => {
      view.pages.pop();
      render();
    },
  });
  prev.disabled = view.pages.length < 2;
  const next = el('button', {
    id: 'next',
    text: 'next →',
    onclick: () => {
      view.pages.push(page.rows[page.rows.length - 1]!.line);
      render();
    },
  });
  next.disabled = !page.more;
  // A rate and an ETA only while workers are answering rows.
  const pace =
    s.state === 'running' || s.state === 'ingesting'
      ? [
          el('span', { id: 'rate', text: s.throughput.perSecond.toFixed(1) + ' rows/s' }),
          el('span', { id: 'eta', text: 'ETA ' + eta(s.throughput.etaSeconds) }),
        ]
      : [];
  // Buttons only where they apply, and none for a read-only session.
  const buttons = readOnly
    ? []
    : [
        ...(s.counts.failed > 0 ? [el('button', { id: 'retry', text: 'Retry failed rows', onclick: act('retry') })] : []),
        ...(s.counts.queued > 0 ? [el('button', { id: 'cancel', text: 'Cancel waiting rows', onclick: act('cancel') })] : []),
        ...(s.counts.cancelled > 0 ? [el('button', { id: 'resume', text: 'Queue cancelled rows again', onclick: act('resume') })] : []),
      ];
  const first = page.rows[0];
  const last = page.rows[page.rows.length - 1];
  const shown = !first || !last ? 'no rows' : 'lines ' + first.line + '–' + last.line + (page.more ? ', more after' : '');
  app.replaceChildren(
    el(
      'h2',
      { text: (s.kind === 'changes' ? 'Change batch ' : 'Batch ') + s.batchId + ' ' },
      kindTag(s.kind),
      ' ',
      stateTag(s.state, 'state'),
    ),
    ...(s.advice ? [el('div', { class: 'advice', id: 'advice', text: s.advice })] : []),
    bar(s, true),
    el(
      'div',
      { class: 'row' },
      ...pace,
      el('span', { class: 'muted', text: s.finished + ' of ' + s.total + ' rows finished · ' + workersText(s.workers) }),
    ),
    el('div', { class: 'counts' }, ...counts),
    chart(s.throughput),
    el(
      'div',
      { class: 'row' },
      ...buttons,
      el('a', { href: '/api/batches/' + enc + '/report.csv', text: 'report.csv' }),
      el('a', { href: '/api/batches/' + enc + '/report.json', text: 'report.json' }),
      el('span', { id: 'notice', class: 'muted', text: view.notice }),
    ),
    el('div', { class: 'row' }, filter, prev, next, el('span', { class: 'muted', id: 'shown', text: shown })),
    table,
    el('p', { class: 'muted', id: 'board-note', text: info.boardNote }),
  );
}
