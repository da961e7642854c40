// The process's connections, built once from the validated config: the PostgreSQL pool, the
// Redis connection and queue, the logger and the key storage. The CLI, the worker, the dashboard,
// the demo and the library all take a Runtime; nothing else constructs connections.
import type { Queue } from 'bullmq';
import { checkComposeHost } from '../config/dify-env.js';
import { databaseOf, redisTargetOf, requireConfig, storageOf, type Config } from '../config/config.js';
import type { StorageSettings } from '../config/dify-env.js';
import { objectKeyStorage, type ObjectStore } from '../storage/object-store.js';
import { probeDifySchema, type DifySchema } from '../dify/schema-probe.js';
import { checkDatabase, createPool, type Db } from '../db/pool.js';
import { createLogger, type Logger } from '../log/logger.js';
import { checkRedis, provisionQueue, redisConnection, type RedisClient } from '../queue/connection.js';
import { watchServer, type ServerWatch } from '../queue/server-watch.js';
import { difyIdentity, type DifyIdentity } from '../store/instance.js';
import type { KeyStorage } from '../storage/key-storage.js';
import { localKeyStorage } from '../storage/local.js';
import { migrate } from '../store/schema.js';

export interface Runtime {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Db;
  /** Closes every connection this runtime opened. */
  close(): Promise<void>;
}

export interface QueueRuntime extends Runtime {
  readonly redis: RedisClient;
  readonly queue: Queue;
  /** Which Dify release band the database is. */
  readonly schema: DifySchema;
  /** Which Dify database this is; the queue is this Dify's own. */
  readonly dify: DifyIdentity;
  /** The PostgreSQL server behind it, registered with the queue (a copy sharing the identity shows here). */
  readonly server: ServerWatch;
}

export interface RuntimeOptions {
  /** Create or upgrade our own schema (not for read-only commands). Default true. */
  migrate?: boolean;
  /** PostgreSQL connections; default: the config's dbPoolMax for workers, 4 for the rest. */
  poolMax?: number;
  logger?: Logger;
  /** How often this process refreshes its server in the queue's registry, and how long an entry lives (tests shorten them). */
  watch?: { intervalMs?: number; liveMs?: number };
  /** A producer's bound on a Redis command left unanswered (PRODUCER_COMMAND_TIMEOUT_MS; tests shorten it). */
  redisCommandTimeoutMs?: number;
}

/** PostgreSQL only (doctor, dry-run plans). */
export async function openDbRuntime(config: Config, opts: RuntimeOptions = {}): Promise<Runtime> {
  const cfg = requireConfig(config, 'databaseUrl');
  if (!cfg.databaseUrl) await checkComposeHost(cfg.composeHosts, 'DB_HOST');
  const db = createPool(databaseOf(cfg)!, opts.poolMax ?? 4);
  try {
    await checkDatabase(db, databaseOf(cfg)!);
    if (opts.migrate ?? true) await migrate(db);
  } catch (err) {
    await db.end();
    throw err;
  }
  return { config: cfg, logger: opts.logger ?? createLogger(cfg.logLevel), db, close: () => db.end() };
}

/** How long closing waits for Redis to answer before dropping the connection. */
const CLOSE_WAIT_MS = 3000;

/**
 * PostgreSQL and this Dify's queue. The database must be a Dify we know (nothing of ours is
 * created in any other); the queue is named after the database's identity. Producers (ingest,
 * the dashboard, the library) fail fast when Redis does not answer; a worker's connection never
 * gives up a command.
 */
export async function openQueueRuntime(
  config: Config,
  opts: RuntimeOptions & { role?: 'producer' | 'worker' } = {},
): Promise<QueueRuntime> {
  const cfg = requireConfig(config, 'redisUrl', 'databaseUrl');
  const role = opts.role ?? 'producer';
  const base = await openDbRuntime(cfg, { ...opts, migrate: false, poolMax: opts.poolMax ?? (role === 'worker' ? cfg.dbPoolMax : 4) });
  const target = redisTargetOf(cfg)!;
  let redis: RedisClient | undefined;
  let schema: DifySchema;
  let dify: DifyIdentity;
  let server: ServerWatch;
  try {
    schema = await probeDifySchema(base.db);
    await migrate(base.db);
    dify = await difyIdentity(base.db);
    if (target.kind === 'node') await checkComposeHost(cfg.composeHosts, 'REDIS_HOST');
    redis = redisConnection(target, role, opts.redisCommandTimeoutMs);
    if (role === 'producer') await checkRedis(redis, target);
    server = await watchServer(base.db, redis, {
      prefix: cfg.queuePrefix,
      queueName: dify.queueName,
      instance: dify.id,
      database: dify.database,
      ...opts.watch,
      logger: base.logger,
    });
  } catch (err) {
    redis?.disconnect();
    await base.close();
    throw err;
  }
  const queue = provisionQueue(redis, cfg.queuePrefix, dify.queueName);
  const client = redis;
  server.start();
  return {
    ...base,
    redis: client,
    queue,
    schema,
    dify,
    server,
    async close() {
      server.stop();
      // Redis may have stopped answering (wait, status while it is down): closing does not wait
      // for it past a few seconds; the connection is dropped instead.
      let timer: NodeJS.Timeout | undefined;
      const closed = await Promise.race([
        (async () => {
          await queue.close();
          await client.quit();
          return true;
        })().catch(() => true),
        new Promise<false>((r) => (timer = setTimeout(() => r(false), CLOSE_WAIT_MS))),
      ]);
      clearTimeout(timer);
      if (!closed) client.disconnect();
      await base.close();
    },
  };
}

type ObjectStorage = Exclude<StorageSettings, { kind: 'local' }>;

/** The object store keys live in (undefined for a local folder), and the prefix Dify's root puts before every key. */
export async function openObjectStore(config: Config): Promise<{ store: ObjectStore; prefix: string } | undefined> {
  const settings = storageOf(requireConfig(config, 'storageDir'))!;
  return settings.kind === 'local' ? undefined : objectStoreOf(settings);
}

/** The cloud SDKs are loaded only by a process that uses them (they cost every command a second). */
async function objectStoreOf(settings: ObjectStorage): Promise<{ store: ObjectStore; prefix: string }> {
  switch (settings.kind) {
    case 's3':
      return { store: (await import('../storage/s3.js')).s3Store(settings), prefix: settings.prefix };
    case 'gcs':
      return { store: (await import('../storage/gcs.js')).gcsStore(settings), prefix: '' };
    case 'supabase':
      return { store: (await import('../storage/supabase.js')).supabaseStore(settings), prefix: '' };
    default:
      return { store: (await import('../storage/azure-blob.js')).azureBlobStore(settings), prefix: '' };
  }
}

/**
 * Dify's key storage, as the config names it (a local folder or an object store), checked with a
 * probe write unless `probe` is false (doctor only reads and removes, and must work with
 * credentials that cannot write). `logger` hears, once, if a local storage turns out slow
 * (storage/fs-calls.ts).
 */
export async function openKeyStorage(config: Config, opts: { probe?: boolean; logger?: Logger } = {}): Promise<KeyStorage> {
  const settings = storageOf(requireConfig(config, 'storageDir'))!;
  let storage: KeyStorage;
  if (settings.kind === 'local') {
    const logger = opts.logger;
    storage = await localKeyStorage({
      root: settings.root,
      ...(config.keyFileOwner ? { owner: config.keyFileOwner } : {}),
      ...(logger ? { warn: (message: string) => logger.warn(message) } : {}),
    });
  } else {
    const object = await objectStoreOf(settings);
    storage = objectKeyStorage(object.store, object.prefix);
  }
  if (opts.probe ?? true) await storage.check();
  return storage;
}
