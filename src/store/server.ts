// Which running PostgreSQL server this is, beyond the database's identity (store/instance.ts),
// which a physical copy carries byte for byte. A row is queued under the server's *lineage*: a
// random id in an UNLOGGED table, which survives a clean restart but not crash recovery, and
// which no physical copy of a running server carries (pg_basebackup leaves unlogged data out; a
// copied volume or snapshot starts with crash recovery). A worker starts only rows of its own
// lineage, or of lineages this database recorded as its predecessors (a process that saw the
// lineage change on its own connection: a crash restart, a failover). See docs/design.md.
import { randomUUID } from 'node:crypto';
import type { Db, Tx } from '../db/pool.js';
import { SCHEMA } from './schema.js';

export interface ServerView {
  /** This server's lineage (minted here when the server has none). */
  lineage: string;
  /** When the lineage began. */
  since: Date;
  /** pg_postmaster_start_time(), in microseconds since the epoch (a decimal string). */
  started: string;
  /** The server's clock when it answered, in microseconds since the epoch. */
  seen: string;
  /** The database's identity (store/instance.ts), or null before it has one. */
  instance: string | null;
  /** This lineage and every one recorded before it: rows queued under these are this server's. */
  chain: string[];
  /**
   * Every lineage this database has had (the latest KNOWN_LINEAGES, the chain and this one): a
   * physical copy's database had its original's lineage, the original's never had the copy's.
   */
  known: string[];
}

/** How many of a database's past lineages a server publishes (newest first). */
export const KNOWN_LINEAGES = 32;

const micros = (expr: string) => `(extract(epoch FROM ${expr}) * 1000000)::bigint::text`;

// One round trip: mints the lineage when the server has none (a concurrent mint by another
// process wins the primary key; this statement then sees neither row and is run again).
const OBSERVE = `
  WITH RECURSIVE minted AS (
    INSERT INTO ${SCHEMA}.server (lineage) SELECT $1::uuid WHERE NOT EXISTS (SELECT 1 FROM ${SCHEMA}.server)
    ON CONFLICT DO NOTHING
    RETURNING lineage, since
  ), cur AS (
    SELECT lineage, since FROM minted UNION ALL SELECT lineage, since FROM ${SCHEMA}.server LIMIT 1
  ), chain (l) AS (
    SELECT lineage FROM cur
    UNION SELECT p.predecessor FROM ${SCHEMA}.lineage p JOIN chain c ON p.lineage = c.l
  ), began AS (
    INSERT INTO ${SCHEMA}.lineage_began (lineage, since) SELECT lineage, since FROM cur ON CONFLICT DO NOTHING
  )
  SELECT cur.lineage::text AS lineage, cur.since, ${micros('pg_postmaster_start_time()')} AS started,
         ${micros('clock_timestamp()')} AS seen,
         (SELECT id::text FROM ${SCHEMA}.instance LIMIT 1) AS instance,
         ARRAY(SELECT l::text FROM chain) AS chain,
         ARRAY(SELECT l::text FROM chain
               UNION SELECT b.lineage::text FROM (SELECT lineage FROM ${SCHEMA}.lineage_began ORDER BY since DESC LIMIT ${KNOWN_LINEAGES}) b) AS known
    FROM cur`;

/** This server as it answers now. */
export async function observeServer(db: Db | Tx): Promise<ServerView> {
  for (let i = 0; i < 5; i++) {
    const { rows } = await db.query<ServerView>(OBSERVE, [randomUUID()]);
    if (rows[0]) return rows[0];
  }
  throw new Error('could not read or record this PostgreSQL server lineage');
}

/**
 * Rows queued under `predecessor` are this lineage's too: a process saw `predecessor` replaced by
 * `lineage` on its own connection, or the operator said so (`identity --adopt`).
 */
export async function recordSuccession(db: Db | Tx, lineage: string, predecessor: string): Promise<void> {
  await db.query(`INSERT INTO ${SCHEMA}.lineage (lineage, predecessor) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [lineage, predecessor]);
}

/** A fresh lineage with no predecessor (`identity --new`: this database is a copy). */
export async function replaceLineage(tx: Tx): Promise<string> {
  const lineage = randomUUID();
  await tx.query(`DELETE FROM ${SCHEMA}.server`);
  await tx.query(`INSERT INTO ${SCHEMA}.server (lineage) VALUES ($1)`, [lineage]);
  return lineage;
}

export interface WaitingLineage {
  lineage: string;
  rows: number;
}

/**
 * Rows still to run here (of one batch, or of all) that were queued under a lineage this server
 * does not descend from: rows of the server this database was copied from.
 */
export async function rowsOfOtherLineages(db: Db, chain: string[], batchId?: string): Promise<WaitingLineage[]> {
  const { rows } = await db.query<WaitingLineage>(
    `SELECT spec->>'lineage' AS lineage, count(*)::int AS rows FROM ${SCHEMA}.rows
      WHERE ($2::text IS NULL OR batch_id = $2) AND outcome IN ('queued', 'active')
        AND spec ? 'lineage' AND NOT (spec->>'lineage' = ANY($1::text[]))
      GROUP BY 1 ORDER BY 2 DESC`,
    [chain, batchId ?? null],
  );
  return rows;
}
