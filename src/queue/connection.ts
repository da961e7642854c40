// Redis connections and the queue handle, built the same way for ingest, workers and tools.
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { QUEUE_NAME } from './contract.js';

/** Workers block on Redis and must never give up a command; producers should fail fast. */
export function redisConnection(url: string, role: 'worker' | 'producer'): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: role === 'worker' ? null : 3,
    enableOfflineQueue: true,
    lazyConnect: false,
  });
  redis.on('error', () => {}); // reconnects by itself; failures surface on the commands
  return redis;
}

export function provisionQueue(connection: Redis, prefix: string): Queue {
  // Producers fail fast (ioredis gives up a command after its retries) instead of waiting for a
  // Redis that may never come; connection errors surface on the calls, not as stray events.
  const queue = new Queue(QUEUE_NAME, { connection, prefix, skipWaitingForReady: true });
  queue.on('error', () => {});
  return queue;
}

/** A Redis URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** Resolves when Redis answers, or fails with a clear message after `ms`. */
export async function checkRedis(redis: Redis, url: string, ms = 10_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('no answer')), ms);
      }),
    ]);
  } catch (err) {
    throw new Error(`cannot reach Redis at ${redactUrl(url)}: ${(err as Error).message} — check REDIS_URL and that Redis is running`);
  } finally {
    clearTimeout(timer);
  }
}
