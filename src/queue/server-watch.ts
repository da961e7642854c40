// Which live PostgreSQL servers claim this Dify's queue. Every process with a queue (workers,
// ingest, the dashboard, the CLI) registers the server it is connected to in Redis, under the
// queue, and refreshes that every few seconds. Two servers that were both alive at once (each
// answered after the other started) share one identity: one is a physical copy of the other.
// The copy is the one whose database had the other's lineage before its own began (the original's
// database never had the copy's): its workers take no jobs until it has an identity of its own
// (`identity --new`), while the original's keep running its rows. When neither can tell (one
// lineage, or each new to the other), both sides' workers hold.
// A server seen shortly before this one started is a restart until it answers again: workers
// wait until it is no longer live (at most `liveMs`) before taking jobs.
import { hostname } from 'node:os';
import { z } from 'zod';
import type { Db } from '../db/pool.js';
import { describeError } from '../common/errors.js';
import type { Logger } from '../log/logger.js';
import { KNOWN_LINEAGES, observeServer, recordSuccession, type ServerView } from '../store/server.js';
import type { RedisClient } from './connection.js';

/** What this process may do with the queue's jobs: take them, wait, or stop. */
export type Gate = 'open' | 'waiting' | 'conflict' | 'moved';

/** One server as the registry holds it. */
export interface ServerEntry {
  lineage: string;
  since: string;
  started: string;
  seen: string;
  instance: string;
  database: string;
  /** The host of the process that last refreshed it. */
  host: string;
  /** Redis' clock (ms) at that refresh. */
  at: number;
  /** The lineages its database has had (ServerView.known); absent from older versions' entries. */
  known?: string[];
}

const micro = z.string().regex(/^[0-9]{1,19}$/);
const EntrySchema = z.object({
  lineage: z.string().max(64),
  since: z.string().max(64),
  started: micro,
  seen: micro,
  instance: z.string().max(64),
  database: z.string().max(255),
  host: z.string().max(255),
  at: z.number(),
  known: z
    .array(z.string().max(64))
    .max(KNOWN_LINEAGES + 64)
    .optional(),
});

export interface WatchState {
  gate: Gate;
  server: ServerView;
  /** The servers behind a conflict, or those waited for. */
  others: ServerEntry[];
  /** Live physical copies of this server's database sharing its queue (their workers hold; this one's run). */
  copies: ServerEntry[];
  /** What is happening and what to do, for logs and `status` (undefined when open with no copy). */
  message?: string;
}

export interface ServerWatchOptions {
  prefix: string;
  queueName: string;
  /** The identity this process serves (store/instance.ts). */
  instance: string;
  database: string;
  /** How often to refresh (default 5 s). */
  intervalMs?: number;
  /** A server not refreshed for this long is gone (default 30 s). */
  liveMs?: number;
  logger?: Logger;
}

export interface ServerWatch {
  readonly state: WatchState;
  /** Observes the server and the registry now (concurrent calls share one refresh). */
  refresh(): Promise<WatchState>;
  /** Calls `fn` after each refresh whose gate (or set of copies) differs from the one before. */
  onChange(fn: (now: WatchState, before: WatchState) => void): void;
  /** Refreshes every `intervalMs` until `stop`. */
  start(): void;
  stop(): void;
}

export const DEFAULT_WATCH = { intervalMs: 5_000, liveMs: 30_000 };
/** Entries not refreshed for a day are removed. */
const FORGET_MS = 24 * 3600_000;

// Writes this server's entry (its `seen` only moves forward) stamped with Redis' own clock, drops
// entries gone for a day, and returns Redis' time and every entry: one round trip.
const BEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entry = cjson.decode(ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local o = cjson.decode(old)
  if tonumber(o.seen) > tonumber(entry.seen) then entry.seen = o.seen end
end
entry.at = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local e = cjson.decode(all[i + 1])
  if now - tonumber(e.at) > tonumber(ARGV[3]) then redis.call('HDEL', KEYS[1], all[i]) else table.insert(out, all[i + 1]) end
end
return {tostring(now), out}`;

/** What a change is noticed by: the gate, and the copies seen while open. */
const shownAs = (s: WatchState) => `${s.gate} ${s.copies.map(fieldOf).sort().join(' ')}`;

export const registryKey = (prefix: string, queueName: string) => `${prefix}:${queueName}:servers`;
const fieldOf = (s: { lineage: string; started: string }) => `${s.lineage}@${s.started}`;
const big = (micros: string) => BigInt(micros);
const when = (micros: string) => new Date(Number(big(micros) / 1000n)).toISOString();

/**
 * Which of two servers of one identity is the physical copy, from the lineages each one's
 * database has had: a copy's database had its original's lineage before the copy minted its own;
 * the original's database never had the copy's. One lineage on both, or each new to the other (a
 * crash no process of ours saw, on one side, after the copy was made): nobody can tell.
 */
export function copyRelation(
  self: Pick<ServerView, 'lineage' | 'known'>,
  other: Pick<ServerEntry, 'lineage' | 'known'>,
): 'original' | 'copy' | 'unknown' {
  if (other.lineage === self.lineage) return 'unknown';
  const selfHadOther = self.known.includes(other.lineage);
  const otherHadSelf = (other.known ?? []).includes(self.lineage);
  if (otherHadSelf && !selfHadOther) return 'original';
  if (selfHadOther && !otherHadSelf) return 'copy';
  return 'unknown';
}

export interface Judgement {
  gate: Gate;
  /** The servers behind a conflict, or those waited for. */
  others: ServerEntry[];
  /** Live copies of this server's database (copyRelation 'original'): they hold, this server runs. */
  copies: ServerEntry[];
}

/**
 * Judges the registry from this server's side: a live server that answered after this one
 * started, while this one answered after it started, is a second server with this identity. When
 * it is a copy of this one, this server keeps its gate open (the copy's own judgement holds it);
 * when this one is the copy, or nobody can tell, the gate closes: a conflict.
 */
export function judge(
  self: ServerView,
  entries: ServerEntry[],
  now: number,
  liveMs: number,
  /** Servers this process itself was connected to before (its own connection saw them restart or fail over). */
  earlier: ReadonlySet<string> = new Set(),
  /**
   * When this process first saw this server answer (its clock, microseconds): an earlier server of
   * this process last seen before then was left behind, not a second one live beside this one.
   * Default: this server's start (a restart: the earlier one was gone before it started).
   */
  switchedAt: string = self.started,
): Judgement {
  const conflicts: ServerEntry[] = [];
  const pending: ServerEntry[] = [];
  const copies: ServerEntry[] = [];
  for (const e of entries) {
    const field = fieldOf(e);
    if (field === fieldOf(self) || e.instance !== self.instance || now - e.at > liveMs) continue;
    // A failover to a standby: the new server was up long before the old one went, so the old one's
    // last answer is after this one's start; it is still the server this process left, not a copy.
    if (earlier.has(field) && big(e.seen) <= big(switchedAt)) continue;
    // A lineage this database recorded as its predecessor (a crash or a failover a process of ours
    // saw, or `identity --adopt`): the server this one replaced, not an original it is a copy of.
    // Still live only until its last refreshes age out (at most liveMs): wait for that.
    if (e.lineage !== self.lineage && self.chain.includes(e.lineage)) {
      pending.push(e);
      continue;
    }
    // A copy of this server's database, live now or seen before this server started: never a reason to wait.
    if (copyRelation(self, e) === 'original') copies.push(e);
    else if (big(e.seen) > big(self.started) && big(self.seen) > big(e.started)) conflicts.push(e);
    else pending.push(e);
  }
  if (conflicts.length > 0) return { gate: 'conflict', others: conflicts, copies };
  if (pending.length > 0) return { gate: 'waiting', others: pending, copies };
  return { gate: 'open', others: [], copies };
}

const describeEntry = (e: ServerEntry) =>
  `lineage ${e.lineage} since ${e.since}, started ${when(e.started)}, refreshed from host ${e.host}`;

export function conflictMessage(queueName: string, database: string, self: ServerView, others: ServerEntry[]): string {
  const original = others.find((o) => copyRelation(self, o) === 'copy');
  if (original) return copyMessage(queueName, database, self, original);
  const other = others[0]!;
  const mine = self.since.getTime();
  const theirs = Date.parse(other.since);
  const hint =
    other.lineage === self.lineage
      ? 'both carry one lineage (a copy of a stopped server): only you know which one is the copy'
      : 'neither database had the other\u2019s lineage before its own began (both lineages are new, as after a crash no process ' +
        'of ours saw): only you know which one is the copy; ' +
        (mine > theirs
          ? 'this server\u2019s lineage began later: this one is most likely the copy'
          : 'the other server\u2019s lineage began later: that one is most likely the copy');
  return (
    `identity conflict: queue ${queueName} (Dify database "${database}") is claimed by two live PostgreSQL servers: ` +
    `this one (lineage ${self.lineage} since ${self.since.toISOString()}, started ${when(self.started)}) and another ` +
    `(lineage ${other.lineage} since ${other.since}, started ${when(other.started)}, refreshed from host ${other.host}); ` +
    `${hint}. A physical copy (pg_basebackup, a copied volume, a snapshot) keeps its original's identity: the workers of this ` +
    `queue take no jobs until one of them has its own. On the copy, not on the original, run \`dify-provision identity --new\` ` +
    `(with the copy's DATABASE_URL): the copy gets a queue of its own and queues nothing of the original; then restart its workers.`
  );
}

/** This server is the copy: its workers hold, the original's run. */
function copyMessage(queueName: string, database: string, self: ServerView, original: ServerEntry): string {
  return (
    `physical copy: this PostgreSQL server (lineage ${self.lineage} since ${self.since.toISOString()}, started ${when(self.started)}) ` +
    `is a copy of the live server that serves queue ${queueName} (Dify database "${database}"): ${describeEntry(original)}. ` +
    `This database had that server's lineage before its own began, and that server's database never had this one's. ` +
    `The workers here take no jobs; the original's keep running its rows. On this server (the copy), not on the original, run ` +
    `\`dify-provision identity --new\` (with the copy's DATABASE_URL): the copy gets a queue of its own and queues nothing of the ` +
    `original; then restart its workers.`
  );
}

/** This server is the original: it keeps running; the copy's workers hold. */
function copiesMessage(queueName: string, copies: ServerEntry[]): string {
  return (
    `a physical copy of this database shares queue ${queueName}: ${copies.map(describeEntry).join('; ')} ` +
    `(its database had this server's lineage; this one never had its). This server's workers keep running its rows; the ` +
    `copy's take no jobs. On the copy, not here, run \`dify-provision identity --new\` (with the copy's DATABASE_URL).`
  );
}

const waitingMessage = (others: ServerEntry[], liveMs: number) =>
  `waiting (at most ${Math.round(liveMs / 1000)} s) before taking jobs: server ${others[0]!.lineage}@${when(others[0]!.started)} ` +
  `claimed this identity until shortly before this server started or took over (a restart, a failover, or a copy not seen since)`;

export async function watchServer(db: Db, redis: RedisClient, opts: ServerWatchOptions): Promise<ServerWatch> {
  const intervalMs = opts.intervalMs ?? DEFAULT_WATCH.intervalMs;
  const liveMs = opts.liveMs ?? DEFAULT_WATCH.liveMs;
  const key = registryKey(opts.prefix, opts.queueName);
  const listeners: ((now: WatchState, before: WatchState) => void)[] = [];
  let state: WatchState | undefined;
  let running: Promise<WatchState> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const earlier = new Set<string>();
  /** Each server this process saw: its clock when this process first saw it answer. */
  const firstSeen = new Map<string, string>();

  const observe = async (): Promise<WatchState> => {
    let server = await observeServer(db);
    const before = state?.server;
    // The lineage changed under this process's own connection with the identity unchanged: the
    // server recovered from a crash or failed over. Its rows are this server's.
    if (before && before.lineage !== server.lineage && before.instance === opts.instance && server.instance === opts.instance) {
      await recordSuccession(db, server.lineage, before.lineage);
      opts.logger?.info(
        { lineage: server.lineage, predecessor: before.lineage },
        'PostgreSQL restarted after a crash or failed over: its queued rows are taken here',
      );
      server = await observeServer(db);
    }
    if (server.instance !== opts.instance) {
      return {
        gate: 'moved',
        server,
        others: [],
        copies: [],
        message: `this database's identity changed (to ${server.instance ?? 'none'}; \`dify-provision identity --new\` was run): this process serves the old queue ${opts.queueName} and takes no more jobs; restart it`,
      };
    }
    const entry = {
      lineage: server.lineage,
      since: server.since.toISOString(),
      started: server.started,
      seen: server.seen,
      instance: opts.instance,
      database: opts.database,
      host: hostname(),
      known: server.known.slice(0, KNOWN_LINEAGES + 64),
    };
    const [now, raw] = (await redis.eval(BEAT, 1, key, fieldOf(server), JSON.stringify(entry), String(FORGET_MS))) as [string, string[]];
    // Redis is not trusted: an entry that is not well-formed is ignored (a forged one can only pause workers).
    const entries = raw.flatMap((r) => {
      try {
        const e = EntrySchema.safeParse(JSON.parse(r));
        return e.success ? [e.data] : [];
      } catch {
        return [];
      }
    });
    if (before && before.instance === opts.instance && fieldOf(before) !== fieldOf(server)) earlier.add(fieldOf(before));
    if (!firstSeen.has(fieldOf(server))) firstSeen.set(fieldOf(server), server.seen);
    const { gate, others, copies } = judge(server, entries, Number(now), liveMs, earlier, firstSeen.get(fieldOf(server)));
    const message =
      gate === 'conflict'
        ? conflictMessage(opts.queueName, opts.database, server, others)
        : gate === 'waiting'
          ? waitingMessage(others, liveMs)
          : copies.length > 0
            ? copiesMessage(opts.queueName, copies)
            : undefined;
    return { gate, server, others, copies, ...(message ? { message } : {}) };
  };

  const refresh = (): Promise<WatchState> => {
    running ??= observe()
      .then((next) => {
        const before = state;
        state = next;
        if (before && shownAs(before) !== shownAs(next)) for (const fn of listeners) fn(next, before);
        return next;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };

  // The server itself now; the registry in the background (a worker must start, and say so,
  // while Redis is down): the gate stays closed until the first refresh has judged the registry.
  state = { gate: 'waiting', server: await observeServer(db), others: [], copies: [], message: 'registering this server with the queue' };
  void refresh().catch((err) => opts.logger?.warn({ error: describeError(err) }, 'could not register this server with the queue yet'));
  return {
    get state() {
      return state!;
    },
    refresh,
    onChange: (fn) => void listeners.push(fn),
    start() {
      timer ??= setInterval(() => {
        refresh().catch((err) => opts.logger?.warn({ error: describeError(err) }, 'could not refresh this server in the registry'));
      }, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
  };
}

/** Removes one server from a queue's registry (the copy's entry under the identity it gave up). */
export async function forgetServer(
  redis: RedisClient,
  prefix: string,
  queueName: string,
  server: { lineage: string; started: string },
): Promise<void> {
  await redis.hdel(registryKey(prefix, queueName), fieldOf(server));
}

/** What to run when rows wait for a server this one does not descend from. */
export const otherLineageAdvice = (lineage: string) =>
  `if this database is that server, restarted after a crash while no dify-provision process was connected, run ` +
  `\`dify-provision identity --adopt ${lineage}\`; if it is a copy of it, run \`dify-provision identity --new\` here`;
