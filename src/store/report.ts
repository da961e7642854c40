// The per-row answer for a batch, in input order, from PostgreSQL.
import type { Db } from '../db/pool.js';
import type { Outcome } from '../common/types.js';
import { SCHEMA } from './schema.js';

export interface ReportRow {
  line: number;
  /** A change row's action (apply); null on a provisioning row (and on a change row too invalid to say). */
  action: string | null;
  /** A change row's role (add_member, set_role). */
  role: string | null;
  externalId: string | null;
  workspaceName: string | null;
  ownerEmail: string | null;
  outcome: Outcome;
  tenantId: string | null;
  fingerprint: string | null;
  attempts: number;
  durationMs: number | null;
  /** Accounts this row created (batches run with create-missing-owners). */
  accountsCreated: string[] | null;
  /** The minted API key, masked as Dify masks it (the full token is never stored here). */
  apiKey: string | null;
  error: string | null;
  /**
   * What became of the mail of each of the row's current invitations (--send-invites), by email:
   * "a@x: sent; b@y: failed: <reason>; c@z: not sent yet"; null when the row mails none.
   */
  mail: string | null;
  /**
   * The Celery tasks Dify queues after create_tenant that we queued for the row's workspace (its
   * default plugins): "install_default_plugins_task: queued" or "…: not queued yet"; null: none.
   */
  difyTasks: string | null;
  /**
   * Who the row did not invite or whose link was revoked since, and why (a link goes only with
   * the person's own workspace: docs/security.md); null when nothing to say.
   */
  invitations: string | null;
  /**
   * The library's report of a change batch (apply) only: the row's person (as `ownerEmail`), the
   * name a rename gives (as `workspaceName`), and the detail: why the row is unchanged, refused or
   * failed, what else the change did ("the previous owner is admin now"). There `error` is set
   * only on failed and rejected rows (report/format.ts changeReportRow).
   */
  email?: string | null;
  name?: string | null;
  detail?: string | null;
}

export interface ReportPage {
  /** Rows after this line (keyset pagination: cheap at any depth). */
  afterLine?: number;
  limit?: number;
  outcome?: Outcome;
  /** Part of the workspace name, owner email or external id (any case). */
  search?: string;
}

export async function reportRows(db: Db, batchId: string, page: ReportPage = {}): Promise<ReportRow[]> {
  const { rows } = await db.query<ReportRow>(
    `SELECT line, COALESCE(action, input->>'action') AS action, COALESCE(spec->>'role', input->>'role') AS role, external_id AS "externalId",
            workspace_name AS "workspaceName", owner_email AS "ownerEmail", outcome,
            -- A rejected change row: the workspace_id it wrote (input), as it wrote it.
            CASE WHEN outcome IN ('created', 'existing') OR action IS NOT NULL THEN tenant_id::text ELSE input->>'workspace_id' END AS "tenantId",
            fingerprint, attempts, duration_ms AS "durationMs", created_accounts AS "accountsCreated", api_key_masked AS "apiKey", error,
            (SELECT string_agg(i.email || ': ' || CASE WHEN i.mailed_at IS NOT NULL THEN 'sent'
                                                        WHEN i.mail_error IS NOT NULL THEN 'failed: ' || i.mail_error
                                                        ELSE 'not sent yet' END, '; ' ORDER BY i.email)
               FROM ${SCHEMA}.invitations i
              WHERE i.batch_id = r.batch_id AND i.line = r.line AND i.send AND i.superseded_at IS NULL) AS mail,
            (SELECT string_agg(regexp_replace(t.name, '^.*[.]', '') || ': ' || CASE WHEN t.queued_at IS NOT NULL THEN 'queued' ELSE 'not queued yet' END,
                               '; ' ORDER BY t.recorded_at)
               FROM ${SCHEMA}.dify_tasks t
              WHERE t.batch_id = r.batch_id AND t.line = r.line) AS "difyTasks",
            NULLIF(concat_ws('; ', r.invite_note,
              (SELECT string_agg(i.email || ': ' || i.withdrawn, '; ' ORDER BY i.email)
                 FROM ${SCHEMA}.invitations i
                WHERE i.batch_id = r.batch_id AND i.line = r.line AND i.withdrawn IS NOT NULL)), '') AS invitations
       FROM ${SCHEMA}.rows r
      WHERE batch_id = $1 AND ($2::text IS NULL OR outcome = $2) AND line > $3
        AND ($5::text IS NULL OR strpos(lower(COALESCE(workspace_name, '')), lower($5)) > 0
             OR strpos(lower(COALESCE(owner_email, '')), lower($5)) > 0 OR strpos(lower(COALESCE(external_id, '')), lower($5)) > 0)
      ORDER BY line
      LIMIT $4`,
    [batchId, page.outcome ?? null, page.afterLine ?? 0, page.limit ?? null, page.search ?? null],
  );
  return rows;
}

/** One row in full: its report columns and how it went (rounds, times), and each invitation it issued. */
export interface RowDetail extends ReportRow {
  /** The retry round (1 until the row is queued again by retry or a cancel undone). */
  round: number;
  /** When the batch recorded it (queued or rejected), its last change, and its final answer (null while open). */
  recordedAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
  /** Members the row asked for (email and role), as recorded. */
  members: { email: string; role: string }[];
  /** Invitations issued for it: stored in Dify's Redis (the token's time), mailed, replaced by a resend. */
  issued: { email: string; role: string; issuedAt: Date; storedAt: Date | null; mail: string | null; superseded: boolean }[];
}

export async function rowDetail(db: Db, batchId: string, line: number): Promise<RowDetail | undefined> {
  const [row] = await reportRows(db, batchId, { afterLine: line - 1, limit: 1 });
  if (!row || row.line !== line) return undefined;
  const { rows } = await db.query<{
    round: number;
    recordedAt: Date;
    updatedAt: Date;
    finishedAt: Date | null;
    members: { email: string; role: string }[] | null;
  }>(
    `SELECT r.round, COALESCE(b.ingest_finished_at, b.created_at) AS "recordedAt", r.updated_at AS "updatedAt",
            r.finished_at AS "finishedAt", r.spec -> 'members' AS members
       FROM ${SCHEMA}.rows r JOIN ${SCHEMA}.batches b ON b.id = r.batch_id
      WHERE r.batch_id = $1 AND r.line = $2`,
    [batchId, line],
  );
  const { rows: issued } = await db.query<RowDetail['issued'][number]>(
    `SELECT email, role, issued_at AS "issuedAt", stored_at AS "storedAt", superseded_at IS NOT NULL AS superseded,
            CASE WHEN NOT send THEN NULL WHEN mailed_at IS NOT NULL THEN 'sent'
                 WHEN mail_error IS NOT NULL THEN 'failed: ' || mail_error ELSE 'not sent yet' END AS mail
       FROM ${SCHEMA}.invitations WHERE batch_id = $1 AND line = $2 ORDER BY issued_at, email`,
    [batchId, line],
  );
  const r = rows[0]!;
  const members = Array.isArray(r.members) ? r.members.map((m) => ({ email: m.email, role: m.role })) : [];
  return { ...row, round: r.round, recordedAt: r.recordedAt, updatedAt: r.updatedAt, finishedAt: r.finishedAt, members, issued };
}

/** Every row of the batch, in input order, a page at a time (for reports of any size). */
export async function* allReportRows(db: Db, batchId: string, pageSize = 5000): AsyncGenerator<ReportRow> {
  let afterLine = 0;
  for (;;) {
    const page = await reportRows(db, batchId, { afterLine, limit: pageSize });
    yield* page;
    if (page.length < pageSize) return;
    afterLine = page[page.length - 1]!.line;
  }
}
