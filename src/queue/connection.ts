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
  return new Queue(QUEUE_NAME, { connection, prefix });
}
