// PostgreSQL access: one pool per process, and a transaction helper that always ends what it began.
import pg from 'pg';

export type Db = pg.Pool;
export type Tx = pg.PoolClient;

/** A PostgreSQL connection string, or its parts as fields (Dify's DB_*: never pasted into a URL). */
export type DbTarget = string | { host: string; port: number; user: string; password?: string; database: string };

export function createPool(target: DbTarget, max = 10, applicationName = 'dify-provision'): Db {
  const where = typeof target === 'string' ? { connectionString: target } : target;
  const pool = new pg.Pool({ ...where, max, application_name: applicationName });
  // An idle client that loses its server must not crash the process; the next query reconnects.
  pool.on('error', () => {});
  return pool;
}

export async function withTransaction<T>(db: Db, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const client = await db.connect();
  let broken = false;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw err;
  } finally {
    client.release(broken);
  }
}
