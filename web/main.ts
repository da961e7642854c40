// The dashboard's page: renders the batches list or one batch from the JSON API and refreshes it
// every second.
import { batchPage } from './batch.js';
import { batchesPage } from './batches.js';
import { api, el, optionKinds, readOnly } from './dom.js';
import { newBatchPage } from './new-batch.js';

const app = document.getElementById('app')!;
let timer: ReturnType<typeof setTimeout> | undefined;

if (readOnly) document.getElementById('new-link')?.remove();

async function render(): Promise<void> {
  // "New batch" holds the chosen file and its plan: drawn once, never refreshed.
  if (location.pathname === '/new' && readOnly) {
    app.replaceChildren(
      el('p', { class: 'err', text: 'This session is read-only (status and reports): a new batch needs the admin token.' }),
    );
    return;
  }
  if (location.pathname === '/new') return newBatchPage(app);
  clearTimeout(timer);
  try {
    const m = /^\/batches\/(.+)$/.exec(location.pathname);
    if (m) await batchPage(app, decodeURIComponent(m[1]!), () => void render());
    else await batchesPage(app);
  } catch (e) {
    app.replaceChildren(el('p', { class: 'err', text: String(e) }));
  }
  timer = setTimeout(() => void render(), 1000);
}

// The API's option names, so that messages name them as the page does (dom.ts consoleWords).
void api<{ name: string; kind: string }[]>('/api/ingest-options')
  .then((list) => list.forEach((o) => optionKinds.set(o.name, o.kind)))
  .catch(() => undefined)
  .finally(() => void render());
