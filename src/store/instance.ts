// The identity of the Dify database we are connected to, stored in our schema on first use.
// A queue belongs to one Dify: its name is derived from this id, so several Difys (staging and
// production, say) can share one Redis and no worker ever takes another Dify's jobs.
import { randomUUID } from 'node:crypto';
import { withTransaction, type Db } from '../db/pool.js';
import { lockMigration } from './locks.js';
import { SCHEMA } from './schema.js';

export interface DifyIdentity {
  id: string;
  /** The database's name, for messages ("queue … serves Dify database …"). */
  database: string;
  /** The BullMQ queue of this Dify (inside the configured prefix). */
  queueName: string;
}

export const queueNameFor = (id: string) => `provision-${id.replace(/-/g, '').slice(0, 16)}`;

/**
 * This database's identity, minted on first use. A database copied from another (staging made
 * from production, with our schema in it) carries the original's row: when the row was minted in
 * a database of another name or another cluster, this is a copy and gets an identity of its own.
 */
export async function difyIdentity(db: Db): Promise<DifyIdentity> {
  // Readable by superusers and pg_monitor only: where it isn't, the database name alone tells copies apart.
  const system = await db
    .query<{ s: string }>(`SELECT system_identifier::text AS s FROM pg_control_system()`)
    .then((r) => r.rows[0]?.s ?? null)
    .catch(() => null);
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
