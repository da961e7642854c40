// /healthz is open (load balancers call it without the token), so it must stay cheap and answer
// even while a dependency stalls: each check is time-boxed, at most one check per dependency is
// outstanding (a stalled PostgreSQL would otherwise take a pool connection per request), and the
// answer is kept for a second, so a flood of requests costs no queries.
import type { Db } from '../db/pool.js';
import type { RedisClient } from '../queue/connection.js';

export interface Health {
  ok: boolean;
  postgres: boolean;
  redis: boolean;
}

export const HEALTH_TIMEOUT_MS = 2000;
export const HEALTH_CACHE_MS = 1000;

/** A check that answers false when it fails, or has not answered within `timeoutMs`. */
function boxed(check: () => Promise<unknown>, timeoutMs: number): () => Promise<boolean> {
  let pending: { since: number; answer: Promise<boolean> } | undefined;
  return () => {
    if (!pending) {
      const answer = check().then(
        () => true,
        () => false,
      );
      pending = { since: Date.now(), answer };
      void answer.then(() => {
        pending = undefined;
      });
    }
    const left = pending.since + timeoutMs - Date.now();
    if (left <= 0) return Promise.resolve(false); // still stalled: no second check behind it
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      pending.answer,
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), left);
      }),
    ]).finally(() => clearTimeout(timer));
  };
}

export function healthCheck(
  deps: { db: Db; redis: RedisClient },
  opts: { timeoutMs?: number; cacheMs?: number } = {},
): () => Promise<Health> {
  const timeoutMs = opts.timeoutMs ?? HEALTH_TIMEOUT_MS;
  const cacheMs = opts.cacheMs ?? HEALTH_CACHE_MS;
  const postgres = boxed(() => deps.db.query('SELECT 1'), timeoutMs);
  const redis = boxed(() => deps.redis.ping(), timeoutMs);
  let kept: { at: number; health: Health } | undefined;
  let running: Promise<Health> | undefined;
  return () => {
    if (kept && Date.now() - kept.at < cacheMs) return Promise.resolve(kept.health);
    running ??= Promise.all([postgres(), redis()])
      .then(([pg, r]) => {
        kept = { at: Date.now(), health: { ok: pg && r, postgres: pg, redis: r } };
        return kept.health;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };
}
