// Redis connections and the queue handle, built the same way for ingest, workers and tools, for
// one node, a Redis Cluster or a Sentinel-managed master, with TLS where configured.
import { readFileSync } from 'node:fs';
import { Queue } from 'bullmq';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisTarget } from '../config.js';
import { UnreachableError } from '../errors.js';

export type RedisClient = Redis | Cluster;

const tlsOptions = (tls: { caFile?: string | undefined } | undefined) =>
  tls ? { tls: tls.caFile ? { ca: readFileSync(tls.caFile) } : {} } : {};

/** Workers block on Redis and must never give up a command; producers should fail fast. */
export function redisConnection(target: RedisTarget, role: 'worker' | 'producer'): RedisClient {
  const common: RedisOptions = { maxRetriesPerRequest: role === 'worker' ? null : 3, enableOfflineQueue: true, lazyConnect: false };
  let client: RedisClient;
  if (target.kind === 'cluster') {
    const options: ClusterOptions = {
      redisOptions: {
        ...common,
        ...tlsOptions(target.tls),
        ...(target.username ? { username: target.username } : {}),
        ...(target.password ? { password: target.password } : {}),
      },
      // A failover moves slots: follow MOVED/ASK and refresh the slot map.
      slotsRefreshTimeout: 2000,
      enableOfflineQueue: true,
    };
    client = new Cluster(target.nodes, options);
  } else if (target.kind === 'sentinel') {
    client = new Redis({
      ...common,
      sentinels: target.sentinels,
      name: target.name,
      db: target.db,
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...(target.sentinelUsername ? { sentinelUsername: target.sentinelUsername } : {}),
      ...(target.sentinelPassword ? { sentinelPassword: target.sentinelPassword } : {}),
      ...tlsOptions(target.tls),
      ...(target.tls ? { enableTLSForSentinelMode: true } : {}),
    });
  } else {
    client = new Redis(target.url, { ...common, ...tlsOptions(target.tls) });
  }
  client.on('error', () => {}); // reconnects by itself; failures surface on the commands
  return client;
}

export function provisionQueue(connection: RedisClient, prefix: string, name: string): Queue {
  // Producers fail fast (ioredis gives up a command after its retries) instead of waiting for a
  // Redis that may never come; connection errors surface on the calls, not as stray events.
  const queue = new Queue(name, { connection, prefix, skipWaitingForReady: true });
  queue.on('error', () => {});
  return queue;
}

/** Where Redis is, for messages: never a password. */
export function describeTarget(target: RedisTarget): string {
  if (target.kind === 'cluster')
    return `Redis Cluster ${target.nodes.map((n: { host: string; port: number }) => `${n.host}:${n.port}`).join(',')}`;
  if (target.kind === 'sentinel')
    return `Redis Sentinel ${target.sentinels.map((n: { host: string; port: number }) => `${n.host}:${n.port}`).join(',')} (master "${target.name}")`;
  return redactUrl(target.url);
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
export async function checkRedis(redis: RedisClient, target: RedisTarget, ms = 10_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('no answer')), ms);
      }),
    ]);
  } catch (err) {
    throw new UnreachableError(
      `cannot reach Redis at ${describeTarget(target)}: ${(err as Error).message} — check the Redis settings (REDIS_URL, or Dify's REDIS_*) and that Redis is running`,
    );
  } finally {
    clearTimeout(timer);
  }
}
