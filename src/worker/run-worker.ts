// A worker: builds its dependencies once from the runtime, checks the database is a Dify it
// knows, runs BullMQ's Worker, and shuts down gracefully (SIGINT/SIGTERM finish in-flight jobs;
// a second signal hands them back to the queue at once).
import type { Worker } from 'bullmq';
import type { Config } from '../config.js';
import { rsaKeySource, type KeySource } from '../crypto/rsa-keys.js';
import { describeSchema } from '../dify/schema-probe.js';
import { workspaceWriter } from '../dify/workspace-writer.js';
import { describeError } from '../errors.js';
import { createLogger, type Logger } from '../log/logger.js';
import { openKeyStorage, openQueueRuntime } from '../runtime.js';
import type { KeyStorage } from '../storage/key-storage.js';
import { sealKeyCache } from '../store/sealed-secrets.js';
import { createProvisionWorker } from './processor.js';

export interface RunWorkerOptions {
  /** Jobs in flight in this process; default: the config's workerConcurrency. */
  concurrency?: number;
  limiter?: { max: number; durationMs: number };
  lockDurationMs?: number;
  /** Install SIGINT/SIGTERM handlers (the CLI does; an embedding program may not want them). */
  handleSignals?: boolean;
  logger?: Logger;
  keys?: KeySource;
  /** Wraps the key storage (fault injection in the chaos tests). */
  wrapStorage?: (real: KeyStorage) => KeyStorage;
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
  const rt = await openQueueRuntime(config, { role: 'worker', logger });
  try {
    const { schema } = rt;
    const real = await openKeyStorage(rt.config);
    const storage = opts.wrapStorage ? opts.wrapStorage(real) : real;
    const worker = createProvisionWorker(
      {
        db: rt.db,
        keys: opts.keys ?? rsaKeySource,
        storage,
        writer: workspaceWriter(schema, rt.config.trialCredits),
        scoping: schema.scoping,
        sealKeys: sealKeyCache(rt.db),
      },
      {
        connection: rt.redis,
        prefix: rt.config.queuePrefix,
        queueName: rt.dify.queueName,
        concurrency,
        logger,
        ...(opts.limiter ? { limiter: opts.limiter } : {}),
        ...(opts.lockDurationMs ? { lockDurationMs: opts.lockDurationMs } : {}),
      },
    );
    let closing: Promise<void> | undefined;
    const close = async (force = false) => {
      closing ??= (async () => {
        await worker.close(force);
        await rt.close();
      })();
      return closing;
    };
    if (opts.handleSignals) installSignalHandlers(close, logger);
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
    return { worker, close };
  } catch (err) {
    await rt.close();
    throw err;
  }
}

function installSignalHandlers(close: (force?: boolean) => Promise<void>, logger: Logger): void {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    const force = signals > 1;
    logger.info(
      { signal },
      force ? 'stopping now: handing in-flight jobs back' : 'stopping: finishing in-flight jobs (signal again to stop now)',
    );
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
