// A worker's view of Redis. ioredis and BullMQ reconnect by themselves, with backoff, and BullMQ
// reports every failed attempt of each of its connections: this says it once instead (where
// Redis is, the cause, what to check), then a line a minute at most while it lasts, and once
// when Redis answers again. A Redis that answers nothing on an open connection (paused, stuck)
// raises no error: a PING with a deadline finds it. A stopping worker asks it whether anything
// can still be finished.
import type { Worker } from 'bullmq';
import type { RedisTarget } from '../config/config.js';
import { describeError } from '../common/errors.js';
import type { Logger } from '../log/logger.js';
import { answerWithin, CHECK_REDIS, describeTarget, isConnectionError, NO_ANSWER, type RedisClient } from '../queue/connection.js';

export interface RedisWatch {
  /** Resolves as soon as Redis is found unreachable (at once if it is now). */
  unreachable(): Promise<void>;
  stop(): void;
}

/**
 * A PING every `intervalMs` that must answer within `answerMs`: a Redis that keeps the connection
 * open and answers nothing (paused, stuck, cut off without a reset) raises no error, and the
 * worker (whose commands never give up) would wait without a word.
 */
export interface RedisHeartbeat {
  intervalMs?: number;
  answerMs?: number;
}

export const DEFAULT_HEARTBEAT = { intervalMs: 15_000, answerMs: 10_000 };

export function watchRedis(
  redis: RedisClient,
  worker: Worker,
  target: RedisTarget,
  logger: Logger,
  repeatMs = 60_000,
  heartbeat: RedisHeartbeat = {},
): RedisWatch {
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
    wentDown(describeError(err));
  };
  const wentDown = (cause: string) => {
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
  const answerMs = heartbeat.answerMs ?? DEFAULT_HEARTBEAT.answerMs;
  let beating = false;
  const beat = setInterval(() => {
    if (down || stopped || closing || beating) return;
    beating = true;
    answerWithin(redis.ping(), answerMs)
      .catch((err: unknown) => {
        if (!down && !stopped && !closing && (err as Error).message === NO_ANSWER)
          wentDown(
            `no answer to a PING within ${answerMs / 1000} s on an open connection (Redis paused, stuck, or cut off without a reset)`,
          );
      })
      .finally(() => {
        beating = false;
      });
  }, heartbeat.intervalMs ?? DEFAULT_HEARTBEAT.intervalMs);
  beat.unref();
  return {
    unreachable: () => (down ? Promise.resolve() : new Promise<void>((wake) => waiters.push(wake))),
    stop() {
      stopped = true;
      clearTimeout(retry);
      clearInterval(beat);
      redis.off('error', onError);
      worker.off('error', onWorkerError);
      worker.off('closing', onClosing);
    },
  };
}
