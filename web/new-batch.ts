// "New batch": choose or drop a CSV/.xlsx file, see its plan (a dry run against Dify: what would
// be created, what exists, what is rejected or would fail, with each row's problem), then
// "Provision" records and queues it and opens the batch's live page. Both calls send the same
// file to /api/v1 (multipart, so the file's name names the batch, as ingest does).
import { api, ApiError, apiV1, consoleWords, el, type RowProblems } from './dom.js';
import type { Enqueued, OptionField, Plan, PlanRow } from './types.js';
import { header } from './widgets.js';

/** Problem rows shown at once (the report lists every row once the batch runs). */
const SHOWN = 500;

const FILE_TYPES = '.csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';

/** The options asked, by the API's names, as form fields (a box ticked: "true"); the plan and the batch are asked with the same ones. */
type Options = Record<string, string>;

function form(file: File, options: Options): FormData {
  const data = new FormData();
  for (const [name, value] of Object.entries(options)) data.append(name, value);
  data.append('file', file, file.name); // after the fields: the server reads them before the file
  return data;
}

/** Common encodings offered for a CSV that is not UTF-8 (any name the API knows may be typed). */
const ENCODINGS = [
  'windows-1252',
  'iso-8859-1',
  'iso-8859-15',
  'utf-16le',
  'utf-16be',
  'shift_jis',
  'gb18030',
  'windows-1250',
  'macintosh',
];

const label = (name: string) => name.replace(/_/g, ' ');

/** A field for each option the API takes (GET /api/ingest-options: the API's own schema). */
function optionInput(o: OptionField, changed: () => void): { name: string; node: HTMLElement; value: () => string | undefined } {
  const id = 'opt-' + o.name;
  if (o.kind === 'boolean') {
    const box = el('input', { type: 'checkbox', id, name: o.name, onchange: changed });
    return {
      name: o.name,
      node: el('label', { class: 'opt', title: o.description }, box, ' ' + label(o.name)),
      value: () => (box.checked ? 'true' : undefined),
    };
  }
  let input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  const extra: HTMLElement[] = [];
  if (o.kind === 'choice') {
    input = el(
      'select',
      { id, name: o.name, onchange: changed },
      el('option', { value: '', text: 'default' }),
      ...(o.choices ?? []).map((c) => el('option', { value: c, text: c === '\t' ? 'tab' : c })),
    );
  } else if (o.kind === 'map') {
    // One "Heading=column" a line, as the API takes it in a form field.
    input = el('textarea', { id, name: o.name, rows: '2', placeholder: 'Owner E-mail=owner_email', onchange: changed });
  } else if (o.kind === 'pem') {
    const area = el('textarea', { id, name: o.name, rows: '3', placeholder: '-----BEGIN PUBLIC KEY-----', onchange: changed });
    const pick = el('input', { type: 'file', id: id + '-file', accept: '.pem,.pub,.txt' });
    pick.addEventListener('change', async () => {
      const f = pick.files?.[0];
      if (!f) return;
      area.value = await f.text();
      changed();
    });
    input = area;
    extra.push(pick);
  } else {
    input = el('input', {
      type: o.kind === 'number' ? 'number' : 'text',
      id,
      name: o.name,
      onchange: changed,
      ...(o.kind === 'number' ? { min: '1' } : {}),
      ...(o.name === 'encoding' ? { list: 'encodings', placeholder: 'UTF-8 (detected)' } : {}),
    });
    if (o.name === 'encoding') extra.push(el('datalist', { id: 'encodings' }, ...ENCODINGS.map((e) => el('option', { value: e }))));
  }
  const node = el('label', { class: 'opt field', title: o.description }, el('span', { text: label(o.name) }), input, ...extra);
  return {
    name: o.name,
    node,
    value: () => (input.value.trim() === '' ? undefined : o.kind === 'pem' || o.kind === 'map' ? input.value : input.value.trim()),
  };
}

/** A random Idempotency-Key (crypto.randomUUID needs a secure context; a LAN address over http is not one). */
function idempotencyKey(): string {
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** The rows with problems, by line: the plan's, or those of a file the API refused (422). */
function problemsTable(rows: RowProblems[]): HTMLElement[] {
  const lines = rows.flatMap((r) => r.errors.map((e) => ({ line: r.line, ...e })));
  if (lines.length === 0) return [];
  const shown = lines.slice(0, SHOWN);
  return [
    el(
      'table',
      { id: 'problems' },
      el('tr', {}, ...['line', 'field', 'problem'].map((h) => el('th', { text: h }))),
      ...shown.map((p) =>
        el(
          'tr',
          { 'data-line': String(p.line) },
          el('td', { text: String(p.line) }),
          el('td', { text: p.field }),
          el('td', { class: 'err', text: consoleWords(p.message) }),
        ),
      ),
    ),
    ...(lines.length > shown.length ? [el('p', { class: 'muted', text: `the first ${SHOWN} of ${lines.length} problems` })] : []),
  ];
}

const byLine = (problems: Plan['problems']): RowProblems[] => {
  const rows = new Map<number, RowProblems>();
  for (const p of problems) {
    const row = rows.get(p.line) ?? { line: p.line, errors: [] };
    row.errors.push({ field: p.field, message: p.message });
    rows.set(p.line, row);
  }
  return [...rows.values()];
};

const VERDICT_WORDS: Record<PlanRow['verdict'], string> = {
  would_create: 'would create',
  existing: 'existing',
  rejected: 'rejected',
  would_fail: 'would fail',
};

/** The rows the plan lists, each with its verdict and, where it has them, its problems. */
function planRows(p: Plan): HTMLElement[] {
  if (p.rows.length === 0) return [];
  const why = new Map(byLine(p.problems).map((r) => [r.line, r.errors.map((e) => e.field + ': ' + e.message).join('; ')]));
  return [
    el(
      'table',
      { id: 'plan-rows' },
      el('tr', {}, ...['line', 'workspace', 'owner', 'would', 'why'].map((h) => el('th', { text: h }))),
      ...p.rows.map((r) =>
        el(
          'tr',
          { 'data-line': String(r.line), 'data-verdict': r.verdict },
          el('td', { text: String(r.line) }),
          el('td', { text: r.workspace_name ?? '' }),
          el('td', { text: r.owner_email ?? '' }),
          el('td', {}, el('span', { class: 'pill ' + r.verdict, text: VERDICT_WORDS[r.verdict] })),
          el('td', { class: 'err', text: why.get(r.line) ?? '' }),
        ),
      ),
    ),
    ...(p.rows.length < p.total ? [el('p', { class: 'muted', text: `the first ${p.rows.length} of ${p.total} rows` })] : []),
  ];
}

function inputWords(input: Plan['input']): string {
  if (!input) return '';
  const parts: string[] = [input.format === 'xlsx' ? '.xlsx' + (input.sheet ? ', sheet "' + input.sheet + '"' : '') : 'CSV'];
  if (input.encoding) parts.push(input.encoding);
  if (input.delimiter) parts.push('delimiter ' + (input.delimiter === '\t' ? 'tab' : '"' + input.delimiter + '"'));
  if (input.empty_rows > 0) parts.push(input.empty_rows + ' empty row(s) skipped');
  return parts.join(' · ');
}

export function newBatchPage(app: HTMLElement): void {
  void header().catch(() => undefined); // the header line only: the page works without it
  const result = el('div', { id: 'plan' });
  let asked = 0; // a newer file's plan replaces an older one's, whichever answers first
  let chosen: File | undefined;
  let fields: ReturnType<typeof optionInput>[] = [];
  const options = (): Options => Object.fromEntries(fields.flatMap((f) => (f.value() === undefined ? [] : [[f.name, f.value()!]])));
  const optionsBox = el('div', { class: 'row', id: 'options' });
  void api<OptionField[]>('/api/ingest-options').then((list) => {
    fields = list.map((o) => optionInput(o, () => replan()));
    optionsBox.replaceChildren(...fields.map((f) => f.node));
    optionsBox.dataset['ready'] = 'true';
  });

  let plannedWith = '';
  async function plan(file: File): Promise<void> {
    const mine = ++asked;
    chosen = file;
    const opts = options();
    plannedWith = JSON.stringify(opts);
    result.replaceChildren(el('p', { class: 'muted', id: 'planning', text: 'Planning ' + file.name + '…' }));
    try {
      const p = await apiV1<Plan>('/plans', { method: 'POST', body: form(file, opts) });
      if (mine === asked) showPlan(file, opts, p);
    } catch (e) {
      if (mine === asked) showError(e, 'plan-error', "This file can't be provisioned as it is");
    }
  }
  // Only when an option really changed: a text field also says "change" when it loses the focus
  // (to the Provision button), and a plan redrawn then would take the button from under the click.
  const replan = () => {
    if (chosen && JSON.stringify(options()) !== plannedWith) void plan(chosen);
  };

  function showError(e: unknown, id: string, title: string, keep: HTMLElement[] = []): void {
    const rows = e instanceof ApiError ? e.rows : [];
    result.replaceChildren(
      ...keep,
      el('div', { class: 'advice', id }, el('b', { text: title + ': ' }), consoleWords(e instanceof Error ? e.message : String(e))),
      ...problemsTable(rows),
    );
  }

  function showPlan(file: File, opts: Options, p: Plan): void {
    const key = idempotencyKey();
    const count = (id: string, n: number, words: string) => el('div', { class: id, id: 'plan-' + id }, el('b', { text: String(n) }), words);
    const provision = el('button', { id: 'provision', class: 'primary', text: 'Provision' });
    provision.disabled = p.total === 0;
    const done: HTMLElement[] = [
      el('h3', { id: 'plan-title', text: 'Plan for ' + file.name }),
      el('p', { class: 'muted', id: 'input', text: inputWords(p.input) }),
      el(
        'div',
        { class: 'counts' },
        count('would-create', p.would_create, 'would create'),
        count('existing', p.existing, 'existing'),
        count('rejected', p.rejected, 'rejected'),
        count('would-fail', p.would_fail, 'would fail'),
      ),
      ...(p.likely_duplicates > 0
        ? [el('p', { class: 'muted', text: p.likely_duplicates + ' rejected row(s) look like a customer seen before (see each row).' })]
        : []),
      el(
        'div',
        { class: 'row' },
        provision,
        el('span', { class: 'muted', text: 'Valid rows are queued; rejected rows are recorded with why, in the report.' }),
      ),
    ];
    provision.addEventListener('click', async () => {
      provision.disabled = true;
      provision.textContent = 'Provisioning…';
      try {
        const batch = await apiV1<Enqueued>('/batches', { method: 'POST', body: form(file, opts), headers: { 'idempotency-key': key } });
        location.assign('/batches/' + encodeURIComponent(batch.batch_id));
      } catch (e) {
        showError(e, 'provision-error', 'Not provisioned', done);
        provision.disabled = false;
        provision.textContent = 'Provision';
      }
    });
    // Past the rows listed, the problems of the rest (every problem is in `problems`).
    const last = p.rows[p.rows.length - 1]?.line ?? 0;
    const later = byLine(p.problems.filter((x) => x.line > last));
    result.replaceChildren(
      ...done,
      ...planRows(p),
      ...(later.length ? [el('h3', { text: 'Rows after those that would not be created' })] : []),
      ...problemsTable(later),
    );
  }

  const input = el('input', { type: 'file', id: 'file', accept: FILE_TYPES });
  input.addEventListener('change', () => {
    const file = input.files?.[0];
    if (file) void plan(file);
  });
  const drop = el(
    'label',
    { class: 'drop', id: 'drop', for: 'file' },
    el('b', { text: 'Drop a CSV or .xlsx file here' }),
    el('span', { class: 'muted', text: 'or click to choose one: you see what it would do before anything is written' }),
  );
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = e.dataTransfer?.files[0];
    if (file) void plan(file);
  });
  // A file dropped beside the target is not opened by the browser in place of the page.
  for (const type of ['dragover', 'drop']) document.addEventListener(type, (e) => e.preventDefault());
  app.replaceChildren(el('h2', { text: 'New batch' }), drop, input, optionsBox, result);
}
