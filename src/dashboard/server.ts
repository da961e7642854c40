// `dify-provision dashboard`: batches and rows live in a browser, bull-board for queue internals,
// a health check and Prometheus metrics. Bound to loopback and behind a token by default.
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Db } from '../db/pool.js';
import { cancelBatch, retryFailed } from '../queue/batch-control.js';
import { getBatchStatus, getThroughput, listBatches } from '../results/batches.js';
import { allReportRows, reportRows } from '../results/report.js';
import { csvHeader, csvLine, jsonChunks } from '../results/report-format.js';
import { Readable } from 'node:stream';
import { OUTCOMES, type Outcome } from '../types.js';
import { requireToken } from './auth.js';
import { createMetrics } from './metrics.js';
import { PAGE } from './page.js';

export interface DashboardDeps {
  db: Db;
  queue: Queue;
  redis: Redis;
  token: string;
}

export async function buildDashboard(deps: DashboardDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  requireToken(app, deps.token, ['/healthz']);
  const metrics = createMetrics(deps.db, deps.queue);

  const board = new FastifyAdapter();
  board.setBasePath('/queues');
  createBullBoard({ queues: [new BullMQAdapter(deps.queue)], serverAdapter: board, options: { uiConfig: { boardTitle: 'dify-provision' } } });
  await app.register(board.registerPlugin() as never, { prefix: '/queues' });

  const page = (_req: unknown, reply: { type(t: string): { send(b: string): unknown } }) => reply.type('text/html; charset=utf-8').send(PAGE);
  app.get('/', page);
  app.get('/batches/:id', page);

  app.get('/healthz', async (_req, reply) => {
    const checks = await Promise.allSettled([deps.db.query('SELECT 1'), deps.redis.ping()]);
    const ok = checks.every((c) => c.status === 'fulfilled');
    return reply.code(ok ? 200 : 503).send({ ok, postgres: checks[0].status === 'fulfilled', redis: checks[1].status === 'fulfilled' });
  });
  app.get('/metrics', async (_req, reply) => reply.type(metrics.contentType).send(await metrics.metrics()));

  app.get('/api/batches', async () => listBatches(deps.db));
  app.get<{ Params: { id: string } }>('/api/batches/:id', async (req, reply) => {
    const status = await getBatchStatus(deps.db, req.params.id);
    if (!status) return reply.code(404).send({ error: `no batch "${req.params.id}"` });
    return { ...status, throughput: await getThroughput(deps.db, req.params.id, status.counts.queued + status.counts.active) };
  });
  app.get<{ Params: { id: string }; Querystring: { after?: string; limit?: string; outcome?: string } }>('/api/batches/:id/rows', async (req, reply) => {
    const limit = Math.min(200, Math.max(1, Number(req.query.limit ?? 50) || 50));
    const outcome = req.query.outcome;
    if (outcome && !(OUTCOMES as readonly string[]).includes(outcome)) return reply.code(400).send({ error: `outcome must be one of ${OUTCOMES.join(', ')}` });
    const rows = await reportRows(deps.db, req.params.id, { afterLine: Number(req.query.after ?? 0) || 0, limit: limit + 1, ...(outcome ? { outcome: outcome as Outcome } : {}) });
    return { rows: rows.slice(0, limit), more: rows.length > limit };
  });
  app.post<{ Params: { id: string } }>('/api/batches/:id/retry', async (req) => {
    const n = await retryFailed(deps.db, deps.queue, req.params.id);
    return { retried: n, message: `${n} failed row(s) queued again` };
  });
  app.post<{ Params: { id: string } }>('/api/batches/:id/cancel', async (req) => {
    const n = await cancelBatch(deps.db, deps.queue, req.params.id);
    return { cancelled: n, message: `${n} waiting row(s) cancelled` };
  });
  // Reports stream from PostgreSQL a page at a time: constant memory for any batch size.
  app.get<{ Params: { id: string } }>('/api/batches/:id/report.json', async (req, reply) =>
    reply
      .type('application/json; charset=utf-8')
      .header('content-disposition', `attachment; filename="${req.params.id}-report.json"`)
      .send(Readable.from(jsonChunks(allReportRows(deps.db, req.params.id)))),
  );
  app.get<{ Params: { id: string } }>('/api/batches/:id/report.csv', async (req, reply) => {
    async function* csv() {
      yield csvHeader();
      for await (const r of allReportRows(deps.db, req.params.id)) yield csvLine(r);
    }
    return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${req.params.id}-report.csv"`).send(Readable.from(csv()));
  });
  app.setErrorHandler((err, _req, reply) => {
    const message = err instanceof Error ? err.message : String(err);
    void reply.code(/^no batch/.test(message) ? 404 : ((err as { statusCode?: number }).statusCode ?? 500)).send({ error: message });
  });
  return app;
}
