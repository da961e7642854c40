// Our outbox of the Celery tasks Dify queues after create_tenant (src/worker/dify-tasks.ts).
import type { Db, Tx } from '../db/pool.js';
import { SCHEMA } from './schema.js';

export interface DifyTaskRecord {
  id: string;
  batchId: string;
  line: number;
  tenantId: string;
  name: string;
  queue: string;
  args: unknown[];
}

/** In the workspace's transaction: the tasks to queue once it commits. */
export async function recordDifyTasks(tx: Tx, tasks: DifyTaskRecord[]): Promise<void> {
  if (tasks.length === 0) return;
  await tx.query(
    `INSERT INTO ${SCHEMA}.dify_tasks (id, batch_id, line, tenant_id, name, queue, args)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::uuid[], $5::text[], $6::text[], $7::jsonb[])`,
    [
      tasks.map((t) => t.id),
      tasks.map((t) => t.batchId),
      tasks.map((t) => t.line),
      tasks.map((t) => t.tenantId),
      tasks.map((t) => t.name),
      tasks.map((t) => t.queue),
      tasks.map((t) => JSON.stringify(t.args)),
    ],
  );
}

/** Tasks recorded and not queued yet: of one row, or every one idle for `idleSeconds` (the sweep). */
export async function pendingDifyTasks(
  db: Db,
  which: { batchId: string; line: number } | { idleSeconds: number },
): Promise<DifyTaskRecord[]> {
  const row = 'batchId' in which;
  const { rows } = await db.query<DifyTaskRecord>(
    `SELECT id, batch_id AS "batchId", line, tenant_id AS "tenantId", name, queue, args
       FROM ${SCHEMA}.dify_tasks
      WHERE queued_at IS NULL AND ${row ? 'batch_id = $1 AND line = $2' : `recorded_at < now() - make_interval(secs => $1)`}
      ORDER BY recorded_at LIMIT 1000`,
    row ? [which.batchId, which.line] : [which.idleSeconds],
  );
  return rows;
}

export async function markDifyTaskQueued(db: Db, id: string): Promise<void> {
  await db.query(`UPDATE ${SCHEMA}.dify_tasks SET queued_at = now() WHERE id = $1 AND queued_at IS NULL`, [id]);
}
