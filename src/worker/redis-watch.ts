// A worker's view of Redis. ioredis and BullMQ reconnect by themselves, with backoff, and BullMQ
// reports every failed attempt of each of its connections: this says it once instead (where
// Redis is, the cause, what to check), then a line a minute at most while it lasts, and once
// when Redis answers again. A stopping worker asks it whether anything can still be finished.
import type { Worker } from 'bullmq';
import type { RedisTarget } from '../config/config.js';
import { describeError } from '../common/errors.js';
import type { Logger } from '../log/logger.js';
import { CHECK_REDIS, describeTarget, isConnectionError, type RedisClient } from '../queue/connection.js';

export interface RedisWatch {
  /** Resolves as soon as Redis is found unreachable (at once if it is now). */
  unreachable(): Promise<void>;
  stop(): void;
}

export function watchRedis(redis: RedisClient, worker: Worker, target: RedisTarget, logger: Logger, repeatMs = 60_000): RedisWatch {
  const where = describeTarget(target);
  let down: { since: number; lastLine: number } | undefined;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  const waiters: (() => void)[] = [];
  const seconds = (since: number) => Math.round((Date.now() - since) / 1000);

  // A PING waits for the reconnection (the worker's client never gives up a command) and answers then.
  const probe = () => {
    redis.ping().then(
      () => {
        if (!down || stopped) return;
        logger.info({ redis: where }, `Redis reachable again at ${where} after ${seconds(down.since)} s`);
        down = undefined;
      },
      () => {
        if (down && !stopped) retry = setTimeout(probe, 1000);
      },
    );
  };
  const onError = (err: unknown) => {
    if (stopped || !isConnectionError(err)) return;
    const cause = describeError(err);
    if (!down) {
      down = { since: Date.now(), lastLine: Date.now() };
      logger.warn(
        { redis: where, error: cause },
        `Redis unreachable at ${where}: ${cause} — ${CHECK_REDIS}; retrying quietly with backoff (a line a minute while it lasts)`,
      );
      for (const wake of waiters.splice(0)) wake();
      probe();
    } else if (Date.now() - down.lastLine >= repeatMs) {
      down.lastLine = Date.now();
      logger.warn({ redis: where, error: cause }, `Redis still unreachable at ${where} after ${seconds(down.since)} s: ${cause}`);
    }
  };
  // A closing worker's own connections end on purpose: only the shared client speaks for Redis then.
  let closing = false;
  const onWorkerError = (err: unknown) => {
    if (!closing) onError(err);
  };
  const onClosing = () => {
    closing = true;
  };
  redis.on('error', onError);
  worker.on('error', onWorkerError);
  worker.on('closing', onClosing);
  return {
    unreachable: () => (down ? Promise.resolve() : new Promise<void>((wake) => waiters.push(wake))),
    stop() {
      stopped = true;
      clearTimeout(retry);
      redis.off('error', onError);
      worker.off('error', onWorkerError);
      worker.off('closing', onClosing);
    },
  };
}
