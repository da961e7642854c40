// The connections a command needs, opened once and closed together.
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { requireConfig, type Config } from '../config/config.js';
import { createPool, type Db } from '../db/pool.js';
import { provisionQueue, redisConnection } from '../queue/connection.js';
import { migrate } from '../results/migrate.js';
import { createProvisioner, type Provisioner } from '../provisioner.js';

export interface DbContext {
  db: Db;
  close(): Promise<void>;
}
export interface QueueContext extends DbContext {
  redis: Redis;
  queue: Queue;
}

export async function openDb(config: Config): Promise<DbContext> {
  const cfg = requireConfig(config, 'databaseUrl');
  const db = createPool(cfg.databaseUrl, 4);
  try {
    await migrate(db);
  } catch (err) {
    await db.end();
    throw err;
  }
  return { db, close: () => db.end() };
}

export async function openQueue(config: Config): Promise<QueueContext> {
  const cfg = requireConfig(config, 'redisUrl', 'databaseUrl');
  const { db } = await openDb(cfg);
  const redis = redisConnection(cfg.redisUrl, 'producer');
  const queue = provisionQueue(redis, cfg.queuePrefix);
  return {
    db,
    redis,
    queue,
    async close() {
      await queue.close();
      await Promise.allSettled([redis.quit(), db.end()]);
    },
  };
}

/** A provisioner for one command, closed when the command is done. */
export async function withProvisioner<T>(config: Config, fn: (p: Provisioner) => Promise<T>): Promise<T> {
  const p = await createProvisioner(requireConfig(config, 'redisUrl', 'databaseUrl'));
  try {
    return await fn(p);
  } finally {
    await p.close();
  }
}
