// `dify-provision apply FILE|-`: changes to existing workspaces (add/remove members, roles, the
// owner, names, archive/restore), one per row, recorded as a batch and run by the workers like an
// ingest batch (status, wait, report, retry, cancel). --dry-run prints the plan from PostgreSQL
// without writing ("would add 12, remove 3, …; 2 refused"), exit 2 when a row would be refused.
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { CHANGE_ROWS, type CheckedChange } from '../changes/change-row.js';
import { describePlan, planChanges, type ChangePlanRow } from '../changes/plan.js';
import { scopeOf, withinScope } from '../changes/scope.js';
import { sameWorkspaceRules } from '../changes/same-workspace.js';
import { sealKeyOf } from '../crypto/sealing.js';
import { SYNC_ROWS, syncChanges, type SyncRow } from '../changes/sync.js';
import { databaseOf, refuseUnusableInvitations, type Config } from '../config/config.js';
import { newInputInfo, describeInput } from '../input/decode.js';
import { readRecords, type Checked, type ReadOptions } from '../input/read-rows.js';
import { describeSchema, probeDifySchema } from '../dify/schema-probe.js';
import { provisionerOn } from '../provisioner.js';
import { openDbRuntime, openQueueRuntime } from '../runtime/runtime.js';
import { generatedBatchId } from '../common/types.js';
import { fileReadOptions } from './ingest-command.js';
import { checkInputFile } from '../input/read-options.js';
import { counted, EXIT_INVALID, print, printRejection, refusedWhenStrict } from './rejections.js';
import { escapeControls } from './terminal.js';
import type { BatchFileFlags } from './options.js';
import { waitAndReport } from './wait-command.js';

export interface ApplyFlags extends BatchFileFlags {
  /** The file lists each named workspace's complete membership (workspace_id or external_id, email, role). */
  sync?: boolean;
  /** --within BATCH[,BATCH…] (repeatable): the ingest batches whose workspaces the rows may name. */
  within?: string[];
  /** --dry-run --rows [n]: list the first n rows with their verdict (true: 1000). */
  rows?: number | true;
}

/**
 * A fresh batch id each run, named after the file: applying the same file again is a new batch
 * whose rows answer `unchanged` (Dify says so already); --batch-id re-runs a batch itself.
 */
const batchIdFor = (file: string) =>
  generatedBatchId(
    file === '-'
      ? 'changes'
      : basename(file)
          .replace(/\.[^.]*$/, '')
          .replace(/[^A-Za-z0-9._-]+/g, '-')
          .replace(/^[^A-Za-z0-9]+/, '')
          .slice(0, 40) || 'changes',
  );

export async function applyCommand(file: string, flags: ApplyFlags, config: Config): Promise<number> {
  await checkInputFile(file);
  const within = scopeOf(flags.within);
  const readOpts: ReadOptions = {
    ...fileReadOptions(file, flags, flags.sync ? SYNC_ROWS : CHANGE_ROWS),
    // What the checks across the file hold (and a membership file, read whole) has the batch's bounds.
    ...(flags.maxRows ? { maxRows: flags.maxRows } : {}),
  };
  const input = () => (file === '-' ? process.stdin : createReadStream(file));
  if (flags.dryRun) return dryRun(input(), readOpts, { ...flags, ...(within ? { within } : {}) }, config);
  // --strict on stdin (read once) holds the rows in memory; a file is read twice.
  const provisioner = provisionerOn(await openQueueRuntime(config));
  try {
    const batch = await provisioner
      .applyFile(file === '-' ? process.stdin : file, {
        ...readOpts,
        batchId: flags.batchId ?? batchIdFor(file),
        retry: { attempts: flags.attempts, backoffMs: flags.backoffMs },
        ...(flags.maxRows ? { maxRows: flags.maxRows } : {}),
        createMissingOwners: flags.createMissingOwners ?? false,
        ...(flags.trustAccount ? { trustAccounts: flags.trustAccount } : {}),
        ...(flags.invite ? { invite: true } : {}),
        ...(flags.sendInvites ? { sendInvites: true } : {}),
        strict: flags.strict ?? false,
        ...(flags.sync ? { sync: true } : {}),
        ...(within ? { within } : {}),
        ...(flags.sealTo ? { sealTo: flags.sealTo } : {}),
        onRejected: printRejection,
      })
      .catch(refusedWhenStrict(flags));
    if (!batch) return EXIT_INVALID;
    const s = batch.summary;
    if (!flags.wait || !flags.json)
      print(
        flags,
        s,
        `batch ${s.batchId}: ${counted(s.total, 'change')} read, ${s.queued} queued, ${s.rejected} rejected${s.alreadyInBatch > 0 ? `, ${s.alreadyInBatch} already in this batch` : ''}`,
      );
    return flags.wait
      ? await waitAndReport(batch, { reportDir: flags.reportDir, overwrite: flags.overwrite ?? false, json: flags.json ?? false })
      : 0;
  } finally {
    await provisioner.close();
  }
}

async function dryRun(input: Readable, readOpts: ReadOptions, flags: ApplyFlags, config: Config): Promise<number> {
  // What apply refuses before recording anything, its plan refuses too, naming the setting or flag.
  refuseUnusableInvitations(config, flags);
  sealKeyOf(flags);
  const info = newInputInfo();
  const rows: AsyncIterable<CheckedChange | Checked<SyncRow>> = flags.sync
    ? readRecords(input, SYNC_ROWS, readOpts, info)
    : readRecords(input, CHANGE_ROWS, readOpts, info);
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
    print(
      flags,
      { dryRun: true, total: valid + rejected, valid, rejected, input: info },
      `dry run: ${counted(valid + rejected, 'change')} read, ${valid} valid, ${rejected} rejected (set DATABASE_URL to plan them against Dify)\nread as ${describeInput(info)}`,
    );
    return rejected > 0 ? EXIT_INVALID : 0;
  }
  // Read-only: no migration, no writes, no Redis.
  const rt = await openDbRuntime(config, { migrate: false, poolMax: 2 });
  try {
    const schema = await probeDifySchema(rt.db);
    const accounts = { normalized: schema.normalizedEmail };
    // Out of the scope (--within): rejected as read, before a membership file's difference is read.
    const changes = flags.sync
      ? (async function* () {
          yield* await syncChanges(withinScope(rows as AsyncIterable<Checked<SyncRow>>, rt.db, flags.within), rt.db, accounts, readOpts);
        })()
      : sameWorkspaceRules(withinScope(rows as AsyncIterable<CheckedChange>, rt.db, flags.within), rt.db, readOpts);
    const listRows = flags.rows === undefined ? undefined : flags.rows === true ? 1000 : flags.rows;
    // A membership file's removals delete access: each is named, always (the file does not name them).
    const removals: ChangePlanRow[] = [];
    const plan = await planChanges(changes, rt.db, {
      accounts: { normalized: schema.normalizedEmail },
      createMissingAccounts: flags.createMissingOwners ?? false,
      // The pre-claim guard as the run meets it: its batch (--batch-id, else a new one) and --trust-account.
      ...(flags.batchId ? { batchId: flags.batchId } : {}),
      ...(flags.trustAccount ? { trustAccounts: flags.trustAccount } : {}),
      ...(listRows !== undefined ? { listRows } : {}),
      ...(flags.sync ? { onRow: (r: ChangePlanRow) => void (r.verdict === 'remove' && removals.push(r)) } : {}),
    });
    removals.sort((a, b) => a.line - b.line);
    for (const p of plan.problems) printRejection({ line: p.line, errors: [p] });
    if (!flags.json) {
      const listed = new Set((plan.rows ?? []).map((r) => r.line));
      for (const r of [...(plan.rows ?? []), ...removals.filter((r) => !listed.has(r.line))]) process.stdout.write(`${planRowWords(r)}\n`);
    }
    print(
      flags,
      {
        dryRun: true,
        schema: describeSchema(schema),
        band: schema.band,
        ...plan,
        problems: undefined,
        ...(flags.sync ? { removals } : {}),
        input: info,
      },
      `${describeSchema(schema)}\nplan: ${counted(plan.total, 'change')}: ${describePlan(plan)}\nread as ${describeInput(info)}`,
    );
    return plan.rejected + plan.refused > 0 ? EXIT_INVALID : 0;
  } finally {
    await rt.close();
  }
}

/**
 * One planned row in words: what it says, then what it would do (and why it is unchanged, refused
 * or rejected): `line 6: remove_member ana@acme.example from workspace crm-1003 (<id>): would remove`,
 * `line 4: add_member new@x in workspace crm-1003 (<id>): refused — email: no Dify account …`.
 */
export function planRowWords(r: ChangePlanRow): string {
  const where =
    r.externalId !== null
      ? `workspace ${r.externalId}${r.tenantId !== null ? ` (${r.tenantId})` : ''}`
      : r.tenantId !== null
        ? `workspace ${r.tenantId}`
        : 'workspace ?';
  const who = r.email !== null ? `${r.email} ${r.action === 'remove_member' ? 'from' : 'in'} ` : '';
  const verdict = r.verdict === 'unchanged' || r.verdict === 'refused' || r.verdict === 'rejected' ? r.verdict : `would ${r.verdict}`;
  return escapeControls(`line ${r.line}: ${r.action ?? '?'} ${who}${where}: ${verdict}${r.note ? ` — ${r.note}` : ''}`);
}
