// Deleting invitation tokens from Dify's Redis: a removed person's (apply's remove_member) and
// revoked links' (a person's workspaces changed). Only Dify's Redis is needed for it, not its
// console address or mail: a worker with Dify's Redis settings alone revokes.
//
// Dify keeps each token under `member_invite:token:<token>` with the person and workspace only in
// its value: no index by person. Tokens we issued are ours to name only until they are stored
// (the token is then cleared from our ledger, never kept in the clear), and Dify's console issues
// its own; so a person's tokens are found by a SCAN of every token key. A removal does not scan:
// the worker scans once per batch (a snapshot of every token key by the pair its value names,
// taken again after a minute) and each removal deletes its pair's keys by name. A member's
// pair gains no Dify token while they are a member (Dify refuses to invite a member), and a token
// of ours stored after the snapshot began is seen in our ledger (stored_at): then the snapshot is
// taken again. What a removal cannot delete (no Dify Redis here, or it did not answer) is recorded
// (store/invitations.ts recordRevocationStatement) and deleted by the sweep of a worker that has it.
import type { Db } from '../db/pool.js';
import { DifyTokens, inviteKey, pairOf } from '../dify/invitations.js';
import type { Band } from '../dify/schema-probe.js';
import { redisConnection } from '../queue/connection.js';
import type { RedisTarget } from '../config/redis-target.js';
import {
  databaseNow,
  markRemovalsRevoked,
  markRevoked,
  revocationsDue,
  revocationsOfRemovalsDue,
  withdrawStrayLinks,
} from '../store/invitations.js';

/** Every token key in Dify's Redis by pair, as one SCAN that began at `since` (the database's clock) found them. */
interface Snapshot {
  since: Date;
  keys: Map<string, string[]>;
}

export class Revoker {
  private readonly snapshots = new Map<string, { at: number; snap: Promise<Snapshot> }>();

  constructor(
    readonly tokens: DifyTokens,
    private readonly db: Db,
    private readonly maxAgeMs = 60_000,
  ) {}

  /**
   * The batch's snapshot of Dify's token keys: one SCAN per batch on this worker, shared by the
   * removals running at once; taken again when older than a minute, or when it began before
   * `notBefore` (a token of ours stored since).
   */
  async snapshot(batchId: string, notBefore?: Date): Promise<Snapshot> {
    const now = performance.now();
    for (const [id, e] of this.snapshots) if (now - e.at > this.maxAgeMs) this.snapshots.delete(id);
    const held = this.snapshots.get(batchId);
    if (held) {
      const s = await held.snap.catch(() => undefined);
      if (s && (!notBefore || s.since >= notBefore)) return s;
      // Another removal may have taken a newer one meanwhile.
      const newer = this.snapshots.get(batchId);
      if (newer && newer !== held) return this.snapshot(batchId, notBefore);
    }
    const entry = {
      at: now,
      snap: (async () => {
        const since = await databaseNow(this.db);
        return { since, keys: await this.tokens.index() };
      })(),
    };
    this.snapshots.set(batchId, entry);
    entry.snap.catch(() => this.snapshots.get(batchId) === entry && this.snapshots.delete(batchId));
    return entry.snap;
  }

  /**
   * Deletes the person's tokens for the workspace: the snapshot's keys for the pair and the keys
   * of our tokens not yet stored (`pendingTokens`); `storedAt`, when our other tokens of the pair
   * were stored (one stored after the snapshot began takes a fresh one first). Returns how many
   * keys were deleted.
   */
  async revokePerson(
    batchId: string,
    accountId: string,
    tenantId: string,
    ours: { pendingTokens: string[]; storedAt: Date[] },
  ): Promise<number> {
    let snap = await this.snapshot(batchId);
    const latest = ours.storedAt.reduce<Date | undefined>((a, b) => (a && a > b ? a : b), undefined);
    if (latest && latest >= snap.since) snap = await this.snapshot(batchId, new Date(latest.getTime() + 1));
    const pair = pairOf(accountId, tenantId);
    const keys = [...(snap.keys.get(pair) ?? []), ...ours.pendingTokens.map((t) => inviteKey(this.tokens.format, t))];
    const deleted = await this.tokens.removeKeys([...new Set(keys)]);
    snap.keys.delete(pair);
    return deleted;
  }

  /**
   * The sweep's: links whose person joined another workspace where no row of ours revoked them
   * (Dify's console) are revoked now, their tokens deleted from Dify's Redis. Returns how many.
   */
  async revokeStray(): Promise<number> {
    const stray = await withdrawStrayLinks(this.db);
    if (stray.length > 0) await revokeWithdrawn(this.db, this.tokens, { ids: stray.map((s) => s.id) });
    return stray.length;
  }

  /**
   * The sweep: revocations left to it — removals recorded without their deletion, and revoked
   * links (withdrawAwayFromHome) idle for `idleSeconds` — deleted, one SCAN for up to 500 of them.
   */
  async completeDue(opts: { idleSeconds: number }): Promise<number> {
    let done = 0;
    for (;;) {
      const removals = await revocationsOfRemovalsDue(this.db, 500);
      if (removals.length === 0) break;
      await this.tokens.revokePairs(new Set(removals.map((r) => pairOf(r.account_id, r.tenant_id))));
      await markRemovalsRevoked(
        this.db,
        removals.map((r) => r.id),
      );
      done += removals.length;
      if (removals.length < 500) break;
    }
    return done + (await revokeWithdrawn(this.db, this.tokens, opts));
  }
}

/**
 * Deletes from Dify's Redis the tokens of revoked links (withdrawAwayFromHome): these, or all
 * revoked at least `idleSeconds` ago (the sweep). Every token of the (person, workspace) goes,
 * Dify's console's too. Returns how many revocations were done.
 */
export async function revokeWithdrawn(db: Db, tokens: DifyTokens, opts: { ids?: string[]; idleSeconds?: number } = {}): Promise<number> {
  if (opts.ids?.length === 0) return 0;
  let done = 0;
  for (;;) {
    const due = await revocationsDue(db, { ...opts, limit: 500 });
    if (due.length === 0) return done;
    await tokens.revokePairs(new Set(due.map((d) => pairOf(d.account_id, d.tenant_id))));
    await markRevoked(
      db,
      due.map((d) => d.id),
    );
    done += due.length;
    if (due.length < 500 || opts.ids) return done;
  }
}

/**
 * Dify's Redis for revoking, on its own connection (which fails a command fast when Redis is
 * down: the revocation then waits in PostgreSQL for the sweep). Needs only where Dify keeps its
 * tokens (REDIS_* and REDIS_KEY_PREFIX): no console address, no mail.
 */
export function openRevoker(
  store: { redis: RedisTarget; keyPrefix: string; expiryHours?: number },
  band: Band,
  db: Db,
): { revoker: Revoker; close(): void } {
  const redis = redisConnection(store.redis, 'producer');
  const tokens = new DifyTokens(redis, { band, keyPrefix: store.keyPrefix, expiryHours: store.expiryHours ?? 72 });
  return { revoker: new Revoker(tokens, db), close: () => redis.disconnect() };
}
