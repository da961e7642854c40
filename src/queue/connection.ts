// Redis connections and the queue handle, built the same way for ingest, workers and tools, for
// one node, a Redis Cluster or a Sentinel-managed master, with TLS where configured.
import { readFileSync } from 'node:fs';
import { Queue } from 'bullmq';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisTarget } from '../config/config.js';
import { UnreachableError } from '../common/errors.js';

export type RedisClient = Redis | Cluster;

const tlsOptions = (tls: { caFile?: string | undefined } | undefined) =>
  tls ? { tls: tls.caFile ? { ca: readFileSync(tls.caFile) } : {} } : {};

/**
 * How long a producer's command may go unanswered on a connection that stays open (a Redis
 * paused or stuck: no error, no reconnection, so ioredis' retries never start).
 */
export const PRODUCER_COMMAND_TIMEOUT_MS = 30_000;

/**
 * Workers block on Redis and must never give up a command; producers should fail fast: after
 * their retries when the connection drops, after `commandTimeoutMs` when it stays open and
 * Redis does not answer (before, an ingest over a paused Redis waited for good, its batch's
 * transaction and lock held; so did a worker's SETEX of invitation tokens in a paused Dify Redis).
 */
export function redisConnection(
  target: RedisTarget,
  role: 'worker' | 'producer',
  commandTimeoutMs = PRODUCER_COMMAND_TIMEOUT_MS,
): RedisClient {
  const common: RedisOptions = {
    maxRetriesPerRequest: role === 'worker' ? null : 3,
    enableOfflineQueue: true,
    lazyConnect: false,
    ...(role === 'producer' ? { commandTimeout: commandTimeoutMs } : {}),
  };
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
  } else if (target.kind === 'node') {
    client = new Redis({
      ...common,
      host: target.host,
      port: target.port,
      db: target.db,
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...tlsOptions(target.tls),
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

/**
 * How many workers serve this queue now, or 'unreachable' when Redis does not answer. BullMQ names each worker's blocking connection after its
 * queue, and CLIENT LIST shows them (on a Cluster every node is asked and the one holding the
 * queue's slot, with the most of them, counts). Null when Redis will not say: CLIENT LIST refused
 * (an ACL without +client, a managed Redis that hides it) or no answer within `ms`.
 */
export async function workersServing(queue: Queue, ms = 3000): Promise<number | null | 'unreachable'> {
  try {
    const workers = await answerWithin(queue.getWorkers(), ms);
    // Where CLIENT is an unknown command BullMQ answers one placeholder without an id.
    return workers.every((w) => typeof w.id === 'string') ? workers.length : null;
  } catch (err) {
    // No answer at all: no worker can take a row either (they need Redis for every job).
    return isConnectionError(err) || (err as Error).message === NO_ANSWER ? 'unreachable' : null;
  }
}

export const NO_ANSWER = 'no answer';

/** The command's answer, or an Error('no answer') after `ms`. */
export async function answerWithin<T>(command: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      command,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(NO_ANSWER)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Errors that mean "Redis cannot be reached right now" (the client reconnects by itself), as
 * opposed to an error in a command.
 */
export function isConnectionError(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|EPIPE)$/.test(code))
    return true;
  return (
    typeof message === 'string' &&
    /ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|Connection is closed|Command timed out|Stream isn't writeable|Failed to refresh slots cache|None of (the )?startup nodes|All sentinels are unreachable|Reached the max retries per request/i.test(
      message,
    )
  );
}

/** Where Redis is, for messages: never a password. */
export function describeTarget(target: RedisTarget): string {
  if (target.kind === 'cluster')
    return `Redis Cluster ${target.nodes.map((n: { host: string; port: number }) => `${n.host}:${n.port}`).join(',')}`;
  if (target.kind === 'sentinel')
    return `Redis Sentinel ${target.sentinels.map((n: { host: string; port: number }) => `${n.host}:${n.port}`).join(',')} (master "${target.name}")`;
  if (target.kind === 'node') {
    const auth = target.username || target.password ? `${target.username ?? ''}${target.password ? ':***' : ''}@` : '';
    return `${target.tls ? 'rediss' : 'redis'}://${auth}${target.host}:${target.port}/${target.db}`;
  }
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
  try {
    await answerWithin(redis.ping(), ms);
  } catch (err) {
    throw new RedisUnreachableError(`cannot reach Redis at ${describeTarget(target)}: ${(err as Error).message} — ${CHECK_REDIS}`);
  }
}

/** Redis did not answer a producer's first PING (PostgreSQL answered). */
export class RedisUnreachableError extends UnreachableError {
  override readonly name: string = 'RedisUnreachableError';
}

/** What to check when Redis does not answer. */
export const CHECK_REDIS = "check the Redis settings (REDIS_URL, or Dify's REDIS_*) and that Redis is running";
