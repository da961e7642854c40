// The runtime a command needs, opened once and closed when the command is done.
import type { Config } from '../config/config.js';
import { describeSchema, probeDifySchema } from '../dify/schema-probe.js';
import { BatchNotFoundError } from '../common/errors.js';
import { provisionerOn, type Provisioner } from '../provisioner.js';
import type { Queue } from 'bullmq';
import { redisTargetOf } from '../config/config.js';
import { provisionQueue, redisConnection, RedisUnreachableError, workersServing, type RedisClient } from '../queue/connection.js';
import { csvReport, jsonReport } from '../report/format.js';
import { openDbRuntime, openQueueRuntime } from '../runtime/runtime.js';
import { batchKind, batchProgress, getBatchStatus, listBatches, type WorkerCensus } from '../store/batches.js';
import { difyIdentity } from '../store/instance.js';
import { allReportRows } from '../store/report.js';

/** A provisioner for one command, closed when the command is done. */
export async function withProvisioner<T>(config: Config, fn: (p: Provisioner) => Promise<T>): Promise<T> {
  const p = provisionerOn(await openQueueRuntime(config));
  try {
    return await fn(p);
  } finally {
    await p.close();
  }
}

/** What the reading commands (status, report, batches) use of a provisioner: all of it from PostgreSQL but the census. */
export type Reader = Pick<Provisioner, 'batches' | 'workers' | 'difySchema' | 'queue'> & {
  batch(
    id: string,
  ): Pick<ReturnType<Provisioner['batch']>, 'id' | 'status' | 'progress' | 'reportCsv' | 'reportJson'> &
    Partial<Pick<ReturnType<Provisioner['batch']>, 'rowsWithoutJob'>>;
  serverStatus?: Provisioner['serverStatus'];
};

/**
 * A reader for one command: the provisioner, or, when Redis does not answer, the same answers
 * from PostgreSQL alone (the counts, states and reports live there), each saying that Redis is
 * unreachable (workers: 'unreachable').
 */
export async function withReader<T>(config: Config, fn: (r: Reader) => Promise<T>, opts: { followRedis?: boolean } = {}): Promise<T> {
  let p: Provisioner;
  try {
    p = provisionerOn(await openQueueRuntime(config));
  } catch (err) {
    if (!(err instanceof RedisUnreachableError)) throw err;
    return withPostgresReader(config, fn, opts);
  }
  try {
    return await fn(p);
  } finally {
    await p.close();
  }
}

/**
 * `followRedis` (wait): the census keeps asking Redis (a client that reconnects by itself), so a
 * batch followed from PostgreSQL says when Redis answers again and a worker takes its rows.
 */
async function withPostgresReader<T>(config: Config, fn: (r: Reader) => Promise<T>, opts: { followRedis?: boolean }): Promise<T> {
  const rt = await openDbRuntime(config, { migrate: false });
  let queue: Queue | undefined;
  let redis: RedisClient | undefined;
  try {
    const { db } = rt;
    const dify = await difyIdentity(db);
    const target = redisTargetOf(config);
    if (opts.followRedis && target) {
      redis = redisConnection(target, 'producer');
      queue = provisionQueue(redis, config.queuePrefix, dify.queueName);
    }
    const census = queue;
    const workers: WorkerCensus = census ? () => workersServing(census) : async () => 'unreachable' as const;
    return await fn({
      batch: (id) => ({
        id,
        progress: (intervalMs = 1000, onUnreachable) => batchProgress(db, id, intervalMs, workers, onUnreachable),
        async status() {
          const s = await getBatchStatus(db, id, 'unreachable');
          if (!s) throw new BatchNotFoundError(id);
          return s;
        },
        async *reportCsv(opts) {
          yield* csvReport(allReportRows(db, id), { ...opts, kind: await batchKind(db, id) });
        },
        async *reportJson() {
          yield* jsonReport(allReportRows(db, id), { kind: await batchKind(db, id) });
        },
      }),
      batches: (limit) => listBatches(db, limit, 'unreachable'),
      workers,
      difySchema: async () => describeSchema(await probeDifySchema(db)),
      queue: { name: dify.queueName, database: dify.database },
    });
  } finally {
    await queue?.close().catch(() => undefined);
    redis?.disconnect();
    await rt.close();
  }
}
