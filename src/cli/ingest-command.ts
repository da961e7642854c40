// `dify-provision ingest FILE|-`: validate every row, record it, queue the valid ones;
// --dry-run plans without writing, --strict queues nothing unless every row is valid,
// --wait follows the batch to the end.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../config/config.js';
import { readRows, type CsvRow, type ReadOptions } from '../csv/read-rows.js';
import { createPool } from '../db/pool.js';
import { createProvisioner } from '../provisioner.js';
import { planBatch } from '../queue/plan.js';
import { requireConfig } from '../config/config.js';
import { batchIdForFile, batchIdForStdin } from './batch-id.js';
import { waitAndReport } from './wait-command.js';

export interface IngestFlags {
  batchId?: string;
  dryRun?: boolean;
  strict?: boolean;
  wait?: boolean;
  reportDir: string;
  createMissingOwners?: boolean;
  mintDatasetKeys?: boolean;
  /** The operator's public key PEM (the file's content). */
  sealTo?: string;
  ignoreUnknownColumns?: boolean;
  json?: boolean;
  attempts: number;
  backoffMs: number;
}

/** Exit code when rows were invalid and nothing (strict) or not everything (dry run) would go. */
export const EXIT_INVALID = 2;

export function formatRejection(row: Extract<CsvRow, { ok: false }>): string {
  return row.errors.map((e) => `line ${row.line} (${e.field}): ${e.message}`).join('\n');
}
const printRejection = (row: Extract<CsvRow, { ok: false }>) => process.stderr.write(`${formatRejection(row)}\n`);
const print = (flags: { json?: boolean }, json: object, text: string) => process.stdout.write(flags.json ? `${JSON.stringify(json)}\n` : `${text}\n`);

export async function ingestCommand(file: string, flags: IngestFlags, config: Config): Promise<number> {
  const readOpts: ReadOptions = { ignoreUnknownColumns: flags.ignoreUnknownColumns ?? false };
  // stdin can be read once; --strict and --dry-run with a plan read it like a file.
  const spool = file === '-' && flags.strict ? await spoolStdin() : undefined;
  const path = spool?.path ?? file;
  const open = (): Readable => (path === '-' ? process.stdin : createReadStream(path));
  try {
    if (flags.dryRun) return await dryRun(open, readOpts, flags, config);
    if (flags.strict) {
      let bad = 0;
      for await (const row of readRows(open(), readOpts)) {
        if (!row.ok) {
          bad++;
          printRejection(row);
        }
      }
      if (bad > 0) {
        print(flags, { strict: true, queued: 0, rejected: bad }, `--strict: ${bad} invalid row(s); nothing was queued`);
        return EXIT_INVALID;
      }
    }
    const batchId = flags.batchId ?? (file === '-' ? batchIdForStdin() : await batchIdForFile(path));
    const provisioner = await createProvisioner(requireConfig(config, 'redisUrl', 'databaseUrl'));
    try {
      const batch = await provisioner.enqueueCsv(open(), {
        ...readOpts,
        batchId,
        source: file === '-' ? 'stdin' : file,
        retry: { attempts: flags.attempts, backoffMs: flags.backoffMs },
        createMissingOwners: flags.createMissingOwners ?? false,
        mintDatasetKeys: flags.mintDatasetKeys ?? false,
        ...(flags.sealTo ? { sealTo: flags.sealTo } : {}),
        onRejected: (r) => printRejection({ ...r, ok: false, raw: {} }),
      });
      const s = batch.summary;
      const again = s.alreadyInBatch > 0 ? `, ${s.alreadyInBatch} already in this batch` : '';
      if (!flags.wait || !flags.json) print(flags, s, `batch ${s.batchId}: ${s.total} rows read, ${s.queued} queued, ${s.rejected} rejected${again}`);
      return flags.wait ? await waitAndReport(batch, { reportDir: flags.reportDir, json: flags.json ?? false }) : 0;
    } finally {
      await provisioner.close();
    }
  } finally {
    if (spool) await spool.remove();
  }
}

async function dryRun(open: () => Readable, readOpts: ReadOptions, flags: IngestFlags, config: Config): Promise<number> {
  const rows = readRows(open(), readOpts);
  if (!config.databaseUrl) {
    let valid = 0;
    let rejected = 0;
    for await (const row of rows) {
      if (row.ok) valid++;
      else {
        rejected++;
        printRejection(row);
      }
    }
    const total = valid + rejected;
    print(flags, { dryRun: true, total, wouldQueue: valid, rejected }, `dry run: ${total} rows read, would queue ${valid}, reject ${rejected} (set DATABASE_URL to also check owners, existing rows and workspace ids)`);
    return rejected > 0 ? EXIT_INVALID : 0;
  }
  // Read-only: no migration, no writes, no Redis.
  const db = createPool(config.databaseUrl, 2);
  try {
    const plan = await planBatch(rows, db, { createMissingAccounts: flags.createMissingOwners ?? false });
    for (const p of plan.problems) process.stderr.write(`line ${p.line} (${p.field}): ${p.message}\n`);
    print(
      flags,
      { dryRun: true, ...plan, problems: undefined },
      `plan: ${plan.total} rows: would create ${plan.wouldCreate}, skip ${plan.existing} existing, reject ${plan.rejected} invalid, fail ${plan.wouldFail} (owners/ids)`,
    );
    return plan.rejected + plan.wouldFail > 0 ? EXIT_INVALID : 0;
  } finally {
    await db.end();
  }
}

async function spoolStdin(): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'dify-provision-stdin-'));
  const path = join(dir, 'stdin.csv');
  await pipeline(process.stdin, createWriteStream(path, { mode: 0o600 }));
  return { path, remove: () => rm(dir, { recursive: true, force: true }) };
}
