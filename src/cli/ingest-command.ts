// `dify-provision ingest FILE|-`: validate every row, record it, queue the valid ones.
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Config } from '../config/config.js';
import { readRows, type CsvRow } from '../csv/read-rows.js';
import { enqueueBatch, type EnqueueSummary } from '../queue/enqueue-batch.js';
import { asBatchId } from '../types.js';
import { batchIdForFile, batchIdForStdin } from './batch-id.js';
import { openQueue } from './context.js';

export interface IngestFlags {
  batchId?: string;
  dryRun?: boolean;
  ignoreUnknownColumns?: boolean;
  json?: boolean;
  attempts: number;
  backoffMs: number;
}

export function formatRejection(row: Extract<CsvRow, { ok: false }>): string {
  return row.errors.map((e) => `line ${row.line} (${e.field}): ${e.message}`).join('\n');
}

export async function ingestCommand(file: string, flags: IngestFlags, config: Config): Promise<number> {
  const input: Readable = file === '-' ? process.stdin : createReadStream(file);
  const rows = readRows(input, { ignoreUnknownColumns: flags.ignoreUnknownColumns ?? false });
  const onRejected = (row: Extract<CsvRow, { ok: false }>) => process.stderr.write(`${formatRejection(row)}\n`);

  if (flags.dryRun) {
    let valid = 0;
    let rejected = 0;
    for await (const row of rows) {
      if (row.ok) valid++;
      else {
        rejected++;
        onRejected(row);
      }
    }
    const summary = { dryRun: true, total: valid + rejected, wouldQueue: valid, rejected };
    process.stdout.write(flags.json ? `${JSON.stringify(summary)}\n` : `dry run: ${summary.total} rows read, would queue ${valid}, reject ${rejected}\n`);
    return rejected > 0 ? 2 : 0;
  }

  const batchId = flags.batchId ? asBatchId(flags.batchId) : file === '-' ? batchIdForStdin() : await batchIdForFile(file);
  const ctx = await openQueue(config);
  let summary: EnqueueSummary;
  try {
    summary = await enqueueBatch(rows, ctx, {
      batchId,
      source: file === '-' ? 'stdin' : file,
      retry: { attempts: flags.attempts, backoffMs: flags.backoffMs },
      onRejected,
    });
  } finally {
    await ctx.close();
  }
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } else {
    const again = summary.alreadyInBatch > 0 ? `, ${summary.alreadyInBatch} already in this batch` : '';
    process.stdout.write(`batch ${summary.batchId}: ${summary.total} rows read, ${summary.queued} queued, ${summary.rejected} rejected${again}\n`);
  }
  return 0;
}
