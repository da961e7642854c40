// One isolated world per test: its own database (cloned from Dify's schema), queue prefix and
// storage folder, on the shared real Redis and PostgreSQL.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { ConfigSchema, type Config } from '../../src/config/config.js';
import { createPool, type Db } from '../../src/db/pool.js';
import type { DifySchemaName } from '../../src/common/project-files.js';
import { createDifyDatabase } from '../../src/services/dify-database.js';

export interface TestEnv {
  name: string;
  /** A folder of this test's own for files (CSVs, reports), removed at cleanup. */
  dir: string;
  config: Config & { redisUrl: string; databaseUrl: string; storageDir: string };
  db: Db;
  redis: Redis;
  /** Environment variables for child processes (CLI, workers). */
  env: NodeJS.ProcessEnv;
  cleanup(): Promise<void>;
}

/**
 * `redisDb`: a Redis logical database of its own (1-15) for a test that flushes Redis; the other
 * tests share database 0, each under its own queue prefix.
 */
export async function createTestEnv(
  opts: { accounts?: number; seedSql?: string; variant?: boolean; redisDb?: number; schema?: DifySchemaName; trialCredits?: number } = {},
): Promise<TestEnv> {
  const name = `t_${randomBytes(5).toString('hex')}`;
  const accounts = opts.accounts ?? 20;
  const seed = `INSERT INTO accounts (name, email, status)
                SELECT 'Owner ' || i, 'owner' || i || '@example.com', 'active' FROM generate_series(1, ${accounts}) AS i;
                ${opts.seedSql ?? ''}`;
  const databaseUrl = await createDifyDatabase(inject('serverUrl'), name, {
    // The template holds the latest schema; another release's schema or the variant is loaded anew.
    template: opts.variant || (opts.schema && opts.schema !== 'latest') ? undefined : inject('templateDb'),
    variant: opts.variant,
    schema: opts.schema ?? 'latest',
    seedSql: seed,
  });
  const dir = await mkdtemp(join(tmpdir(), `dify-test-${name}-`));
  const storageDir = join(dir, 'storage');
  await mkdir(storageDir);
  const config = {
    ...ConfigSchema.parse({ queuePrefix: `{dp-${name}}`, trialCredits: opts.trialCredits ?? 200, logLevel: 'silent' }),
    redisUrl: opts.redisDb ? `${inject('redisUrl')}/${opts.redisDb}` : inject('redisUrl'),
    databaseUrl,
    storageDir,
  };
  const db = createPool(databaseUrl, 5, 'dify-provision-test');
  const redis = new Redis(config.redisUrl);
  return {
    name,
    dir,
    config,
    db,
    redis,
    env: {
      ...process.env,
      REDIS_URL: config.redisUrl,
      DATABASE_URL: databaseUrl,
      DIFY_STORAGE_DIR: storageDir,
      DIFY_PROVISION_QUEUE_PREFIX: config.queuePrefix,
      DIFY_PROVISION_LOG_LEVEL: 'info',
      HOSTED_POOL_CREDITS: String(config.trialCredits),
    },
    async cleanup() {
      const keys = await redis.keys(`${config.queuePrefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await db.end();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
