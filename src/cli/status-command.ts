// `dify-provision status BATCH`: counts per outcome, from PostgreSQL.
import type { Config } from '../config/config.js';
import { getBatchStatus, type BatchStatus } from '../results/batches.js';
import { OUTCOMES } from '../types.js';
import { openDb } from './context.js';

export function formatStatus(s: BatchStatus): string {
  const finished = s.total - s.counts.queued - s.counts.active;
  const pct = s.total === 0 ? 100 : Math.floor((finished / s.total) * 100);
  const state = s.done ? 'done' : s.ingested ? 'running' : 'ingesting';
  const counts = OUTCOMES.filter((o) => s.counts[o] > 0 || o !== 'cancelled').map((o) => `${o} ${s.counts[o]}`).join(', ');
  return `batch ${s.batchId} (${state}): ${finished}/${s.total} rows finished (${pct}%): ${counts}`;
}

export async function statusCommand(batchId: string, flags: { json?: boolean }, config: Config): Promise<number> {
  const ctx = await openDb(config);
  try {
    const status = await getBatchStatus(ctx.db, batchId);
    if (!status) {
      process.stderr.write(`no batch "${batchId}"\n`);
      return 1;
    }
    process.stdout.write(flags.json ? `${JSON.stringify(status)}\n` : `${formatStatus(status)}\n`);
    return 0;
  } finally {
    await ctx.close();
  }
}
