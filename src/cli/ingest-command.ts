// `dify-provision ingest FILE|-`: validate every row, record it, queue the valid ones;
// --dry-run plans without writing, --strict queues nothing unless every row is valid,
// --wait follows the batch to the end.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { databaseOf, refuseUnusableInvitations, type Config } from '../config/config.js';
import { sealKeyOf } from '../crypto/sealing.js';
import { describeInput, newInputInfo } from '../input/decode.js';
import { readRows, WORKSPACE_ROWS, type ReadOptions } from '../input/read-rows.js';
import { checkInputFile } from '../input/read-options.js';
import { mapEntryProblem, type Vocabulary } from '../input/header.js';
import { UsageError } from '../common/errors.js';
import { describeSchema, probeDifySchema, type Band } from '../dify/schema-probe.js';
import { batchIdForFile, batchIdForStdin } from '../ingest/batch-id.js';
import { planBatch, type PlanRow } from '../ingest/plan.js';
import { provisionerOn } from '../provisioner.js';
import { openDbRuntime, openQueueRuntime } from '../runtime/runtime.js';
import { counted, EXIT_INVALID, print, printRejection, refusedWhenStrict } from './rejections.js';
import { escapeControls } from './terminal.js';
import type { BatchFileFlags } from './options.js';
import { waitAndReport } from './wait-command.js';
import { bandQueuesDefaultPlugins, INSTALL_DEFAULT_PLUGINS, PLUGIN_QUEUE } from '../worker/dify-tasks.js';

export interface IngestFlags extends BatchFileFlags {
  mintDatasetKeys?: boolean;
  invitePending?: boolean;
  /** --dry-run --rows [n]: list the first n rows (true: 1000). */
  rows?: number | true;
  allowDuplicateNames?: boolean;
}

const dups = (n: number) => (n > 0 ? ` (${n} likely duplicate${n === 1 ? '' : 's'})` : '');

export async function ingestCommand(file: string, flags: IngestFlags, config: Config): Promise<number> {
  await checkInputFile(file);
  const readOpts: ReadOptions = {
    ...fileReadOptions(file, flags, WORKSPACE_ROWS),
    allowDuplicateNames: flags.allowDuplicateNames ?? false,
  };
  // stdin can be read once; --strict reads it like a file (twice).
  const spool = file === '-' && flags.strict ? await spoolStdin() : undefined;
  const path = spool?.path ?? file;
  try {
    // The dry run plans for the batch the rows would go into (the pre-claim guard does not count its own links).
    const batchId = flags.batchId ?? (file === '-' ? batchIdForStdin() : await batchIdForFile(path));
    if (flags.dryRun) return await dryRun(path === '-' ? process.stdin : createReadStream(path), readOpts, flags, config, batchId);
    const provisioner = provisionerOn(await openQueueRuntime(config));
    try {
      const batch = await provisioner
        .enqueueCsv(path === '-' ? process.stdin : path, {
          ...readOpts,
          batchId,
          retry: { attempts: flags.attempts, backoffMs: flags.backoffMs },
          ...(flags.maxRows ? { maxRows: flags.maxRows } : {}),
          createMissingOwners: flags.createMissingOwners ?? false,
          ...(flags.trustAccount ? { trustAccounts: flags.trustAccount } : {}),
          mintDatasetKeys: flags.mintDatasetKeys ?? false,
          ...(flags.invite || flags.invitePending ? { invite: true } : {}),
          ...(flags.invitePending ? { invitePending: true } : {}),
          ...(flags.sendInvites ? { sendInvites: true } : {}),
          strict: flags.strict ?? false,
          ...(flags.sealTo ? { sealTo: flags.sealTo } : {}),
          onRejected: printRejection,
        })
        .catch(refusedWhenStrict(flags));
      if (!batch) return EXIT_INVALID;
      const s = batch.summary;
      const again = `${s.alreadyInBatch > 0 ? `, ${s.alreadyInBatch} already in this batch` : ''}${dups(s.likelyDuplicates)}`;
      if (!flags.wait || !flags.json)
        print(
          flags,
          s,
          `batch ${s.batchId}: ${counted(s.total, 'row')} read, ${s.queued} queued, ${s.rejected} rejected${again}\nread as ${describeInput(s.input ?? newInputInfo())}`,
        );
      if (s.notApplied) process.stderr.write(`${notAppliedWords(s.batchId, s.notApplied, flags)}\n`);
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

async function dryRun(input: Readable, readOpts: ReadOptions, flags: IngestFlags, config: Config, batchId: string): Promise<number> {
  // What the real ingest refuses before recording anything, the plan refuses too, naming the setting.
  refuseUnusableInvitations(config, flags);
  sealKeyOf(flags);
  const info = newInputInfo();
  const rows = readRows(input, readOpts, info);
  const listRows = flags.rows === undefined ? undefined : flags.rows === true ? 1000 : flags.rows;
  if (!databaseOf(config)) {
    let valid = 0;
    let rejected = 0;
    const listed: PlanRow[] = [];
    const problems: { line: number; field: string; message: string }[] = [];
    for await (const row of rows) {
      if (row.ok) valid++;
      else {
        rejected++;
        printRejection(row);
        if (listRows !== undefined && listed.length < listRows) problems.push(...row.errors.map((e) => ({ line: row.line, ...e })));
      }
      if (listRows !== undefined && listed.length < listRows)
        listed.push({
          line: row.line,
          workspaceName: (row.ok ? row.row.workspaceName : row.raw.workspaceName) ?? null,
          ownerEmail: (row.ok ? row.row.ownerEmail : row.raw.ownerEmail) ?? null,
          verdict: row.ok ? 'would_create' : 'rejected',
        });
    }
    const total = valid + rejected;
    if (listRows !== undefined && !flags.json) printRows(listed, problems);
    print(
      flags,
      { dryRun: true, total, wouldQueue: valid, rejected, input: info, ...(listRows !== undefined ? { rows: listed } : {}) },
      `dry run: ${counted(total, 'row')} read, would queue ${valid}, reject ${rejected} (set DATABASE_URL to also check owners, existing rows and workspace ids)\nread as ${describeInput(info)}`,
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
      ...(listRows !== undefined ? { listRows } : {}),
      batchId,
      ...(flags.trustAccount ? { trustAccounts: flags.trustAccount } : {}),
      ...(flags.sealTo ? { sealTo: flags.sealTo } : {}),
    });
    for (const p of plan.problems) printRejection({ line: p.line, errors: [p] });
    if (plan.rows && !flags.json) printRows(plan.rows, plan.problems);
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
      `${describeSchema(schema)}\nplan: ${counted(plan.total, 'row')}: would create ${plan.wouldCreate}, skip ${plan.existing} existing, reject ${plan.rejected} invalid${dups(plan.likelyDuplicates)}, fail ${plan.wouldFail} (owners/ids)` +
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

/**
 * --dry-run --rows: one line per row, its verdict, the accounts it would create with their profile,
 * and for a row rejected or failing why (`problems`, by line: field and message, as listed above it).
 */
function printRows(rows: PlanRow[], problems: { line: number; field: string; message: string }[]): void {
  const why = new Map<number, string[]>();
  for (const p of problems) why.set(p.line, [...(why.get(p.line) ?? []), `${p.field}: ${p.message}`]);
  for (const r of rows) {
    const accounts = (r.newAccounts ?? []).map((a) => `${a.email} (${a.name}, ${a.language}, ${a.timezone})`);
    const creates = accounts.length > 0 ? `; creates ${accounts.join(', ')}` : '';
    const reasons = r.verdict === 'rejected' || r.verdict === 'would_fail' ? (why.get(r.line) ?? []) : [];
    const because = reasons.length > 0 ? ` — ${reasons.join('; ')}` : '';
    process.stdout.write(
      `${escapeControls(`line ${r.line}: ${r.verdict} ${JSON.stringify(r.workspaceName ?? '')} owner ${r.ownerEmail ?? '?'}${creates}${because}`)}\n`,
    );
  }
}

/**
 * How ingest and apply read `file` (- is stdin), whose columns are `kind`'s: --ignore-unknown-columns,
 * --delimiter, --encoding, --sheet, --header-row, --map (each entry checked), --max-bytes.
 */
export function fileReadOptions(file: string, flags: BatchFileFlags, kind: Vocabulary): ReadOptions {
  return {
    ignoreUnknownColumns: flags.ignoreUnknownColumns ?? false,
    ...(flags.delimiter ? { delimiter: flags.delimiter } : {}),
    ...(flags.encoding ? { encoding: flags.encoding } : {}),
    ...(flags.sheet ? { sheet: flags.sheet } : {}),
    ...(flags.headerRow ? { headerRow: flags.headerRow } : {}),
    ...(flags.map ? { columnMap: checkedMap(kind, flags.map) } : {}),
    source: file === '-' ? 'stdin' : file,
    ...(flags.maxBytes ? { maxBytes: flags.maxBytes } : {}),
  };
}

/** --map's entries, each naming a column of the file (`kind`: workspaces, changes, memberships) or - to drop it. */
function checkedMap(kind: Vocabulary, map: Record<string, string>): Record<string, string> {
  for (const [heading, column] of Object.entries(map)) {
    const problem = mapEntryProblem(kind, heading, column);
    if (problem) throw new UsageError(`--map "${heading}=${column}": ${problem}`);
  }
  return map;
}

async function spoolStdin(): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'dify-provision-stdin-'));
  const path = join(dir, 'stdin.csv');
  await pipeline(process.stdin, createWriteStream(path, { mode: 0o600 }));
  return { path, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** The flag of each option a run of an existing batch asked for beyond the batch's (EnqueueSummary.notApplied). */
const FLAG_OF: Record<string, string> = {
  createMissingOwners: '--create-missing-owners',
  trustAccounts: '--trust-account',
  mintDatasetKeys: '--mint-dataset-keys',
  invite: '--invite',
  invitePending: '--invite-pending',
  sendInvites: '--send-invites',
  sealTo: '--seal-to',
  retry: '--attempts/--backoff-ms',
};

/** What to tell an operator who ran an existing batch again with options it was not made with, and what to do instead. */
export function notAppliedWords(batchId: string, notApplied: string[], flags: { trustAccount?: string[] }): string {
  const named = notApplied.map((k) => FLAG_OF[k] ?? k);
  const retryable = [
    ...(notApplied.includes('createMissingOwners') ? ['--create-missing-owners'] : []),
    ...(notApplied.includes('trustAccounts') ? (flags.trustAccount ?? []).map((e) => `--trust-account ${shellWord(e)}`) : []),
  ];
  const others = notApplied.filter((k) => k !== 'createMissingOwners' && k !== 'trustAccounts');
  return (
    `batch ${batchId} existed already, made without this run's ${named.join(', ')}: a batch keeps the options it was made with, so ${
      named.length === 1 ? 'it was' : 'they were'
    } not applied` +
    (retryable.length > 0 ? `; for its failed rows run: dify-provision retry ${batchId} ${retryable.join(' ')}` : '') +
    (others.length > 0
      ? `; for ${others.map((k) => FLAG_OF[k] ?? k).join(', ')}, ingest under a new --batch-id (rows created already answer "existing")`
      : '')
  );
}

/** An address as one shell word (quoted when it holds anything but the plain characters of an address). */
const shellWord = (w: string) => (/^[A-Za-z0-9@._+-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`);
