// `dify-provision ingest FILE|-`: validate every row, record it, queue the valid ones;
// --dry-run plans without writing, --strict queues nothing unless every row is valid,
// --wait follows the batch to the end.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { databaseOf, type Config } from '../config/config.js';
import { describeInput, newInputInfo, type Delimiter } from '../input/decode.js';
import { readRows, type ReadOptions } from '../input/read-rows.js';
import type { RejectedRow } from '../input/row-checker.js';
import { describeSchema, probeDifySchema, type Band } from '../dify/schema-probe.js';
import { batchIdForFile, batchIdForStdin } from '../ingest/batch-id.js';
import { StrictValidationError } from '../input/input-rows.js';
import { planBatch } from '../ingest/plan.js';
import { provisionerOn } from '../provisioner.js';
import { openDbRuntime, openQueueRuntime } from '../runtime/runtime.js';
import { escapeControls } from './terminal.js';
import { waitAndReport } from './wait-command.js';
import { bandQueuesDefaultPlugins, INSTALL_DEFAULT_PLUGINS, PLUGIN_QUEUE } from '../worker/dify-tasks.js';

export interface IngestFlags {
  batchId?: string;
  dryRun?: boolean;
  strict?: boolean;
  wait?: boolean;
  reportDir: string;
  overwrite?: boolean;
  createMissingOwners?: boolean;
  mintDatasetKeys?: boolean;
  invite?: boolean;
  invitePending?: boolean;
  sendInvites?: boolean;
  /** The operator's public key PEM (the file's content). */
  sealTo?: string;
  ignoreUnknownColumns?: boolean;
  delimiter?: Delimiter;
  encoding?: string;
  sheet?: string;
  allowDuplicateNames?: boolean;
  json?: boolean;
  attempts: number;
  backoffMs: number;
  maxRows?: number;
  maxBytes?: number;
}

/** Exit code when rows were invalid and nothing (strict) or not everything (dry run) would go. */
export const EXIT_INVALID = 2;

export function formatRejection(row: Pick<RejectedRow, 'line' | 'errors'>): string {
  return row.errors.map((e) => escapeControls(`line ${row.line} (${e.field}): ${e.message}`)).join('\n');
}
const dups = (n: number) => (n > 0 ? ` (${n} likely duplicate${n === 1 ? '' : 's'})` : '');
const printRejection = (row: Pick<RejectedRow, 'line' | 'errors'>) => process.stderr.write(`${formatRejection(row)}\n`);
const print = (flags: { json?: boolean }, json: object, text: string) =>
  process.stdout.write(flags.json ? `${JSON.stringify(json)}\n` : `${text}\n`);

export async function ingestCommand(file: string, flags: IngestFlags, config: Config): Promise<number> {
  const readOpts: ReadOptions = {
    ignoreUnknownColumns: flags.ignoreUnknownColumns ?? false,
    ...(flags.delimiter ? { delimiter: flags.delimiter } : {}),
    ...(flags.encoding ? { encoding: flags.encoding } : {}),
    ...(flags.sheet ? { sheet: flags.sheet } : {}),
    allowDuplicateNames: flags.allowDuplicateNames ?? false,
    source: file === '-' ? 'stdin' : file,
    ...(flags.maxBytes ? { maxBytes: flags.maxBytes } : {}),
  };
  // stdin can be read once; --strict reads it like a file (twice).
  const spool = file === '-' && flags.strict ? await spoolStdin() : undefined;
  const path = spool?.path ?? file;
  try {
    if (flags.dryRun) return await dryRun(path === '-' ? process.stdin : createReadStream(path), readOpts, flags, config);
    const batchId = flags.batchId ?? (file === '-' ? batchIdForStdin() : await batchIdForFile(path));
    const provisioner = provisionerOn(await openQueueRuntime(config));
    try {
      const batch = await provisioner
        .enqueueCsv(path === '-' ? process.stdin : path, {
          ...readOpts,
          batchId,
          retry: { attempts: flags.attempts, backoffMs: flags.backoffMs },
          ...(flags.maxRows ? { maxRows: flags.maxRows } : {}),
          createMissingOwners: flags.createMissingOwners ?? false,
          mintDatasetKeys: flags.mintDatasetKeys ?? false,
          ...(flags.invite || flags.invitePending ? { invite: true } : {}),
          ...(flags.invitePending ? { invitePending: true } : {}),
          ...(flags.sendInvites ? { sendInvites: true } : {}),
          strict: flags.strict ?? false,
          ...(flags.sealTo ? { sealTo: flags.sealTo } : {}),
          onRejected: printRejection,
        })
        .catch((err: unknown) => {
          if (!(err instanceof StrictValidationError)) throw err;
          for (const r of err.rejected) printRejection(r);
          print(
            flags,
            { strict: true, queued: 0, rejected: err.rejected.length },
            `--strict: ${err.rejected.length} invalid row(s); nothing was queued`,
          );
          return undefined;
        });
      if (!batch) return EXIT_INVALID;
      const s = batch.summary;
      const again = `${s.alreadyInBatch > 0 ? `, ${s.alreadyInBatch} already in this batch` : ''}${dups(s.likelyDuplicates)}`;
      if (!flags.wait || !flags.json)
        print(
          flags,
          s,
          `batch ${s.batchId}: ${s.total} rows read, ${s.queued} queued, ${s.rejected} rejected${again}\nread as ${describeInput(s.input ?? newInputInfo())}`,
        );
      return flags.wait
        ? await waitAndReport(batch, { reportDir: flags.reportDir, overwrite: flags.overwrite ?? false, json: flags.json ?? false })
        : 0;
    } finally {
      await provisioner.close();
    }
  } finally {
    if (spool) await spool.remove();
  }
}

async function dryRun(input: Readable, readOpts: ReadOptions, flags: IngestFlags, config: Config): Promise<number> {
  const info = newInputInfo();
  const rows = readRows(input, readOpts, info);
  if (!databaseOf(config)) {
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
    print(
      flags,
      { dryRun: true, total, wouldQueue: valid, rejected, input: info },
      `dry run: ${total} rows read, would queue ${valid}, reject ${rejected} (set DATABASE_URL to also check owners, existing rows and workspace ids)\nread as ${describeInput(info)}`,
    );
    return rejected > 0 ? EXIT_INVALID : 0;
  }
  // Read-only: no migration, no writes, no Redis.
  const rt = await openDbRuntime(config, { migrate: false, poolMax: 2 });
  try {
    const schema = await probeDifySchema(rt.db);
    const plan = await planBatch(rows, rt.db, {
      createMissingAccounts: flags.createMissingOwners ?? false,
      allowDuplicateNames: flags.allowDuplicateNames ?? false,
      accounts: { normalized: schema.normalizedEmail },
    });
    for (const p of plan.problems) printRejection({ line: p.line, errors: [p] });
    const afterCreate = difyTasksPlan(config, schema.band);
    print(
      flags,
      {
        dryRun: true,
        schema: describeSchema(schema),
        band: schema.band,
        ...plan,
        problems: undefined,
        input: info,
        ...(afterCreate ? { afterCreate } : {}),
      },
      `${describeSchema(schema)}\nplan: ${plan.total} rows: would create ${plan.wouldCreate}, skip ${plan.existing} existing, reject ${plan.rejected} invalid${dups(plan.likelyDuplicates)}, fail ${plan.wouldFail} (owners/ids)` +
        `${afterCreate ? `\nafter each workspace created: ${afterCreate}` : ''}\nread as ${describeInput(info)}`,
    );
    return plan.rejected + plan.wouldFail > 0 ? EXIT_INVALID : 0;
  } finally {
    await rt.close();
  }
}

/** What Dify's own Celery tasks after create_tenant become for this batch (its default plugins). */
function difyTasksPlan(config: Config, band: Band): string | undefined {
  if (config.defaultPluginsProblem)
    return `Dify's default-plugin task cannot be queued (workers will not start): ${config.defaultPluginsProblem.replace(/^invalid configuration:\s*/, '')}`;
  const settings = config.defaultPlugins;
  if (!settings) return undefined;
  if (!bandQueuesDefaultPlugins(band))
    return `nothing queued: NEW_USER_DEFAULT_PLUGIN_IDS is set, but this Dify's release has no default-plugin task`;
  return `${INSTALL_DEFAULT_PLUGINS}(tenant_id, [${settings.pluginIds.join(', ')}]) queued on the "${PLUGIN_QUEUE}" queue of ${settings.shown}`;
}

async function spoolStdin(): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'dify-provision-stdin-'));
  const path = join(dir, 'stdin.csv');
  await pipeline(process.stdin, createWriteStream(path, { mode: 0o600 }));
  return { path, remove: () => rm(dir, { recursive: true, force: true }) };
}
