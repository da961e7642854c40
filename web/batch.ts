// One batch, live: progress, counts, completions over time, the rows a page at a time (searched
// by workspace, owner or external id), a row in full, and the actions that apply (retry failed
// rows, one row or a selection; cancel waiting ones, queue cancelled ones again; a row refused by
// the pre-claim guard offers to trust its address, after saying what that means). A change batch
// (apply) shows its own outcomes (applied, unchanged) and each row's action, person and detail.
import { api, apiV1, consoleWords, el, readOnly, svg } from './dom.js';
import { OUTCOMES_OF, type Row, type RowDetail, type RowsPage, type Status } from './types.js';
import { bar, header, kindTag, stateTag, when, workersText } from './widgets.js';

/**
 * A pre-claimed row whose retry asks first (trustPanel): its line, workspace, the addresses its
 * error names, and which refusal it was (a join it would write, or its workspace answered existing).
 */
type Trust = { line: number; name: string; emails: string[]; existing: boolean };

/**
 * What the page shows across refreshes: the outcome filter, search, the pages seen, the rows
 * selected, the row opened, the pre-claimed row whose retry is asking, the last notice.
 */
const view = {
  outcome: '',
  search: '',
  pages: [0],
  notice: '',
  selected: new Set<number>(),
  detail: null as number | null,
  trust: null as Trust | null,
  batch: '',
};

/** Rows a retry takes: the failed and the cancelled. */
const retryable = (r: Row) => r.outcome === 'failed' || r.outcome === 'cancelled';

/**
 * The pre-claim guard's refusals (src/store/invitations.ts), as the row's error holds them: of a
 * join the row would write (refusePreclaimed: "<field>: <email>[ (Dify account <account>)]: this
 * account was created or invited by another batch … confirm it is the person (--trust-account
 * <email>) or use another address"), and of a row whose workspace exists already
 * (refuseExistingPreclaimed: "<field>: <email>[ (Dify account <account>)]: this row's workspace
 * exists already, … confirm it is the person (--trust-account <email>) or check the row's
 * external_id"). <email> is the address as the row wrote it, the one to trust; the Dify account it
 * resolved to is named beside it when that is another address (where Dify keeps normalised
 * emails). The whole error must be one of them, naming the same address twice: no other text (a
 * workspace name another error quotes) makes the page offer a trust.
 */
const PRECLAIMED =
  /^(?:owner_email|members|email): (\S+)(?: \(Dify account \S+\))?: this account was created or invited by another batch and is active, .* confirm it is the person \(--trust-account \1\) or use another address$/s;
const PRECLAIMED_EXISTING =
  /^(?:owner_email|members): (\S+)(?: \(Dify account \S+\))?: this row's workspace exists already, and this account's link was given to the operator of another batch, .* confirm it is the person \(--trust-account \1\) or check the row's external_id$/s;

/** What a row's error says the pre-claim guard refused (the addresses, and which refusal): nothing for any other error. */
const preclaimedBy = (error: string | null): { emails: string[]; existing: boolean } => {
  const join = error === null ? null : PRECLAIMED.exec(error);
  if (join) return { emails: [join[1]!], existing: false };
  const known = error === null ? null : PRECLAIMED_EXISTING.exec(error);
  return { emails: known ? [known[1]!] : [], existing: known !== null };
};

/**
 * A pre-claimed row's retry asks first: what trusting the address means (docs/security.md, "The
 * pre-claim guard"), then a retry trusting it (`trust_accounts`, as `retry --trust-account`), or nothing.
 */
function trustPanel(t: Trust, retry: (button: HTMLButtonElement) => void, close: () => void): HTMLElement {
  const who = t.emails.join(', ');
  const confirm = el('button', { id: 'trust-retry', text: 'Trust ' + who + ' and retry line ' + t.line });
  confirm.addEventListener('click', () => retry(confirm));
  return el(
    'section',
    { id: 'trust-panel', class: 'detail', 'data-line': String(t.line) },
    el('h3', { id: 'trust-title', text: 'Line ' + t.line + (t.name ? ' (' + t.name + ')' : '') + ': refused by the pre-claim guard' }),
    el('p', {
      id: 'trust-what',
      text:
        (t.existing
          ? "This row's workspace exists already, and another batch's operator was given the invitation link of " +
            who +
            ': whoever holds the link can set its password. Trusting ' +
            who +
            ' lets this row call that workspace its own (answered existing), and the batch records the address as trusted. '
          : "Another batch's operator was given the invitation link of " +
            who +
            ' and the account is active: whoever held the link may have set its password. Trusting ' +
            who +
            ' lets this row join that account to its workspace, and the batch records the address as trusted. ') +
        "Nothing here can tell the person from the link's holder: trust it only if you have confirmed it is the person.",
    }),
    el('div', { class: 'row' }, confirm, el('button', { id: 'trust-cancel', text: 'cancel', onclick: close })),
  );
}

/** Kept across refreshes (the page is drawn anew every second): what is typed stays, with the focus. */
let searchBox: HTMLInputElement | undefined;
function searchInput(render: () => void): HTMLInputElement {
  if (searchBox) return searchBox;
  let timer: ReturnType<typeof setTimeout> | undefined;
  searchBox = el('input', {
    type: 'search',
    id: 'search',
    placeholder: 'search workspace, owner or external id',
    oninput: () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        view.search = searchBox!.value.trim();
        view.pages = [0];
        render();
      }, 250);
    },
  });
  return searchBox;
}

const snakeName = (k: string) => k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
const shownValue = (v: unknown): string =>
  typeof v === 'string' ? (v === '\t' ? 'tab' : v) : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);

/** The options the batch was made with, by the API's names, and how its file was read. */
function optionsLine(s: Status): HTMLElement {
  const asked = Object.entries(s.options ?? {}).map(
    ([k, v]) =>
      snakeName(k) +
      ': ' +
      // A column map as it is written: "Heading=column", one after another.
      (k === 'columnMap' && typeof v === 'object' && v !== null
        ? Object.entries(v as Record<string, unknown>)
            .map(([h, c]) => h + '=' + String(c))
            .join(', ')
        : shownValue(v)),
  );
  const read = s.input
    ? Object.entries(s.input)
        .filter(([, v]) => v !== undefined && v !== 0)
        .map(([k, v]) => snakeName(k) + ': ' + shownValue(v))
    : [];
  return el(
    'p',
    { class: 'muted', id: 'batch-options' },
    'Made with: ' + (asked.length ? asked.join(' · ') : 'no options recorded') + (read.length ? ' — read as ' + read.join(' · ') : ''),
  );
}

/**
 * "Invite pending people": a batch made with create_missing_owners but no invite gets its
 * invitations after the fact (POST /api/v1/batches/{id}/invite: the home rule applies, links are
 * sealed to the batch's key or the one given here). Kept across refreshes: what is pasted stays.
 */
let invitePanel: { batch: string; node: HTMLElement; notice: HTMLElement } | undefined;
function inviteSection(batch: string): HTMLElement {
  if (invitePanel?.batch === batch) return invitePanel.node;
  const seal = el('textarea', { id: 'invite-seal', rows: '2', placeholder: '-----BEGIN PUBLIC KEY----- (if the batch has no seal key)' });
  const send = el('input', { type: 'checkbox', id: 'invite-send' });
  const notice = el('span', { id: 'invite-notice', class: 'muted' });
  const button = el('button', { id: 'invite', text: 'Invite pending people' });
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const r = await apiV1<{ message: string }>('/batches/' + encodeURIComponent(batch) + '/invite', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ send_invites: send.checked, ...(seal.value.trim() ? { seal_to: seal.value } : {}) }),
      });
      // The API's send_invites is the box beside the button here.
      notice.textContent = consoleWords(r.message.replace(/\(send_invites mails them one\)/, '(tick "mail each link" to mail them one)'));
    } catch (e) {
      notice.textContent = consoleWords(e instanceof Error ? e.message : String(e));
    } finally {
      button.disabled = false;
    }
  });
  const node = el(
    'div',
    { class: 'row', id: 'invite-panel' },
    el('span', { class: 'muted', text: 'People this batch created have no invitation:' }),
    seal,
    el('label', {}, send, ' mail each link (send invites)'),
    button,
    notice,
  );
  invitePanel = { batch, node, notice };
  return node;
}

/** A row in full: its answer, attempts, round, times, error, and what was written. */
function detailPanel(d: RowDetail, close: () => void): HTMLElement {
  const item = (k: string, v: string, id?: string) => [el('dt', { text: k }), el('dd', { text: v, ...(id ? { id } : {}) })];
  const none = '—';
  return el(
    'section',
    { id: 'row-detail', class: 'detail', 'data-line': String(d.line) },
    el('h3', { text: 'Line ' + d.line + ': ' + (d.workspace_name ?? '') + ' ' }, pill(d.outcome)),
    el('button', { id: 'detail-close', text: 'close', onclick: close }),
    el(
      'dl',
      {},
      ...item('owner', d.owner_email ?? none),
      ...item('external id', d.external_id ?? none),
      ...item('attempts', String(d.attempts) + ' (round ' + d.round + ')', 'detail-attempts'),
      ...item('recorded', when(d.recorded_at)),
      ...item('last change', when(d.updated_at)),
      ...item('finished', when(d.finished_at) || none, 'detail-finished'),
      ...item('last attempt took', d.duration_ms === null ? none : d.duration_ms + ' ms'),
      ...item('error', d.error === null ? none : consoleWords(d.error), 'detail-error'),
      ...item('workspace (tenant id)', d.tenant_id ?? none, 'detail-tenant'),
      ...item('key pair (public key SHA-256)', d.public_key_sha256 ?? none),
      ...item('API key', d.api_key ?? none),
      ...item('accounts created', d.accounts_created?.join(', ') || none),
      ...item('members asked for', d.members.map((m) => m.email + ' (' + m.role + ')').join(', ') || none),
      ...item(
        'invitations',
        d.invitations_issued
          .map(
            (i) =>
              i.email +
              ' (' +
              i.role +
              '): issued ' +
              when(i.issued_at) +
              (i.mail ? ', mail ' + i.mail : '') +
              (i.superseded ? ', replaced' : ''),
          )
          .join('; ') || none,
      ),
    ),
  );
}

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
/** Redis did not answer when the page was drawn: an active row is not running but waiting for it. */
let redisDown = false;
/** A row's outcome as a pill; an active row while Redis is down says it waits for Redis. */
const pill = (o: string) =>
  redisDown && o === 'active'
    ? el('span', {
        class: 'pill waiting-for-redis',
        'data-waiting': 'redis',
        text: 'waiting for Redis',
        title: 'active when Redis stopped answering: not running',
      })
    : el('span', { class: 'pill ' + o, text: o });
const outcome = (r: Row) => el('td', {}, pill(r.outcome));

const PROVISION_COLUMNS: Column[] = [
  ['external id', text((r) => r.externalId)],
  ['workspace', text((r) => r.workspaceName)],
  ['owner', text((r) => r.ownerEmail)],
  ['outcome', outcome],
  ['tenant id', text((r) => r.tenantId, 'id')],
  ['attempts', text((r) => r.attempts)],
  ['API key', text((r) => r.apiKey)],
  ['error', text((r) => consoleWords(r.error ?? ''), 'err')],
];

/** A change row: its workspace (id, or the external_id it names), person, role or new name, and why it is as it is. */
const CHANGE_COLUMNS: Column[] = [
  ['action', text((r) => r.action, 'action')],
  ['workspace', text((r) => r.tenantId ?? r.externalId, 'id')],
  ['person', text((r) => r.ownerEmail)],
  ['role / name', text((r) => r.role ?? r.workspaceName)],
  ['outcome', outcome],
  ['attempts', text((r) => r.attempts)],
  ['detail', text((r) => consoleWords(r.error ?? ''), 'err')],
];

export async function batchPage(app: HTMLElement, id: string, render: () => void): Promise<void> {
  if (view.batch !== id) Object.assign(view, { batch: id, pages: [0], selected: new Set<number>(), detail: null, trust: null, notice: '' });
  const enc = encodeURIComponent(id);
  const after = view.pages[view.pages.length - 1];
  const query = (view.outcome ? '&outcome=' + view.outcome : '') + (view.search ? '&q=' + encodeURIComponent(view.search) : '');
  const [s, page, info, detail] = await Promise.all([
    api<Status>('/api/batches/' + enc),
    api<RowsPage>('/api/batches/' + enc + '/rows?limit=50&after=' + after + query),
    header(),
    view.detail === null ? Promise.resolve(null) : apiV1<RowDetail>('/batches/' + enc + '/rows/' + view.detail).catch(() => null),
  ]);
  const outcomes = OUTCOMES_OF[s.kind] ?? OUTCOMES_OF.provision;
  redisDown = s.redisUnreachable;
  // Active rows while Redis is down are counted as what they are: waiting for Redis, not running.
  const countWords = (o: string) => (o === 'active' && s.waitingForRedis > 0 ? 'active: waiting for Redis' : o);
  const counts = outcomes.map((o) => el('div', { class: o, id: 'count-' + o }, el('b', { text: String(s.counts[o]) }), countWords(o)));
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
  // Retry of one row or a selection (failed or cancelled rows), by line; a confirmed trust sends its addresses.
  const retryLines = async (lines: number[], button: HTMLButtonElement, trust: string[] = []) => {
    button.disabled = true;
    try {
      const r = await apiV1<{ message: string; lines: number[] }>('/batches/' + enc + '/rows/retry', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ lines, ...(trust.length ? { trust_accounts: trust } : {}) }),
      });
      view.notice = r.message;
      for (const l of lines) view.selected.delete(l);
    } catch (e) {
      view.notice = e instanceof Error ? e.message : String(e);
    } finally {
      view.trust = null;
      render();
    }
  };
  for (const line of view.selected) if (!page.rows.some((r) => r.line === line && retryable(r))) view.selected.delete(line);
  if (view.trust && !page.rows.some((r) => r.line === view.trust!.line && retryable(r))) view.trust = null;
  const columns = s.kind === 'changes' ? CHANGE_COLUMNS : PROVISION_COLUMNS;
  const table = el(
    'table',
    { id: 'rows' },
    el(
      'tr',
      {},
      el('th', { text: '' }),
      el('th', { text: 'line' }),
      ...columns.map(([h]) => el('th', { text: h })),
      el('th', { text: '' }),
    ),
    ...page.rows.map((r) => {
      const canRetry = !readOnly && retryable(r);
      const box = el('input', {
        type: 'checkbox',
        id: 'select-' + r.line,
        title: 'select for retry',
        // The selection changes in place (no redraw under the pointer): the button says how many.
        onchange: (e) => {
          if ((e.target as HTMLInputElement).checked) view.selected.add(r.line);
          else view.selected.delete(r.line);
          showSelection();
        },
      });
      box.checked = view.selected.has(r.line);
      // Refused by the pre-claim guard: the retry asks first whether to trust the address.
      const { emails: preclaimed, existing } = preclaimedBy(r.error);
      const one = preclaimed.length
        ? el('button', {
            id: 'retry-' + r.line,
            text: 'retry…',
            title: 'queue this row again, trusting ' + preclaimed.join(', ') + ' (asks first)',
          })
        : el('button', { id: 'retry-' + r.line, text: 'retry', title: 'queue this row again' });
      one.addEventListener('click', () => {
        if (!preclaimed.length) return void retryLines([r.line], one);
        view.trust = { line: r.line, name: r.workspaceName ?? '', emails: preclaimed, existing };
        render();
      });
      return el(
        'tr',
        { 'data-outcome': r.outcome, 'data-line': String(r.line), class: view.detail === r.line ? 'open' : '' },
        el('td', {}, ...(canRetry ? [box] : [])),
        el(
          'td',
          {},
          el('a', {
            href: '#',
            id: 'line-' + r.line,
            text: String(r.line),
            title: 'this row in full',
            onclick: (e) => {
              e.preventDefault();
              view.detail = r.line;
              render();
            },
          }),
        ),
        ...columns.map(([, cell]) => cell(r)),
        el('td', {}, ...(canRetry ? [one] : [])),
      );
    }),
  );
  const retrySelected = el('button', { id: 'retry-selected' });
  retrySelected.addEventListener(
    'click',
    () =>
      void retryLines(
        [...view.selected].sort((a, b) => a - b),
        retrySelected,
      ),
  );
  function showSelection(): void {
    retrySelected.textContent = 'Retry selected (' + view.selected.size + ')';
    retrySelected.hidden = view.selected.size === 0;
  }
  showSelection();
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
  // Drawn anew: the field being typed in (search, the invite's seal key) keeps its focus and caret.
  const active = document.activeElement;
  const typing =
    active instanceof HTMLInputElement || active instanceof HTMLTextAreaElement ? (app.contains(active) ? active : null) : null;
  const caret = typing ? [typing.selectionStart, typing.selectionEnd] : null;
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
      el('span', {
        class: 'muted',
        text: s.finished + ' of ' + s.total + ' rows finished · ' + (s.redisUnreachable ? 'Redis unreachable' : workersText(s.workers)),
      }),
    ),
    optionsLine(s),
    ...(!readOnly && s.kind !== 'changes' && s.options['createMissingOwners'] === true && !s.options['invite'] && !s.options['sendInvites']
      ? [inviteSection(s.batchId)]
      : []),
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
    el(
      'div',
      { class: 'row' },
      filter,
      searchInput(render),
      prev,
      next,
      el('span', { class: 'muted', id: 'shown', text: shown }),
      ...(readOnly ? [] : [retrySelected]),
    ),
    ...(view.trust && !readOnly
      ? [
          trustPanel(
            view.trust,
            (button) => void retryLines([view.trust!.line], button, view.trust!.emails),
            () => {
              view.trust = null;
              render();
            },
          ),
        ]
      : []),
    table,
    ...(detail
      ? [
          detailPanel(detail, () => {
            view.detail = null;
            render();
          }),
        ]
      : []),
    el('p', { class: 'muted', id: 'board-note', text: info.boardNote }),
  );
  if (typing && caret && app.contains(typing)) {
    typing.focus();
    try {
      typing.setSelectionRange(caret[0] ?? null, caret[1] ?? null);
    } catch {
      // a box has no caret
    }
  }
}
