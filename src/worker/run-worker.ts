// A worker: builds its dependencies once from the runtime, checks the database is a Dify it
// knows, runs BullMQ's Worker, says once when Redis cannot be reached (redis-watch.ts), and
// shuts down on a signal: the first finishes in-flight jobs within the grace period (at once when
// Redis is unreachable: nothing can be finished in the queue then), a second stops at once.
import type { Job, Worker } from 'bullmq';
import type { Config } from '../config/config.js';
import { rsaKeySource, type KeySource } from '../crypto/rsa-keys.js';
import { describeSchema, type Band } from '../dify/schema-probe.js';
import type { Db } from '../db/pool.js';
import { workspaceWriter } from '../dify/workspace-writer.js';
import { accountLookupAdvice, accountLookupCost } from '../dify/accounts.js';
import { ConfigError, describeError } from '../common/errors.js';
import { MembershipWriter, membershipCapabilities } from '../dify/membership.js';
import { createLogger, type Logger } from '../log/logger.js';
import { difyTokenStoreOf, redisTargetOf, requireInvitations } from '../config/config.js';
import { openInviter, type Inviter, type OnIssued } from '../invite/inviter.js';
import { invitationMail } from '../invite/deliver.js';
import { openRevoker, Revoker } from '../invite/revoke.js';
import { openKeyStorage, openQueueRuntime } from '../runtime/runtime.js';
import type { ServerWatch, WatchState } from '../queue/server-watch.js';
import type { KeyStorage } from '../storage/key-storage.js';
import { rowsWaitForInvitations } from '../store/rows.js';
import { sealKeyCache } from '../store/sealed-secrets.js';
import { createProvisionWorker } from './processor.js';
import { watchRedis, type RedisHeartbeat, type RedisWatch } from './redis-watch.js';
import { startSweeping, type SweepOptions } from './sweep.js';
import { openDifyTasks } from './dify-tasks.js';

export interface RunWorkerOptions {
  /** Jobs in flight in this process; default: the config's workerConcurrency. */
  concurrency?: number;
  limiter?: { max: number; durationMs: number };
  lockDurationMs?: number;
  /** Install SIGINT/SIGTERM handlers (the CLI does; an embedding program may not want them). */
  handleSignals?: boolean;
  logger?: Logger;
  keys?: KeySource;
  /** The sweep for rows that wait without a job (worker/sweep.ts); false: this worker never sweeps. */
  sweep?: SweepOptions | false;
  /** Wraps the key storage (fault injection in the chaos tests). */
  wrapStorage?: (real: KeyStorage) => KeyStorage;
  /** With handleSignals: how long the first signal lets in-flight jobs finish; default 30 s. */
  gracePeriodMs?: number;
  /** The server registry's timing (queue/server-watch.ts); tests shorten it. */
  watch?: { intervalMs?: number; liveMs?: number };
  /** How often the worker checks that Redis answers on its open connection, and how long it waits (redis-watch.ts); tests shorten them. */
  redisHeartbeat?: RedisHeartbeat;
  /** How long a job left for another server waits before it is seen again. */
  leaveMs?: number;
  /**
   * Called with each invitation link once its token is in Dify's Redis (rows ingested with
   * invitations; `send` says the batch asked for mail). The link is a secret: never log it.
   */
  onInviteIssued?: OnIssued;
  /** Called once when this database's identity changed under the worker (`identity --new`); the worker has stopped by then. */
  onIdentityMoved?: (message: string) => void;
}

export interface RunningWorker {
  worker: Worker;
  /** Finishes in-flight jobs (or, with force, hands them back) and closes every connection. */
  close(force?: boolean): Promise<void>;
}

export async function runWorker(config: Config, opts: RunWorkerOptions = {}): Promise<RunningWorker> {
  const logger = opts.logger ?? createLogger(config.logLevel, 1);
  const concurrency = opts.concurrency ?? config.workerConcurrency;
  // The runtime checks the database is a Dify it knows before anything of ours is created there.
  const rt = await openQueueRuntime(config, { role: 'worker', logger, ...(opts.watch ? { watch: opts.watch } : {}) });
  let closeInviter: (() => void) | undefined;
  try {
    const { schema } = rt;
    const real = await openKeyStorage(rt.config, { logger });
    if (rt.config.storageNote) logger.info(rt.config.storageNote);
    const storage = opts.wrapStorage ? opts.wrapStorage(real) : real;
    // --send-invites: each link is mailed as its token becomes valid (the caller's hook after).
    const mail = invitationMail(rt.config, rt.db, logger, opts.onInviteIssued);
    const invites = await inviterFor(rt.config, schema.band, rt.db, logger, mail.onIssued);
    // Revoking a removed person's tokens needs only Dify's Redis: the inviter's connection, or one of its own.
    const store = difyTokenStoreOf(rt.config);
    const revoking = invites.inviter
      ? { revoker: new Revoker(invites.inviter.tokens, rt.db), close: () => {} }
      : 'store' in store
        ? openRevoker(store.store, schema.band, rt.db)
        : undefined;
    if (rt.config.defaultPluginsProblem) throw new ConfigError(rt.config.defaultPluginsProblem);
    const difyTasks = openDifyTasks(rt.config.defaultPlugins, schema.band, logger);
    closeInviter = () => {
      invites.close?.();
      revoking?.close();
      mail.close();
      difyTasks?.close();
    };
    const worker = createProvisionWorker(
      {
        db: rt.db,
        keys: opts.keys ?? rsaKeySource,
        storage,
        writer: workspaceWriter(schema, rt.config.trialCredits),
        membership: new MembershipWriter(membershipCapabilities(schema)),
        scoping: schema.scoping,
        sealKeys: sealKeyCache(rt.db),
        own: () => rt.server.state.server,
        ...(invites.inviter ? { inviter: invites.inviter } : { inviteProblem: invites.problem }),
        ...(revoking ? { revoker: revoking.revoker } : { revokeProblem: 'problem' in store ? store.problem : 'not configured' }),
        ...(difyTasks ? { difyTasks } : {}),
        logger,
      },
      {
        connection: rt.redis,
        prefix: rt.config.queuePrefix,
        queueName: rt.dify.queueName,
        concurrency,
        logger,
        ...(opts.limiter ? { limiter: opts.limiter } : {}),
        ...(opts.lockDurationMs ? { lockDurationMs: opts.lockDurationMs } : {}),
        watch: rt.server,
        ...(opts.leaveMs ? { leaveMs: opts.leaveMs } : {}),
      },
    );
    const watch = watchRedis(rt.redis, worker, redisTargetOf(rt.config)!, logger, undefined, opts.redisHeartbeat);
    const sweeper =
      opts.sweep === false ? undefined : startSweeping(rt.db, rt, logger, opts.sweep, invites.inviter, difyTasks, revoking?.revoker);
    let closing: Promise<void> | undefined;
    const close = async (force = false) => {
      closing ??= (async () => {
        await Promise.all([sweeper?.stop(), worker.close(force)]);
        watch.stop();
        closeInviter?.();
        await rt.close();
      })();
      return closing;
    };
    if (opts.handleSignals) installSignalHandlers(close, handBack(worker), watch, logger, opts.gracePeriodMs ?? 30_000);
    gateOnServer(rt.server, worker, logger, () => close(), opts.onIdentityMoved);
    logger.info(
      {
        concurrency,
        prefix: rt.config.queuePrefix,
        queue: rt.dify.queueName,
        database: rt.dify.database,
        dbPoolMax: rt.config.dbPoolMax,
        band: schema.band,
        storage: storage.description,
      },
      `worker started; ${describeSchema(schema)}`,
    );
    if (difyTasks) logger.info(difyTasks.describe());
    const lookup = accountLookupAdvice(await accountLookupCost(rt.db).catch(() => ({ accounts: 0, indexed: true })));
    if (lookup) logger.warn(lookup);
    return { worker, close };
  } catch (err) {
    closeInviter?.();
    await rt.close();
    throw err;
  }
}

/**
 * Dify's Redis and console address for invitations, when Dify's settings give them. A worker
 * without them still runs; rows that ask for invitations fail with the reason (said at start
 * when such rows are waiting).
 */
async function inviterFor(
  config: Config,
  band: Band,
  db: Db,
  logger: Logger,
  onIssued?: OnIssued,
): Promise<{ inviter?: Inviter; close?: () => void; problem: string }> {
  let settings: ReturnType<typeof requireInvitations>;
  try {
    settings = requireInvitations(config);
  } catch (err) {
    const problem = describeError(err);
    if (await rowsWaitForInvitations(db)) logger.error(`rows waiting here ask for invitations, which this worker cannot issue: ${problem}`);
    return { problem };
  }
  return { ...openInviter(settings, band, { logger, ...(onIssued ? { onIssued } : {}) }), problem: '' };
}

/**
 * Takes jobs only while no other live server claims this identity (queue/server-watch.ts), or
 * only copies of this server's database do (they hold themselves; said as a warning): a conflict
 * pauses the worker and says what to run; an identity changed under it stops it.
 */
function gateOnServer(
  watch: ServerWatch,
  worker: Worker,
  logger: Logger,
  stop: () => Promise<void>,
  onMoved?: (message: string) => void,
): void {
  const apply = (state: WatchState) => {
    if (state.gate === 'open') {
      // A copy of this server's database sharing the queue holds itself; this server runs on, saying so.
      if (state.copies.length > 0) logger.warn({ copies: state.copies.map((o) => `${o.lineage}@${o.host}`) }, state.message);
      void worker.resume();
      return;
    }
    void worker.pause(true);
    if (state.gate === 'conflict') logger.error({ others: state.others.map((o) => `${o.lineage}@${o.host}`) }, state.message);
    else if (state.gate === 'waiting') logger.info(state.message);
    else {
      logger.error(state.message);
      void stop().then(() => onMoved?.(state.message!));
    }
  };
  watch.onChange((now) => apply(now));
  apply(watch.state);
}

/**
 * Returns the jobs this process is working on to the queue at once (another worker takes them
 * now, not when their lock expires), within `ms`: Redis may not answer. The ledger makes the
 * second run harmless if this process still finishes one.
 */
function handBack(worker: Worker): (ms: number) => Promise<number> {
  const inFlight = new Map<string, Job>();
  worker.on('active', (job) => inFlight.set(job.id!, job));
  worker.on('completed', (job) => inFlight.delete(job.id!));
  worker.on('failed', (job) => job && inFlight.delete(job.id!));
  return async (ms) => {
    const jobs = [...inFlight.values()];
    const moved = Promise.allSettled(jobs.map((job) => job.moveToWait(job.token)));
    await Promise.race([moved, new Promise((r) => setTimeout(r, ms).unref())]);
    return jobs.length;
  };
}

function installSignalHandlers(
  close: () => Promise<void>,
  handBackJobs: (ms: number) => Promise<number>,
  watch: RedisWatch,
  logger: Logger,
  graceMs: number,
): void {
  let signals = 0;
  // pino writes asynchronously: flush before exiting, so the last outcomes are not lost.
  const exit = (code: number) => logger.flush(() => process.exit(code));
  const after = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      // BullMQ's close waits for Redis, which may never answer: hand the jobs back (if Redis
      // answers within a second; else they return when their lock expires) and leave.
      logger.info({ signal }, 'stopping now: handing in-flight jobs back to the queue');
      void handBackJobs(1000).finally(() => exit(0));
      return;
    }
    logger.info(
      { signal, gracePeriodSeconds: graceMs / 1000 },
      `stopping: finishing in-flight jobs (up to ${graceMs / 1000} s; signal again to stop now)`,
    );
    Promise.race([
      close().then(() => 'stopped' as const),
      watch.unreachable().then(() => 'unreachable' as const),
      after(graceMs).then(() => 'grace' as const),
    ]).then(
      (how) => {
        if (how === 'stopped') logger.info('worker stopped');
        else if (how === 'unreachable') logger.warn('worker stopped: Redis is unreachable, so no job can be finished in the queue');
        else
          logger.warn(
            `worker stopped: the grace period of ${graceMs / 1000} s is over; jobs in flight go back to the queue when their lock expires`,
          );
        exit(0);
      },
      (err) => {
        logger.error({ error: describeError(err) }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
