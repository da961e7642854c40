// The per-row answer for a batch, in input order, from PostgreSQL.
import type { Db } from '../db/pool.js';
import type { Outcome } from '../types.js';
import { SCHEMA } from './migrate.js';

export interface ReportRow {
  line: number;
  externalId: string | null;
  workspaceName: string | null;
  ownerEmail: string | null;
  outcome: Outcome;
  tenantId: string | null;
  fingerprint: string | null;
  attempts: number;
  durationMs: number | null;
  error: string | null;
}

export async function reportRows(db: Db, batchId: string, page?: { offset: number; limit: number; outcome?: Outcome }): Promise<ReportRow[]> {
  const { rows } = await db.query<ReportRow>(
    `SELECT line, external_id AS "externalId", workspace_name AS "workspaceName", owner_email AS "ownerEmail", outcome,
            CASE WHEN outcome IN ('created', 'existing') THEN tenant_id END AS "tenantId",
            fingerprint, attempts, duration_ms AS "durationMs", error
       FROM ${SCHEMA}.rows
      WHERE batch_id = $1 AND ($2::text IS NULL OR outcome = $2)
      ORDER BY line
      OFFSET $3 LIMIT $4`,
    [batchId, page?.outcome ?? null, page?.offset ?? 0, page?.limit ?? null],
  );
  return rows;
}
