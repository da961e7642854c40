// `dify-provision dashboard`: batches and rows live in a browser, bull-board (read-only) for queue
// internals, a health check and Prometheus metrics. Bound to loopback and behind a token.
import { Readable } from 'node:stream';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Db } from '../db/pool.js';
import { workersServing, type RedisClient } from '../queue/connection.js';
import { BatchNotFoundError, ProvisionError, UsageError } from '../common/errors.js';
import { cancelBatch, resumeCancelled, retryFailed } from '../queue/batch-control.js';
import { csvReport, jsonReport } from '../report/format.js';
import { batchKind, getBatchStatus, listBatches, NO_WORKER, REDIS_UNREACHABLE } from '../store/batches.js';
import { allReportRows, reportRows } from '../store/report.js';
import { OUTCOMES, type Outcome } from '../common/types.js';
import { loadConsoleAssets } from './assets.js';
import { attachment } from './download.js';
import { guardStateChanges, requireToken, roleOf, routedPath, sessionStore } from './auth.js';
import { healthCheck } from './health.js';
import { createMetrics } from './metrics.js';
import { liveStatus, registerApi } from './api/routes.js';
import { optionFields } from '../ingest/options.js';
import { BATCH_LIMITS } from '../common/limits.js';
import type { Provisioner } from '../provisioner.js';

export interface DashboardDeps {
  db: Db;
  queue: Queue;
  redis: RedisClient;
  token: string;
  /** Read-only tokens (DASHBOARD_READ_TOKENS): status and reports, no changes. */
  readTokens?: readonly string[];
  /** How long a browser session lasts (default SESSION_TTL_MS). */
  sessionTtlMs?: number;
  /** What POST /api/v1/batches enqueues with (the dashboard command's runtime). */
  provisioner?: Provisioner;
  /** Uploads' cap and a batch's bound of recorded rows, as ingest's --max-bytes (default BATCH_LIMITS.bytes). */
  maxBytes?: number;
  /** Where uploads are spooled while a request runs (default: the system temp dir). */
  tmpDir?: string;
}

// The console's scripts are files of this origin (src/dashboard/assets.ts): no inline script runs,
// on our page or bull-board's.
const SECURITY_HEADERS = {
  'content-security-policy': `default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'`,
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** Why bull-board's numbers are not the batch pages' (shown on both). */
export const BOARD_NOTE =
  'Queue internals count BullMQ jobs of every batch of this Dify, not the rows of one batch: retrying failed rows queues a new job ' +
  'per row (the failed job stays listed for a week), completed jobs are removed at once, and a job retried with backoff stays one job. ' +
  'The batch pages count rows.';

const FAVICON =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1f2933"/><path d="M4 8.5l2.5 2.5L12 5" stroke="#40c057" stroke-width="2" fill="none"/></svg>';

export { attachment } from './download.js';

export async function buildDashboard(deps: DashboardDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  app.addHook('onSend', async (req, reply, payload) => {
    reply.headers(SECURITY_HEADERS);
    // bull-board's page asks a public CDN for fonts: dropped, the page falls back to local fonts.
    if (typeof payload === 'string' && routedPath(req).startsWith('/queues'))
      return payload.replace(/<link[^>]+fonts\.googleapis\.com[^>]*>/g, '');
    return payload;
  });
  requireToken(
    app,
    { admin: deps.token, ...(deps.readTokens ? { read: deps.readTokens } : {}) },
    ['/healthz', '/favicon.ico', '/favicon.svg'],
    sessionStore(deps.sessionTtlMs),
  );
  guardStateChanges(app);
  const workers = () => workersServing(deps.queue);
  const metrics = createMetrics(deps.db, deps.queue, workers);

  // Read-only: retrying, adding, editing or cleaning jobs behind the ledger's back is refused
  // (bull-board's own read-only mode, and every non-GET under /queues here as well: the path as
  // routed, so that `/%71ueues/…`, which the router serves as `/queues/…`, is one too).
  app.addHook('onRequest', async (req, reply) => {
    if (routedPath(req).startsWith('/queues') && req.method !== 'GET' && req.method !== 'HEAD') {
      return reply.code(405).send({ error: 'the queue view is read-only: use the batch pages (retry, cancel) or the CLI' });
    }
  });
  const board = new FastifyAdapter();
  board.setBasePath('/queues');
  createBullBoard({
    queues: [new BullMQAdapter(deps.queue, { readOnlyMode: true, allowRetries: false, description: BOARD_NOTE })],
    serverAdapter: board,
    options: { uiConfig: { boardTitle: 'dify-provision' } },
  });
  await app.register(board.registerPlugin() as never, { prefix: '/queues' });

  const assets = await loadConsoleAssets();
  // A session made from a read-only token gets the page marked so: it offers no action it would be refused.
  const readPage = assets.page.replace('<html lang="en">', '<html lang="en" data-role="read">');
  const page = (req: FastifyRequest, reply: { type(t: string): { send(b: string): unknown } }) =>
    reply.type('text/html; charset=utf-8').send(roleOf(req) === 'read' ? readPage : assets.page);
  app.get('/', page);
  app.get('/batches/:id', page);
  app.get('/new', page);
  app.get<{ Params: { name: string } }>('/assets/:name', async (req, reply) => {
    const asset = assets.files.get(req.params.name);
    if (!asset) return reply.code(404).send({ error: 'no such file' });
    return reply.type(asset.type).send(asset.body);
  });
  // Open, like any site's icon: a browser asks for it without the cookie's path rules in mind.
  const icon = (_req: unknown, reply: { type(t: string): { send(b: string): unknown } }) => reply.type('image/svg+xml').send(FAVICON);
  app.get('/favicon.svg', icon);
  app.get('/favicon.ico', icon);

  // Open, for load balancers: says only whether each dependency answers, nothing about batches.
  const health = healthCheck(deps);
  app.get('/healthz', async (_req, reply) => {
    const h = await health();
    return reply.code(h.ok ? 200 : 503).send(h);
  });
  app.get('/metrics', async (_req, reply) => reply.type(metrics.contentType).send(await metrics.metrics()));

  // Which Dify this dashboard serves, and how many workers serve its queue now.
  app.get('/api/info', async () => {
    const { rows } = await deps.db.query<{ database: string }>(`SELECT current_database() AS database`);
    const census = await workers();
    return {
      database: rows[0]!.database,
      queue: deps.queue.name,
      workers: census === 'unreachable' ? null : census,
      // Said on every page while Redis does not answer: the counts are PostgreSQL's, nothing moves.
      redisUnreachable: census === 'unreachable',
      redisAdvice: REDIS_UNREACHABLE,
      noWorker: NO_WORKER,
      boardNote: BOARD_NOTE,
    };
  });
  app.get('/api/batches', async () => listBatches(deps.db, 100, await workers()));
  // New batch's options: every option the API takes (its schema), so the page offers all of them.
  app.get('/api/ingest-options', async () => optionFields());
  app.get<{ Params: { id: string } }>('/api/batches/:id', async (req) => liveStatus(deps.db, req.params.id, await workers()));
  app.get<{ Params: { id: string }; Querystring: { after?: string; limit?: string; outcome?: string; q?: string } }>(
    '/api/batches/:id/rows',
    async (req) => {
      const limit = Math.min(200, Math.max(1, Number(req.query.limit ?? 50) || 50));
      const outcome = req.query.outcome;
      if (outcome && !(OUTCOMES as readonly string[]).includes(outcome))
        throw new UsageError(`outcome must be one of ${OUTCOMES.join(', ')}`);
      const rows = await reportRows(deps.db, req.params.id, {
        afterLine: Number(req.query.after ?? 0) || 0,
        limit: limit + 1,
        ...(outcome ? { outcome: outcome as Outcome } : {}),
        ...(req.query.q ? { search: String(req.query.q).slice(0, 320) } : {}),
      });
      return { rows: rows.slice(0, limit), more: rows.length > limit };
    },
  );
  app.post<{ Params: { id: string } }>('/api/batches/:id/retry', async (req) => {
    const n = await retryFailed(deps.db, deps.queue, req.params.id);
    return { retried: n, message: `${n} failed row(s) queued again` };
  });
  app.post<{ Params: { id: string } }>('/api/batches/:id/cancel', async (req) => {
    const n = await cancelBatch(deps.db, deps, req.params.id);
    return { cancelled: n, message: `${n} waiting row(s) cancelled` };
  });
  app.post<{ Params: { id: string } }>('/api/batches/:id/resume', async (req) => {
    const n = await resumeCancelled(deps.db, deps.queue, req.params.id);
    return { resumed: n, message: `${n} cancelled row(s) queued again` };
  });
  // Reports stream from PostgreSQL a page at a time: constant memory for any batch size.
  const mustExist = async (req: { params: { id: string } }) => {
    if (!(await getBatchStatus(deps.db, req.params.id))) throw new BatchNotFoundError(req.params.id);
  };
  app.get<{ Params: { id: string } }>('/api/batches/:id/report.json', { preHandler: mustExist }, async (req, reply) =>
    reply
      .type('application/json; charset=utf-8')
      .header('content-disposition', attachment(`${req.params.id}-report.json`))
      .send(Readable.from(jsonReport(allReportRows(deps.db, req.params.id), { kind: await batchKind(deps.db, req.params.id) }))),
  );
  app.get<{ Params: { id: string } }>('/api/batches/:id/report.csv', { preHandler: mustExist }, async (req, reply) =>
    reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', attachment(`${req.params.id}-report.csv`))
      .send(Readable.from(csvReport(allReportRows(deps.db, req.params.id), { kind: await batchKind(deps.db, req.params.id) }))),
  );
  app.setErrorHandler((err, _req, reply) => {
    const status = err instanceof ProvisionError ? err.httpStatus : ((err as { statusCode?: number }).statusCode ?? 500);
    void reply.code(status).send({
      error: status >= 500 && !(err instanceof ProvisionError) ? 'internal error (see the dashboard log)' : (err as Error).message,
    });
  });
  // The versioned API (/api/v1), in its own plugin context (its error body, uploads); last: the
  // routes above take the error handler set when they are built, which this registration triggers.
  await registerApi(app, {
    db: deps.db,
    queue: deps.queue,
    redis: deps.redis,
    workers,
    maxBytes: deps.maxBytes ?? BATCH_LIMITS.bytes,
    ...(deps.provisioner ? { provisioner: deps.provisioner } : {}),
    ...(deps.tmpDir ? { tmpDir: deps.tmpDir } : {}),
  });
  return app;
}
