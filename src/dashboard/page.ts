// The dashboard's one page: a small script renders the batches list or a batch from the JSON API
// and refreshes it every second. Every value is set as text, never as HTML (workspace names are
// whatever the CSV said).
export const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dify-provision</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
 header{background:#1f2933;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
 header a{color:#cbd2d9;text-decoration:none} header b{font-size:16px}
 main{padding:16px 20px;max-width:1200px}
 table{border-collapse:collapse;width:100%;background:#fff} th,td{padding:5px 8px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
 th{background:#e4e7eb;font-weight:600} td.err{color:#b42318;max-width:420px} td.id{font-family:ui-monospace,monospace;font-size:12px;white-space:nowrap}
 .bar{background:#e4e7eb;border-radius:4px;height:14px;min-width:120px;position:relative;overflow:hidden}
 .bar{display:flex} .bar>div{height:100%} .bar .ok{background:#2f9e44} .bar .failed{background:#e03131} .bar .rejected{background:#f59f00} .bar .cancelled{background:#868e96}
 .bar.big{height:22px} .bar>span{position:absolute;left:6px;top:0;font-size:12px;line-height:22px}
 .state{padding:2px 8px;border-radius:8px;font-size:13px;font-weight:600} .state.done{background:#d3f9d8;color:#2b8a3e} .state.done-with-failures{background:#ffe3e3;color:#c92a2a}
 .state.cancelled{background:#e9ecef;color:#495057} .state.running,.state.ingesting{background:#d0ebff;color:#1864ab} .state.stalled{background:#fff3bf;color:#e67700}
 .advice{background:#fff3bf;border-left:4px solid #f59f00;padding:8px 12px;margin:10px 0} header .serves{margin-left:auto;color:#cbd2d9;font-size:13px}
 .counts{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0} .counts div{background:#fff;padding:8px 12px;border-radius:6px;min-width:90px}
 .counts b{display:block;font-size:20px} .failed b{color:#b42318} .created b{color:#2f9e44}
 .row{display:flex;gap:12px;align-items:center;margin:10px 0;flex-wrap:wrap}
 button{padding:6px 12px;border:1px solid #9aa5b1;border-radius:4px;background:#fff;cursor:pointer} button:disabled{opacity:.5}
 svg{background:#fff;border-radius:6px} .muted{color:#616e7c} .pill{padding:1px 6px;border-radius:8px;background:#e4e7eb}
 .pill.created{background:#d3f9d8}.pill.failed{background:#ffe3e3}.pill.rejected{background:#fff3bf}.pill.existing{background:#d0ebff}
</style></head>
<body><header><b>dify-provision</b><a href="/">Batches</a><a href="/queues" id="board-link">Queue internals</a><span class="serves" id="serves"></span></header>
<main id="app">loading…</main>
<script>
const $ = (tag, attrs = {}, ...kids) => { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs)) { if (k === 'text') e.textContent = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v); } for (const c of kids) e.append(c); return e; };
const api = async (path, opts = {}) => { const r = await fetch(path, { credentials: 'same-origin', ...opts, headers: { 'x-requested-with': 'dify-provision' } }); if (r.status === 401) throw new Error('This session has ended (sessions last an hour): open the dashboard address with ?token=… again.'); if (!r.ok) throw new Error(path + ': ' + r.status); return r.json(); };
const pct = (s) => s.total === 0 ? 100 : Math.floor(100 * (s.total - s.counts.queued - s.counts.active) / s.total);
const WORDS = { ingesting: 'ingesting', running: 'running', stalled: 'stalled: no worker', done: 'done', 'done-with-failures': 'done with failures', cancelled: 'cancelled' };
const stateTag = (state, id) => $('span', { class: 'state ' + state, 'data-state': state, ...(id ? { id } : {}), text: WORDS[state] ?? state });
// Finished rows by kind, each in its colour: a batch with failures never looks like a clean one.
const bar = (s, big) => {
  const part = (n) => s.total === 0 ? 0 : 100 * n / s.total;
  const b = $('div', { class: 'bar' + (big ? ' big' : ''), role: 'progressbar', 'aria-valuenow': String(pct(s)), id: big ? 'progress' : '' },
    $('div', { class: 'ok', style: 'width:' + (s.total === 0 ? 100 : part(s.counts.created + s.counts.existing)) + '%' }),
    ...['failed', 'rejected', 'cancelled'].map((o) => $('div', { class: o, style: 'width:' + part(s.counts[o]) + '%' })));
  if (big) b.append($('span', { text: pct(s) + '%' }));
  return b;
};
const workersText = (n) => n === null ? 'workers: unknown' : n === 1 ? '1 worker' : n + ' workers';
const eta = (s) => s === null ? '?' : s < 60 ? Math.ceil(s) + 's' : s < 3600 ? Math.floor(s / 60) + 'm' + String(Math.ceil(s % 60)).padStart(2, '0') + 's' : Math.floor(s / 3600) + 'h' + String(Math.floor(s % 3600 / 60)).padStart(2, '0') + 'm';
const app = document.getElementById('app');

async function header() {
  const info = await api('/api/info');
  document.getElementById('serves').textContent = 'Dify database "' + info.database + '" · queue ' + info.queue + ' · ' + workersText(info.workers);
  document.getElementById('board-link').title = info.boardNote;
  return info;
}
async function batchesPage() {
  const [list, info] = await Promise.all([api('/api/batches'), header()]);
  const rows = list.map((b) => $('tr', {},
    $('td', {}, $('a', { href: '/batches/' + encodeURIComponent(b.batchId), text: b.batchId })), $('td', { text: b.source ?? '' }),
    $('td', { text: new Date(b.createdAt).toLocaleString() }), $('td', { text: String(b.total) }),
    $('td', { text: b.counts.created + ' created, ' + b.counts.existing + ' existing, ' + b.counts.failed + ' failed, ' + b.counts.rejected + ' rejected' }),
    $('td', {}, bar(b)), $('td', {}, stateTag(b.state))));
  const stalled = list.some((b) => b.state === 'stalled');
  app.replaceChildren($('h2', { text: 'Batches' }), ...(stalled ? [$('div', { class: 'advice', id: 'advice', text: 'Some batches are stalled: ' + info.noWorker })] : []), list.length ? $('table', {}, $('tr', {}, ...['batch', 'file', 'created at', 'rows', 'outcomes', 'progress', 'state'].map((h) => $('th', { text: h }))), ...rows) : $('p', { class: 'muted', text: 'No batches yet: run dify-provision ingest FILE.' }));
}

const view = { outcome: '', pages: [0], status: null, notice: '' };
function chart(tl) {
  const w = 600, h = 120, max = Math.max(1, ...tl.timeline.map((p) => p.n));
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg'); svg.setAttribute('width', w); svg.setAttribute('height', h); svg.id = 'chart';
  const bw = w / Math.max(tl.timeline.length, 1);
  tl.timeline.forEach((p, i) => { const r = document.createElementNS('http://www.w3.org/2000/svg', 'rect'); const bh = (h - 20) * p.n / max; r.setAttribute('x', i * bw + 1); r.setAttribute('y', h - bh); r.setAttribute('width', Math.max(bw - 2, 1)); r.setAttribute('height', bh); r.setAttribute('fill', '#4c6ef5'); svg.append(r); });
  const t = document.createElementNS('http://www.w3.org/2000/svg', 'text'); t.setAttribute('x', 6); t.setAttribute('y', 14); t.setAttribute('font-size', 11); t.textContent = 'rows finished per ' + tl.bucketSeconds + ' s (peak ' + max + ')'; svg.append(t);
  return svg;
}
async function batchPage(id) {
  const enc = encodeURIComponent(id);
  const after = view.pages[view.pages.length - 1];
  const [s, page, info] = await Promise.all([api('/api/batches/' + enc), api('/api/batches/' + enc + '/rows?limit=50&after=' + after + (view.outcome ? '&outcome=' + view.outcome : '')), header()]);
  view.status = s;
  const counts = ['queued', 'active', 'created', 'existing', 'rejected', 'failed', 'cancelled'].map((o) => $('div', { class: o, id: 'count-' + o }, $('b', { text: String(s.counts[o]) }), o));
  const filter = $('select', { id: 'filter', onchange: (e) => { view.outcome = e.target.value; view.pages = [0]; render(); } }, ...['', 'queued', 'active', 'created', 'existing', 'rejected', 'failed', 'cancelled'].map((o) => { const opt = $('option', { value: o, text: o || 'all outcomes' }); if (o === view.outcome) opt.selected = true; return opt; }));
  const act = (what) => async (e) => { e.target.disabled = true; try { const r = await api('/api/batches/' + enc + '/' + what, { method: 'POST' }); view.notice = r.message; } finally { e.target.disabled = false; render(); } };
  const table = $('table', { id: 'rows' }, $('tr', {}, ...['line', 'workspace', 'owner', 'outcome', 'tenant id', 'attempts', 'API key', 'error'].map((h) => $('th', { text: h }))),
    ...page.rows.map((r) => $('tr', { 'data-outcome': r.outcome }, $('td', { text: String(r.line) }), $('td', { text: r.workspaceName ?? '' }), $('td', { text: r.ownerEmail ?? '' }),
      $('td', {}, $('span', { class: 'pill ' + r.outcome, text: r.outcome })), $('td', { class: 'id', text: r.tenantId ?? '' }), $('td', { text: String(r.attempts) }), $('td', { text: r.apiKey ?? '' }), $('td', { class: 'err', text: r.error ?? '' }))));
  const prev = $('button', { id: 'prev', text: '← previous', onclick: () => { view.pages.pop(); render(); } }); prev.disabled = view.pages.length < 2;
  const next = $('button', { id: 'next', text: 'next →', onclick: () => { view.pages.push(page.rows[page.rows.length - 1].line); render(); } }); next.disabled = !page.more;
  // A rate and an ETA only while workers are answering rows.
  const pace = s.state === 'running' || s.state === 'ingesting'
    ? [$('span', { id: 'rate', text: s.throughput.perSecond.toFixed(1) + ' rows/s' }), $('span', { id: 'eta', text: 'ETA ' + eta(s.throughput.etaSeconds) })] : [];
  // Buttons only where they apply.
  const buttons = [
    s.counts.failed > 0 && $('button', { id: 'retry', text: 'Retry failed rows', onclick: act('retry') }),
    s.counts.queued > 0 && $('button', { id: 'cancel', text: 'Cancel waiting rows', onclick: act('cancel') }),
    s.counts.cancelled > 0 && $('button', { id: 'resume', text: 'Queue cancelled rows again', onclick: act('resume') }),
  ].filter(Boolean);
  const shown = page.rows.length === 0 ? 'no rows' : 'lines ' + page.rows[0].line + '–' + page.rows[page.rows.length - 1].line + (page.more ? ', more after' : '');
  app.replaceChildren(
    $('h2', { text: 'Batch ' + s.batchId + ' ' }, stateTag(s.state, 'state')),
    ...(s.advice ? [$('div', { class: 'advice', id: 'advice', text: s.advice })] : []),
    bar(s, true),
    $('div', { class: 'row' }, ...pace, $('span', { class: 'muted', text: s.finished + ' of ' + s.total + ' rows finished · ' + workersText(s.workers) })),
    $('div', { class: 'counts' }, ...counts), chart(s.throughput),
    $('div', { class: 'row' }, ...buttons,
      $('a', { href: '/api/batches/' + enc + '/report.csv', text: 'report.csv' }), $('a', { href: '/api/batches/' + enc + '/report.json', text: 'report.json' }), $('span', { id: 'notice', class: 'muted', text: view.notice })),
    $('div', { class: 'row' }, filter, prev, next, $('span', { class: 'muted', id: 'shown', text: shown })), table,
    $('p', { class: 'muted', id: 'board-note', text: info.boardNote }));
}
let timer;
async function render() {
  clearTimeout(timer);
  try {
    const m = location.pathname.match(/^\\/batches\\/(.+)$/);
    if (m) await batchPage(decodeURIComponent(m[1])); else await batchesPage();
  } catch (e) { app.replaceChildren($('p', { class: 'err', text: String(e) })); }
  timer = setTimeout(render, 1000);
}
render();
</script></body></html>`;
