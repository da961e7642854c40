// Idempotency-Key on the API's POSTs: the first request with a key runs and its answer is kept
// (in Redis, under this queue's keys, for IDEMPOTENCY_TTL_MS); the same key with the same request
// gets that answer again, the same key with another request is refused (422), and a key whose
// first request is still running answers 409. Only a hash of the request is kept, and answers
// hold no secret (minted API keys are sealed, never in an answer). A refusal (4xx, 5xx) is not
// kept: a refused request changed nothing, and may be sent again.
import { createHash } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { RedisClient } from '../../queue/connection.js';
import { ApiRefusal } from './errors.js';

export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/** How long a first request may run before its key is free again (an ingest of a large file). */
const RUNNING_TTL_MS = 60 * 60 * 1000;

export interface Answer {
  status: number;
  body: unknown;
  /** Headers of the answer (Location), kept and replayed with it. */
  headers?: Record<string, string>;
}

type Kept =
  | { request: string; running: true }
  | { request: string; running?: false; status: number; body: unknown; headers?: Record<string, string> };

export interface IdempotencyStore {
  /** `run` once per key: `request` identifies what was asked (a hash of method, path, query and body). */
  once(key: string, request: string, run: () => Promise<Answer>): Promise<Answer & { replayed: boolean }>;
}

export const requestHash = (...parts: string[]) => createHash('sha256').update(parts.join('\u0000')).digest('hex');

export function idempotencyStore(redis: RedisClient, queue: Queue, ttlMs = IDEMPOTENCY_TTL_MS): IdempotencyStore {
  const keyOf = (key: string) => queue.toKey(`idempotency:${createHash('sha256').update(key).digest('hex')}`);
  return {
    async once(key, request, run) {
      if (key.length === 0 || key.length > 255) throw new ApiRefusal('INVALID_REQUEST', 400, 'Idempotency-Key must be 1-255 characters');
      const k = keyOf(key);
      const claimed = await redis.set(k, JSON.stringify({ request, running: true } satisfies Kept), 'PX', RUNNING_TTL_MS, 'NX');
      if (claimed !== 'OK') {
        const raw = await redis.get(k);
        const kept = raw ? (JSON.parse(raw) as Kept) : undefined;
        if (!kept)
          throw new ApiRefusal('IDEMPOTENCY_KEY_BUSY', 409, 'the first request with this Idempotency-Key just ended: send it again');
        if (kept.request !== request)
          throw new ApiRefusal(
            'IDEMPOTENCY_KEY_REUSED',
            422,
            'this Idempotency-Key was used for another request: use a new key for a new request',
          );
        if (kept.running)
          throw new ApiRefusal(
            'IDEMPOTENCY_KEY_BUSY',
            409,
            'the first request with this Idempotency-Key is still running: ask again later',
          );
        return { status: kept.status, body: kept.body, ...(kept.headers ? { headers: kept.headers } : {}), replayed: true };
      }
      let answer: Answer;
      try {
        answer = await run();
      } catch (err) {
        await redis.del(k);
        throw err;
      }
      if (answer.status >= 500) await redis.del(k);
      else
        await redis.set(
          k,
          JSON.stringify({
            request,
            status: answer.status,
            body: answer.body,
            ...(answer.headers ? { headers: answer.headers } : {}),
          } satisfies Kept),
          'PX',
          ttlMs,
        );
      return { ...answer, replayed: false };
    },
  };
}
