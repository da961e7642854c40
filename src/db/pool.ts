// PostgreSQL access: one pool per process, and a transaction helper that always ends what it began.
import pg from 'pg';
import { UnreachableError } from '../common/errors.js';

export type Db = pg.Pool;
export type Tx = pg.PoolClient;

/** A PostgreSQL connection string, or its parts as fields (Dify's DB_*: never pasted into a URL). */
export type DbTarget =
  string | { host: string; port: number; user: string; password?: string; database: string; passwordLookedIn?: string };

/** A statement and its parameters ($1, $2, …). */
export interface Statement {
  text: string;
  values: unknown[];
}

/** A parameter as a literal SQL constant (standard_conforming_strings, as in every supported PostgreSQL). */
function literal(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`cannot inline the number ${v}`);
    return String(v);
  }
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) {
    // PostgreSQL's array syntax, as pg sends an array parameter; typed by the statement's cast or column.
    const item = (x: unknown) => (x === null || x === undefined ? 'NULL' : `"${String(x).replace(/[\\"]/g, (c) => `\\${c}`)}"`);
    return pg.escapeLiteral(`{${v.map(item).join(',')}}`);
  }
  if (v instanceof Date) return pg.escapeLiteral(v.toISOString());
  if (typeof v === 'object') return pg.escapeLiteral(JSON.stringify(v));
  return pg.escapeLiteral(String(v));
}

/**
 * Statements as one simple-protocol query (one round trip, each statement with its own snapshot,
 * in order; the first error stops the rest), their parameters written in as literals. Only for
 * statements whose parameters are typed by a cast or by the column they go into.
 */
export function inlined(...statements: (Statement | string)[]): string {
  return statements
    .map((s) => (typeof s === 'string' ? s : s.text.replace(/\$(\d+)/g, (_, n: string) => literal(s.values[Number(n) - 1]))))
    .join(';\n');
}

/** How long a PostgreSQL connection is idle (nothing received) before the kernel probes it; as ioredis' default for Redis. */
export const KEEPALIVE_MS = 30_000;

export function createPool(target: DbTarget, max = 10, applicationName = 'dify-provision'): Db {
  const where =
    typeof target === 'string'
      ? { connectionString: target }
      : { host: target.host, port: target.port, user: target.user, password: target.password, database: target.database };
  // TCP keepalive: a server that vanished without closing our connections (its host gone in a
  // failover, a network cut) never answers a statement already sent, and pg waits for it forever
  // (a worker's row stayed active, its job's lock renewed, for good). Probed after KEEPALIVE_MS
  // idle, such a connection fails (ETIMEDOUT) once the kernel's probes go unanswered; the row is retried.
  const pool = new pg.Pool({
    ...where,
    max,
    application_name: applicationName,
    Client: ClosingClient,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_MS,
  });
  // An idle client that loses its server must not crash the process; the next query reconnects.
  pool.on('error', () => {});
  return pool;
}

/**
 * A client that closes its socket when the connection fails on our side. pg fails a handshake
 * it cannot finish (a server asking for a password none was given for: "client password must be
 * a string") without closing the socket, which then held the process until the server's
 * authentication_timeout (60 s) after the error was printed.
 *
 * It also never takes the process down when its server goes away. A client checked out of the
 * pool between two statements (a transaction writing a key file) gets the server's shutdown
 * ("terminating connection due to administrator command") or the lost socket as an 'error' event,
 * which the pool only listens for on idle clients: unheard, it killed the worker on every
 * PostgreSQL restart. Heard here, the client is marked unusable; its next statement fails (the
 * transaction is retried) and the pool drops it when it is released.
 */
class ClosingClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    this.on('error', () => {});
    const connection = (this as unknown as { connection?: { on(e: 'error', f: () => void): void; stream?: { destroy(): void } } })
      .connection;
    connection?.on('error', () => connection.stream?.destroy());
  }
}

export async function withTransaction<T>(db: Db, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return withInlinedTransaction(db, async (client) => {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  });
}

/**
 * A connection for a transaction whose BEGIN and COMMIT the caller sends itself, with other
 * statements in one round trip (inlined): a throw rolls back whatever is open and ends it.
 */
export async function withInlinedTransaction<T>(db: Db, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const client = await db.connect();
  let broken = false;
  try {
    return await fn(client);
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw err;
  } finally {
    client.release(broken);
  }
}

/**
 * Errors that mean "PostgreSQL does not answer right now" (a restart, a failover, a dropped
 * connection: the pool connects again by itself), as opposed to an error in a statement.
 */
export function isPostgresUnreachable(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  // Class 08 (connection exception); 57P01-57P03: the server shuts down, crashed, or is starting.
  if (
    typeof code === 'string' &&
    /^(08[0-9A-Z]{3}|57P0[123]|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN)$/.test(code)
  )
    return true;
  return (
    typeof message === 'string' &&
    /^Connection terminated (unexpectedly|due to connection timeout)|^Client has encountered a connection error|^timeout expired/.test(
      message,
    )
  );
}

/** The Dify variable to check for a PostgreSQL error code (DB_* settings). */
function difyVariable(code: string | undefined): string {
  if (code === '28P01') return 'DB_PASSWORD';
  if (code === '28000') return 'DB_USERNAME (and pg_hba.conf)';
  if (code === '3D000') return 'DB_DATABASE';
  return 'DB_HOST and DB_PORT';
}

/**
 * Resolves when PostgreSQL answers a query; else fails naming the host, database and user, the
 * cause as the server (or the OS) gave it, and the variable to check (DATABASE_URL, or Dify's
 * DB_* for fields) — never the password.
 */
export async function checkDatabase(db: Db, target: DbTarget): Promise<void> {
  try {
    await db.query('SELECT 1');
  } catch (err) {
    const code = (err as { code?: string }).code;
    const where = typeof target === 'string' ? urlParts(target) : target;
    const check = typeof target === 'string' ? 'DATABASE_URL' : `${difyVariable(code)} (Dify's settings)`;
    const message = (err as Error).message;
    // The server asks for a password and none was given: pg fails inside its SCRAM handshake
    // ("client password must be a string"), with no code, before the server could say so.
    const noPassword = typeof target === 'string' ? !passwordOf(target) : !target.password;
    if (noPassword && (code === '28P01' || /SASL|SCRAM|password/i.test(message))) {
      const missing =
        typeof target === 'string'
          ? 'DATABASE_URL has no password (postgres://user:password@host:port/database)'
          : `DB_PASSWORD is not set (looked for in ${target.passwordLookedIn ?? "our environment and Dify's .env"})`;
      throw new UnreachableError(
        `cannot use PostgreSQL at ${where.host}:${where.port}, database "${where.database}" as user "${where.user}": the server asks for a password and ${missing}`,
      );
    }
    const auth = code === '28P01' || code === '28000';
    throw new UnreachableError(
      `cannot use PostgreSQL at ${where.host}:${where.port}, database "${where.database}" as user "${where.user}": ${message}${code && !message.includes(code) ? ` (${code})` : ''} — check ${check}${auth ? '' : ' and that PostgreSQL is running'}`,
    );
  }
}

/** The password of a connection string, if it has one. */
function passwordOf(url: string): string {
  try {
    return decodeURIComponent(new URL(url).password);
  } catch {
    return '';
  }
}

/** Host, port, database and user of a connection string, as libpq defaults them. */
function urlParts(url: string): { host: string; port: number | string; database: string; user: string } {
  const u = new URL(url);
  const user = decodeURIComponent(u.username) || 'postgres';
  return { host: u.hostname || 'localhost', port: u.port || 5432, database: decodeURIComponent(u.pathname.slice(1)) || user, user };
}
