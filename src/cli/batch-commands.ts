// Commands on existing batches: status, wait, report, retry, cancel, batches.
import type { Config } from '../config/config.js';
import { writeNewFile } from '../common/files.js';
import type { ServerStatus } from '../provisioner.js';
import { trustingWords } from '../queue/batch-control.js';
import { otherLineageAdvice } from '../queue/server-watch.js';
import { withProvisioner, withReader, type Reader } from './context.js';
import { NO_WORKER, REDIS_UNREACHABLE, STATE_WORDS, type BatchListing, type BatchStatus, type Workers } from '../store/batches.js';
import { OUTCOMES } from '../common/types.js';
import { escapeControls, paintedState, workersWords } from './terminal.js';
import { waitAndReport } from './wait-command.js';

const PROVISION_SHOWN = ['queued', 'active', 'created', 'existing', 'rejected', 'failed'];
const CHANGE_SHOWN = ['queued', 'active', 'applied', 'unchanged', 'rejected', 'failed'];

/** One line: the batch's state, progress and counts; then what to do, when something is needed. */
export function formatStatus(s: BatchStatus): string {
  const finishedRows = s.finished;
  const pct = s.total === 0 ? 100 : Math.floor((finishedRows / s.total) * 100);
  // Each kind's own outcomes, always; the other kind's and cancelled only when some row has them.
  const own: readonly string[] = s.kind === 'changes' ? CHANGE_SHOWN : PROVISION_SHOWN;
  const counts = OUTCOMES.filter((o) => s.counts[o] > 0 || own.includes(o))
    // Active rows while Redis is down are not running: they wait for Redis.
    .map((o) => `${o} ${s.counts[o]}${o === 'active' && s.waitingForRedis > 0 ? ' (waiting for Redis)' : ''}`)
    .join(', ');
  const line = `batch ${s.batchId} (${paintedState(s.state)}): ${finishedRows}/${s.total} rows finished (${pct}%): ${counts}`;
  return s.advice ? `${line}\n${s.advice}` : line;
}

/**
 * A listed batch's counts in words: its kind's finished outcomes always ("created 6, existing 0,
 * failed 1, rejected 1"; "applied 8, unchanged 0, failed 0, rejected 0"), queued, active, cancelled
 * and the other kind's outcomes only when some row has them.
 */
export function listedCounts(b: Pick<BatchListing, 'kind' | 'counts'>): string {
  const own = b.kind === 'changes' ? ['applied', 'unchanged', 'failed', 'rejected'] : ['created', 'existing', 'failed', 'rejected'];
  const waiting = (['queued', 'active'] as const).filter((o) => b.counts[o] > 0);
  const others = OUTCOMES.filter((o) => b.counts[o] > 0 && !own.includes(o) && o !== 'queued' && o !== 'active');
  return [...waiting, ...(own as (typeof OUTCOMES)[number][]), ...others].map((o) => `${o} ${b.counts[o]}`).join(', ');
}

/** "queue … serves Dify database …; N workers". */
const servesLine = (p: Pick<Reader, 'queue'>, workers: Workers) =>
  `queue ${p.queue.name} serves Dify database "${p.queue.database}"; ${workersWords(workers)}`;
/** Lines about the PostgreSQL server behind the queue, when something is wrong (else nothing). */
export function describeServer(server: ServerStatus): string {
  // A conflict, or (open) a copy of this database sharing the queue.
  const lines = server.message && server.gate !== 'waiting' ? [`warning: ${server.message}`] : [];
  for (const o of server.otherServers)
    lines.push(
      `warning: ${o.rows} row(s) wait for another PostgreSQL server (lineage ${o.lineage}) and are not run here: ${otherLineageAdvice(o.lineage)}`,
    );
  return lines.map((l) => `${escapeControls(l)}\n`).join('');
}

// status, report and batches answer from PostgreSQL when Redis does not (withReader), saying so.
export const statusCommand = (batchId: string, flags: { json?: boolean }, config: Config) =>
  withReader(config, async (p) => {
    const s = await p.batch(batchId).status();
    const dify = await p.difySchema();
    // Open rows whose job Redis lost (flushed, failed over without persistence): said, not hidden.
    const rowsWithoutJob = s.redisUnreachable ? undefined : p.batch(batchId).rowsWithoutJob;
    const withoutJob = s.open > 0 && rowsWithoutJob ? await rowsWithoutJob() : 0;
    const lost =
      withoutJob > 0
        ? `${withoutJob} row(s) wait without a job in Redis (it was flushed, or failed over without persistence): a running worker queues them again within about two minutes (or re-run the ingest)\n`
        : '';
    const server = s.redisUnreachable || !p.serverStatus ? undefined : await p.serverStatus(batchId);
    const workers = s.redisUnreachable ? 'unreachable' : s.workers;
    process.stdout.write(
      flags.json
        ? `${JSON.stringify({ ...s, withoutJob, difySchema: dify, queue: p.queue, ...(server ? { server } : {}) })}\n`
        : `${formatStatus(s)}\n${lost}${dify}; ${servesLine(p, workers)}\n${server ? describeServer(server) : ''}`,
    );
    return 0;
  });

// wait follows the batch from PostgreSQL when Redis does not answer (at the start or later), and keeps waiting, saying so.
export const waitCommand = (batchId: string, flags: { json?: boolean; reportDir: string; overwrite?: boolean }, config: Config) =>
  withReader(config, (p) => waitAndReport(p.batch(batchId), flags), { followRedis: true });

export const reportCommand = (batchId: string, flags: { format: 'csv' | 'json'; out?: string; overwrite?: boolean }, config: Config) =>
  withReader(config, async (p) => {
    const batch = p.batch(batchId);
    await batch.status(); // says clearly when there is no such batch
    if (flags.out) {
      const chunks = flags.format === 'json' ? batch.reportJson() : batch.reportCsv();
      await writeNewFile(flags.out, chunks, {
        overwrite: flags.overwrite ?? false,
        ifExists: 'pass --overwrite to replace it, or a new --out file',
      });
      process.stderr.write(`report written to ${flags.out}\n`);
    } else {
      // Standard output, a terminal or a pipe (which often ends on one: | head, | less -R, a CI
      // log): control characters in cells are escaped (JSON's escapes are lossless; CSV cells show
      // them as \uXXXX). --out FILE writes the exact data.
      const chunks = flags.format === 'json' ? batch.reportJson() : batch.reportCsv({ escapeControls: true });
      for await (const chunk of chunks)
        if (!process.stdout.write(chunk)) await new Promise<void>((r) => process.stdout.once('drain', () => r()));
    }
    return 0;
  });

export const retryCommand = (
  batchId: string,
  flags: { cancelled?: boolean; trustAccount?: string[]; createMissingOwners?: boolean },
  config: Config,
) =>
  withProvisioner(config, async (p) => {
    const batch = p.batch(batchId);
    const opts = {
      ...(flags.trustAccount ? { trustAccounts: flags.trustAccount } : {}),
      ...(flags.createMissingOwners ? { createMissingOwners: true } : {}),
    };
    const n = flags.cancelled ? await batch.resumeCancelled(opts) : await batch.retryFailed(opts);
    process.stdout.write(
      `batch ${batchId}: ${n} ${flags.cancelled ? 'cancelled' : 'failed'} row(s) queued again${trustingWords(opts, n)}\n`,
    );
    return 0;
  });

export const cancelCommand = (batchId: string, config: Config) =>
  withProvisioner(config, async (p) => {
    const n = await p.batch(batchId).cancel();
    process.stdout.write(`batch ${batchId}: ${n} waiting row(s) cancelled; rows being processed finish\n`);
    return 0;
  });

export const batchesCommand = (flags: { json?: boolean }, config: Config) =>
  withReader(config, async (p) => {
    const list = await p.batches();
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(list)}\n`);
      return 0;
    }
    const workers = list[0] ? (list[0].redisUnreachable ? 'unreachable' : list[0].workers) : await p.workers();
    process.stdout.write(`${servesLine(p, workers)}\n`);
    const width = Math.max(...Object.values(STATE_WORDS).map((w) => w.length));
    // Each kind's own counts, named (an ingest batch's created and existing, a change batch's applied and unchanged).
    process.stdout.write(
      `${'batch'.padEnd(36)} ${'state'.padEnd(width)} ${'kind'.padEnd(7)} ${'total'.padStart(7)}  ${'created at'.padEnd(24)}  counts\n`,
    );
    for (const b of list) {
      // Padded before painting: colour codes have no width.
      const state = paintedState(b.state) + ' '.repeat(width - STATE_WORDS[b.state].length);
      const kind = b.kind === 'changes' ? 'changes' : 'ingest';
      process.stdout.write(
        `${b.batchId.padEnd(36)} ${state} ${kind.padEnd(7)} ${String(b.total).padStart(7)}  ${b.createdAt.toISOString()}  ${listedCounts(b)}\n`,
      );
    }
    if (list.some((b) => b.state === 'stalled')) process.stdout.write(`${workers === 'unreachable' ? REDIS_UNREACHABLE : NO_WORKER}\n`);
    return 0;
  });
