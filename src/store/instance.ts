// The identity of the Dify database we are connected to, stored in our schema on first use.
// A queue belongs to one Dify: its name is derived from this id, so several Difys (staging and
// production, say) can share one Redis and no worker ever takes another Dify's jobs.
import { randomUUID } from 'node:crypto';
import { withTransaction, type Db } from '../db/pool.js';
import { lockMigration } from './locks.js';
import { SCHEMA } from './schema.js';
import { replaceLineage } from './server.js';

export interface DifyIdentity {
  id: string;
  /** The database's name, for messages ("queue … serves Dify database …"). */
  database: string;
  /** The BullMQ queue of this Dify (inside the configured prefix). */
  queueName: string;
}

// Readable by superusers and pg_monitor only: where it isn't, the database name alone tells
// restored dumps apart (physical copies are told apart by store/server.ts).
async function systemIdentifier(db: Db): Promise<string | null> {
  return db
    .query<{ s: string }>(`SELECT system_identifier::text AS s FROM pg_control_system()`)
    .then((r) => r.rows[0]?.s ?? null)
    .catch(() => null);
}

export const queueNameFor = (id: string) => `provision-${id.replace(/-/g, '').slice(0, 16)}`;

/**
 * This database's identity, minted on first use. A database copied from another (staging made
 * from production, with our schema in it) carries the original's row: when the row was minted in
 * a database of another name or another cluster, this is a copy and gets an identity of its own.
 */
export async function difyIdentity(db: Db): Promise<DifyIdentity> {
  const system = await systemIdentifier(db);
  return withTransaction(db, async (tx) => {
    await lockMigration(tx);
    const { rows } = await tx.query<{
      current: string;
      row: { id: string; database_name: string; system_identifier: string | null } | null;
    }>(`SELECT current_database() AS current, (SELECT row_to_json(i) FROM ${SCHEMA}.instance i LIMIT 1) AS row`);
    const { current, row } = rows[0]!;
    const same =
      row && row.database_name === current && (row.system_identifier === null || system === null || row.system_identifier === system);
    if (same) return { id: row.id, database: current, queueName: queueNameFor(row.id) };
    await tx.query(`DELETE FROM ${SCHEMA}.instance`);
    const id = randomUUID();
    await tx.query(`INSERT INTO ${SCHEMA}.instance (id, database_name, system_identifier) VALUES ($1, $2, $3)`, [id, current, system]);
    return { id, database: current, queueName: queueNameFor(id) };
  });
}

export interface NewIdentity {
  before: string | null;
  after: DifyIdentity;
  lineage: string;
  /** Open rows left to the server this database was copied from (now `cancelled`). */
  leftRows: number;
}

export const LEFT_TO_ORIGINAL =
  'queued on the server this database was copied from (`identity --new`): left to it; `retry --cancelled` queues it in this database';

/**
 * `identity --new`, on a physical copy: a new identity (so a new queue) and a new server lineage
 * with no predecessor. Rows still open here were queued on the original (or on this copy under
 * the shared identity): they are cancelled, never queued here, so nothing of the original runs on
 * the copy; `retry --cancelled` queues a batch's rows here on purpose.
 */
export async function newIdentity(db: Db): Promise<NewIdentity> {
  const system = await systemIdentifier(db);
  return withTransaction(db, async (tx) => {
    await lockMigration(tx);
    const { rows } = await tx.query<{ id: string | null; current: string }>(
      `SELECT (SELECT id::text FROM ${SCHEMA}.instance LIMIT 1) AS id, current_database() AS current`,
    );
    const id = randomUUID();
    await tx.query(`DELETE FROM ${SCHEMA}.instance`);
    await tx.query(`INSERT INTO ${SCHEMA}.instance (id, database_name, system_identifier) VALUES ($1, $2, $3)`, [
      id,
      rows[0]!.current,
      system,
    ]);
    const lineage = await replaceLineage(tx);
    const left = await tx.query(
      `UPDATE ${SCHEMA}.rows SET outcome = 'cancelled', error = $1, finished_at = now(), updated_at = now()
        WHERE outcome IN ('queued', 'active')`,
      [LEFT_TO_ORIGINAL],
    );
    return {
      before: rows[0]!.id,
      after: { id, database: rows[0]!.current, queueName: queueNameFor(id) },
      lineage,
      leftRows: left.rowCount ?? 0,
    };
  });
}
