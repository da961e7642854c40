// Creates a fresh database with Dify's schema (for the demo, tests and the benchmark), on a
// server we are allowed to create databases on. Never used against a user's Dify database.
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { DIFY_SCHEMAS, DIFY_SCHEMA_VARIANT_SQL, type DifySchemaName } from '../common/project-files.js';

export interface DifyDatabaseOptions {
  /** Which Dify release's schema (default: latest). */
  schema?: DifySchemaName;
  /** Also apply the variant that scopes dataset keys with api_tokens.dataset_id. */
  variant?: boolean;
  /** Extra SQL to run after the schema (sample accounts). */
  seedSql?: string;
  /** Clone this database instead of loading the schema (fast, for tests). */
  template?: string;
}

/** Drops and recreates `name` on the server of `serverUrl`; returns the new database's URL. */
export async function createDifyDatabase(serverUrl: string, name: string, opts: DifyDatabaseOptions = {}): Promise<string> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`invalid database name "${name}"`);
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.query(opts.template ? `CREATE DATABASE ${name} TEMPLATE ${opts.template}` : `CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const dbUrl = url.toString();
  if (!opts.template || opts.seedSql) {
    const client = new pg.Client({ connectionString: dbUrl });
    await client.connect();
    try {
      if (!opts.template) {
        await client.query(await readFile(DIFY_SCHEMAS[opts.schema ?? 'latest'], 'utf8'));
        if (opts.variant) await client.query(await readFile(DIFY_SCHEMA_VARIANT_SQL, 'utf8'));
      }
      if (opts.seedSql) await client.query(opts.seedSql);
    } finally {
      await client.end();
    }
  }
  return dbUrl;
}
