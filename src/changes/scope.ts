// The scope of a change batch (apply --within BATCH): the workspaces our ledger recorded as
// created by those ingest batches' rows. A changes file a customer supplies is run within that
// customer's batches: a row (or a --sync entry) naming any other workspace is rejected, naming
// its line and the field that named it, with the same words whether that workspace exists or
// not (nothing of another customer's workspace is revealed). Decided here, where rows are read
// (the plan, the recording, a membership file before its difference is read), and again by the
// worker when the row runs (worker/apply-change.ts), from the scope the row's job carries.
import type { Db, Tx } from '../db/pool.js';
import type { Checked } from '../input/read-rows.js';
import type { RawRow } from '../input/row-checker.js';
import { tenantsOfBatches, tenantsOfExternalIds } from '../store/ledger.js';
import { batchKinds } from '../store/batches.js';
import { UsageError } from '../common/errors.js';
import { isBatchId } from '../common/types.js';

/** How a row names its workspace. */
export interface WorkspaceNamed {
  workspaceId?: string;
  externalId?: string;
  email?: string;
  /** A change row's (a membership entry has role only). */
  action?: string;
  role?: string;
  name?: string;
}

/** The field that named the workspace, and why the row is refused (never a word about that workspace). */
export function outOfScope(row: WorkspaceNamed, within: readonly string[]): { field: string; message: string } {
  return {
    field: row.workspaceId !== undefined ? 'workspace_id' : 'external_id',
    message: `not one of the workspaces of batch${within.length > 1 ? 'es' : ''} ${within.join(', ')} (--within)`,
  };
}

/** --within as given (repeatable, comma-separated): the batch ids, checked, each once. */
export function scopeOf(values: readonly string[] | undefined): string[] | undefined {
  if (values === undefined) return undefined;
  const ids = [...new Set(values.flatMap((v) => v.split(',')).map((v) => v.trim()))].filter((v) => v !== '');
  for (const id of ids) if (!isBatchId(id)) throw new UsageError(`--within: "${id}" is not a batch id`);
  if (ids.length === 0) throw new UsageError('--within needs at least one batch id');
  return ids;
}

/**
 * Refuses a scope naming a batch that is not recorded, or a change batch (its rows made no
 * workspace): every row would be refused as outside it, without saying why.
 */
export async function checkScope(db: Db | Tx, within: readonly string[]): Promise<void> {
  const kinds = await batchKinds(db, within);
  for (const id of within) {
    const kind = kinds.get(id);
    if (kind === undefined) throw new UsageError(`--within: there is no batch "${id}"`);
    if (kind === 'changes')
      throw new UsageError(`--within: "${id}" is a change batch; --within takes ingest batches (the workspaces they created)`);
  }
}

/** The workspaces of these rows that are within the scope (by Dify id). */
async function inScope(db: Db | Tx, rows: WorkspaceNamed[], within: readonly string[]): Promise<(row: WorkspaceNamed) => boolean> {
  const externals = [...new Set(rows.flatMap((r) => (r.workspaceId === undefined && r.externalId !== undefined ? [r.externalId] : [])))];
  const tenantOfExternal = await tenantsOfExternalIds(db as Db, externals);
  const tenantOf = (r: WorkspaceNamed) => r.workspaceId ?? (r.externalId !== undefined ? tenantOfExternal.get(r.externalId) : undefined);
  const ids = [...new Set(rows.map(tenantOf).filter((t): t is string => t !== undefined))];
  const ours = await tenantsOfBatches(db, ids, [...within]);
  return (r) => {
    const t = tenantOf(r);
    return t !== undefined && ours.has(t);
  };
}

/** Whether the worker may act on this workspace for a row of this scope (worker/apply-change.ts). */
export async function tenantInScope(db: Db | Tx, tenantId: string, within: readonly string[]): Promise<boolean> {
  return (await tenantsOfBatches(db, [tenantId], [...within])).has(tenantId);
}

/**
 * The rows as read, each row naming a workspace outside the scope rejected (line and field).
 * Without a scope, the rows as they are. A scope naming a batch that is not recorded, or a change
 * batch, is refused (UsageError) before the first row is read.
 */
export function withinScope<T extends WorkspaceNamed>(
  rows: AsyncIterable<Checked<T>>,
  db: Db,
  within: readonly string[] | undefined,
  chunkSize = 1000,
): AsyncIterable<Checked<T>> {
  if (within === undefined) return rows;
  return (async function* () {
    await checkScope(db, within);
    let chunk: Checked<T>[] = [];
    async function* flush() {
      const ok = await inScope(
        db,
        chunk.flatMap((c) => (c.ok ? [c.row] : [])),
        within!,
      );
      for (const c of chunk) {
        if (!c.ok || ok(c.row)) {
          yield c;
          continue;
        }
        // What a report shows of the row is what the file said, nothing read from Dify.
        const raw: RawRow = {
          ...(c.row.action !== undefined ? { action: c.row.action } : {}),
          ...(c.row.workspaceId !== undefined ? { workspaceId: c.row.workspaceId } : {}),
          ...(c.row.externalId !== undefined ? { externalId: c.row.externalId } : {}),
          ...(c.row.email !== undefined ? { ownerEmail: c.row.email } : {}),
          ...(c.row.role !== undefined ? { role: c.row.role } : {}),
          ...(c.row.name !== undefined ? { workspaceName: c.row.name } : {}),
        };
        yield { line: c.line, ok: false, errors: [outOfScope(c.row, within!)], raw } as Checked<T>;
      }
      chunk = [];
    }
    for await (const r of rows) {
      chunk.push(r);
      if (chunk.length >= chunkSize) yield* flush();
    }
    if (chunk.length > 0) yield* flush();
  })();
}
