// The worker process: builds its dependencies once, checks the database is Dify's, runs BullMQ's
// Worker, and shuts down gracefully (SIGINT/SIGTERM finish in-flight jobs; a second signal hands
// them back to the queue at once).
import type { Worker } from 'bullmq';
import { requireConfig, type Config } from '../src/config/config.js';
import { createPool } from '../src/db/pool.js';
import { describeError } from '../src/errors.js';
import { createLogger, type Logger } from '../src/log/logger.js';
import { localKeyStorage, type KeyStorage } from '../src/provision/key-storage.js';
import { detectScoping } from '../src/provision/api-keys.js';
import { checkDifyDatabase } from '../src/provision/preflight.js';
import { sealKeyCache } from '../src/results/sealed-secrets.js';
import { rsaKeySource, type KeySource } from '../src/provision/rsa-keys.js';
import { redisConnection } from '../src/queue/connection.js';
import { createProvisionWorker } from '../src/queue/provision-worker.js';
import { migrate } from '../src/results/migrate.js';

export interface RunWorkerOptions {
  concurrency: number;
  limiter?: { max: number; durationMs: number };
  lockDurationMs?: number;
  /** Install SIGINT/SIGTERM handlers (the CLI does; an embedding program may not want them). */
  handleSignals?: boolean;
  logger?: Logger;
  keys?: KeySource;
  /** Wraps the key-file storage (fault injection in the chaos tests). */
  wrapStorage?: (real: KeyStorage) => KeyStorage;
}

export interface RunningWorker {
  worker: Worker;
  /** Finishes in-flight jobs (or, with force, hands them back) and closes every connection. */
  close(force?: boolean): Promise<void>;
}

export async function runWorker(config: Config, opts: RunWorkerOptions): Promise<RunningWorker> {
  const cfg = requireConfig(config, 'redisUrl', 'databaseUrl', 'storageDir');
  const logger = opts.logger ?? createLogger(cfg.logLevel, 1);
  const db = createPool(cfg.databaseUrl, opts.concurrency + 2);
  const connection = redisConnection(cfg.redisUrl, 'worker');
  try {
    await checkDifyDatabase(db);
    await migrate(db);
    const real = await localKeyStorage({ root: cfg.storageDir, ...(cfg.keyFileOwner ? { owner: cfg.keyFileOwner } : {}) });
    const storage = opts.wrapStorage ? opts.wrapStorage(real) : real;
    const worker = createProvisionWorker(
      { db, keys: opts.keys ?? rsaKeySource, storage, trialCredits: cfg.trialCredits, logger, scoping: await detectScoping(db), sealKeys: sealKeyCache(db) },
      { connection, prefix: cfg.queuePrefix, concurrency: opts.concurrency, logger, ...(opts.limiter ? { limiter: opts.limiter } : {}), ...(opts.lockDurationMs ? { lockDurationMs: opts.lockDurationMs } : {}) },
    );
    let closing: Promise<void> | undefined;
    const close = async (force = false) => {
      closing ??= (async () => {
        await worker.close(force);
        await Promise.allSettled([db.end(), connection.quit()]);
      })();
      return closing;
    };
    if (opts.handleSignals) installSignalHandlers(close, logger);
    logger.info({ concurrency: opts.concurrency, prefix: cfg.queuePrefix }, 'worker started');
    return { worker, close };
  } catch (err) {
    await Promise.allSettled([db.end(), connection.quit()]);
    throw err;
  }
}

function installSignalHandlers(close: (force?: boolean) => Promise<void>, logger: Logger): void {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    const force = signals > 1;
    logger.info({ signal }, force ? 'stopping now: handing in-flight jobs back' : 'stopping: finishing in-flight jobs (signal again to stop now)');
    // pino writes asynchronously: flush before exiting, so the last outcomes are not lost.
    const exit = (code: number) => logger.flush(() => process.exit(code));
    close(force).then(
      () => {
        logger.info('worker stopped');
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
