// `dify-provision wait BATCH` (and `ingest --wait`): live progress until the batch is done, then a
// summary, the report files, and an exit code scripts can branch on (0: every row created or
// existing; 3: some row rejected, failed or cancelled).
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { writeNewFile } from '../common/files.js';
import type { BatchHandle } from '../provisioner.js';
import { NO_WORKER, REDIS_UNREACHABLE, type BatchStatus } from '../store/batches.js';
import { OUTCOMES } from '../common/types.js';
import { paintedState, workersWords } from './terminal.js';

export const EXIT_INCOMPLETE = 3;

export interface WaitFlags {
  reportDir: string;
  /** Replace report files left by an earlier run (else an existing file is an error). */
  overwrite?: boolean;
  intervalMs?: number;
  json?: boolean;
}

const finishedOf = (s: BatchStatus) => s.finished;
const unhappy = (s: BatchStatus) => s.counts.failed + s.counts.rejected + s.counts.cancelled;

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

/** Rate and ETA while workers answer rows; the missing worker instead while none serves the queue. */
function pace(s: BatchStatus, rate: number): string {
  // Redis down: nothing moves, and wait keeps waiting (from PostgreSQL) until it answers again.
  if (s.redisUnreachable) return `stalled: ${s.advice ?? REDIS_UNREACHABLE}; still waiting (the rows are in PostgreSQL)`;
  if (s.state === 'stalled') return `stalled: ${s.advice ?? NO_WORKER}`;
  return `${rate.toFixed(1)}/s, ETA ${formatEta(rate > 0 ? (s.total - finishedOf(s)) / rate : Infinity)} (${workersWords(s.workers)})`;
}

/**
 * Progress on a TTY as a bar; elsewhere a plain line every 5 seconds, at once when the state
 * changes (a worker stopped or started), and at the end.
 */
function progressView(out: NodeJS.WriteStream) {
  let started = Date.now();
  let firstDone: number | undefined;
  // The rate counts from the last time the batch was seen stalled: a stopped worker's rows don't count.
  const rate = (s: BatchStatus) => {
    if (s.state === 'stalled' || firstDone === undefined) {
      firstDone = finishedOf(s);
      started = Date.now();
    }
    const secs = (Date.now() - started) / 1000;
    return secs > 0 ? (finishedOf(s) - firstDone) / secs : 0;
  };
  if (out.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: ' {bar} {percentage}% | {value}/{total} rows | {pace} | failed {failed}', hideCursor: true, stream: out },
      cliProgress.Presets.shades_classic,
    );
    let startedBar = false;
    return {
      update(s: BatchStatus) {
        const payload = { pace: pace(s, rate(s)), failed: s.counts.failed };
        if (!startedBar) {
          bar.start(s.total, finishedOf(s), payload);
          startedBar = true;
        }
        bar.setTotal(s.total);
        bar.update(finishedOf(s), payload);
      },
      unreachable(why: string) {
        if (startedBar) bar.update({ pace: why });
      },
      stop: () => bar.stop(),
    };
  }
  let lastPrinted = 0;
  let lastState: BatchStatus['state'] | 'unreachable' | undefined;
  return {
    update(s: BatchStatus) {
      const r = rate(s);
      if (Date.now() - lastPrinted < 5000 && !s.done && s.state === lastState) return;
      lastPrinted = Date.now();
      lastState = s.state;
      const pct = s.total === 0 ? 100 : Math.floor((finishedOf(s) / s.total) * 100);
      out.write(`progress ${s.batchId}: ${finishedOf(s)}/${s.total} (${pct}%), ${pace(s, r)}, failed ${s.counts.failed}\n`);
    },
    // PostgreSQL does not answer (a restart, a failover): said at once, then every 5 seconds while it lasts.
    unreachable(why: string) {
      if (Date.now() - lastPrinted < 5000 && lastState === 'unreachable') return;
      lastPrinted = Date.now();
      lastState = 'unreachable';
      out.write(`waiting: ${why}\n`);
    },
    stop: () => {},
  };
}

export function summaryTable(s: BatchStatus): string {
  const rows = OUTCOMES.filter((o) => s.counts[o] > 0).map((o) => `  ${o.padEnd(10)} ${String(s.counts[o]).padStart(8)}`);
  return [`  ${'outcome'.padEnd(10)} ${'rows'.padStart(8)}`, ...rows, `  ${'total'.padEnd(10)} ${String(s.total).padStart(8)}`].join('\n');
}

/** Writes <dir>/<batch>-report.csv and .json (new files, unless `overwrite`); returns their paths. */
export async function writeReports(
  batch: Pick<BatchHandle, 'id' | 'reportCsv' | 'reportJson'>,
  dir: string,
  opts: { overwrite?: boolean; ifExists?: string } = {},
): Promise<{ csv: string; json: string }> {
  await mkdir(dir, { recursive: true });
  const csv = resolve(join(dir, `${batch.id}-report.csv`));
  const json = resolve(join(dir, `${batch.id}-report.json`));
  await writeNewFile(csv, batch.reportCsv(), opts);
  await writeNewFile(json, batch.reportJson(), opts);
  return { csv, json };
}

/** Ctrl-C stops following, not the batch: says so, and how to come back to it. */
export function interruptedHint(batchId: string): string {
  return (
    `\ninterrupted: batch ${batchId} goes on (the workers keep processing its rows).\n` +
    `  to follow it again: dify-provision wait ${batchId}\n` +
    `  to cancel the rest: dify-provision cancel ${batchId} (rows being processed finish)\n`
  );
}

export async function waitAndReport(
  batch: Pick<BatchHandle, 'id' | 'progress' | 'reportCsv' | 'reportJson'>,
  flags: WaitFlags,
): Promise<number> {
  const view = progressView(flags.json ? process.stderr : process.stdout);
  let status: BatchStatus | undefined;
  const interrupted = () => {
    view.stop();
    process.stderr.write(interruptedHint(batch.id));
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  try {
    for await (const s of batch.progress(flags.intervalMs ?? 500, (why) => view.unreachable(why))) {
      status = s;
      view.update(s);
    }
  } finally {
    process.off('SIGINT', interrupted);
    view.stop();
  }
  // A report file left by an earlier run: the batch itself is finished, and the message says so.
  const paths = await writeReports(batch, flags.reportDir, {
    overwrite: flags.overwrite ?? false,
    ifExists: `batch ${batch.id} finished (${status!.state}) but its report was not written: pass --overwrite to replace it, or --report-dir for another folder`,
  });
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ ...status, report: paths })}\n`);
  } else {
    process.stdout.write(
      `\nbatch ${batch.id} ${paintedState(status!.state)}:\n${summaryTable(status!)}\nreport: ${paths.csv}\n        ${paths.json}\n`,
    );
  }
  return unhappy(status!) === 0 ? 0 : EXIT_INCOMPLETE;
}
