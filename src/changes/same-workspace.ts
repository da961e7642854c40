// A changes file's rules across its rows (change-row.ts FileRules: one rename, one transfer, one
// archive or restore, one change per person, per workspace) hold for the workspace, however the
// file names it. When the file is read they compare the reference as written; here, with the
// database, each row's workspace is what it resolves to (an external_id our ledger knows is its
// workspace's id), and the rules run again on that: a row naming by its UUID a workspace an
// earlier line named by external_id (or the other way round) is refused naming that line, in the
// plan and in the recording alike, before any job exists. An external_id the ledger does not know
// stays its own workspace (the worker refuses it when it runs: no such workspace).
import type { Db } from '../db/pool.js';
import type { HeldLimits } from '../common/limits.js';
import { tenantsOfExternalIds } from '../store/ledger.js';
import { FileRules, workspaceRef, type CheckedChange } from './change-row.js';

/** The rows as read, each valid row checked again by the file's rules with its workspace resolved. */
export function sameWorkspaceRules(
  rows: AsyncIterable<CheckedChange>,
  db: Db,
  limits: HeldLimits = {},
  chunkSize = 1000,
): AsyncIterable<CheckedChange> {
  return (async function* (): AsyncGenerator<CheckedChange> {
    const rules = new FileRules('the changes file', limits);
    let chunk: CheckedChange[] = [];
    async function* flush() {
      const externals = [...new Set(chunk.flatMap((c) => (c.ok && c.row.externalId !== undefined ? [c.row.externalId] : [])))];
      const tenantOf = await tenantsOfExternalIds(db, externals);
      for (const c of chunk) {
        if (!c.ok) {
          yield c;
          continue;
        }
        const tenant = c.row.workspaceId ?? tenantOf.get(c.row.externalId!);
        const refused = rules.check(c.row, c.line, tenant !== undefined ? `id:${tenant}` : workspaceRef(c.row));
        if (!refused) {
          yield c;
          continue;
        }
        // The file's words checked by reference found nothing: the earlier line names this workspace otherwise.
        const named =
          c.row.externalId !== undefined
            ? ` (external_id "${c.row.externalId}" is workspace ${tenant})`
            : ' (the same workspace, named there by its external_id)';
        yield {
          line: c.line,
          ok: false as const,
          errors: [{ field: refused.field, message: refused.message + named }],
          raw: {
            action: c.row.action,
            ...(c.row.workspaceId !== undefined ? { workspaceId: c.row.workspaceId } : {}),
            ...(c.row.externalId !== undefined ? { externalId: c.row.externalId } : {}),
            ...(c.row.email !== undefined ? { ownerEmail: c.row.email } : {}),
            ...(c.row.name !== undefined ? { workspaceName: c.row.name } : {}),
            ...(c.row.role !== undefined ? { role: c.row.role } : {}),
          },
        };
      }
      chunk = [];
    }
    try {
      for await (const r of rows) {
        chunk.push(r);
        if (chunk.length >= chunkSize) yield* flush();
      }
      if (chunk.length > 0) yield* flush();
    } finally {
      rules.close();
    }
  })();
}
