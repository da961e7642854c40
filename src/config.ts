// Configuration is read once from the environment, validated, and passed down: nothing else in
// dify-provision reads process.env.
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import {
  databaseUrlFromDify,
  redisFromDifyEnv,
  redisUrlFromDifyEnv,
  storageFromDify,
  withDifyEnvFile,
  type StorageSettings,
} from './dify-env.js';
import { ConfigError } from './errors.js';

const ownerSpec = z
  .string()
  .regex(/^\d+:\d+$/, 'must be "uid:gid" (numbers)')
  .transform((s) => {
    const [uid, gid] = s.split(':').map(Number) as [number, number];
    return { uid, gid };
  });

const hostPort = z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) });
const tlsSchema = z.object({ caFile: z.string().optional() }).optional();

/** Where Redis is: one node (a URL), a Redis Cluster, or a Sentinel-managed master. */
export const RedisTargetSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('single'), url: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL'), tls: tlsSchema }),
  z.object({
    kind: z.literal('cluster'),
    nodes: z.array(hostPort).min(1, 'names no node'),
    username: z.string().optional(),
    password: z.string().optional(),
    tls: tlsSchema,
  }),
  z.object({
    kind: z.literal('sentinel'),
    sentinels: z.array(hostPort).min(1, 'names no sentinel'),
    name: z.string().min(1, 'needs REDIS_SENTINEL_SERVICE_NAME'),
    sentinelUsername: z.string().optional(),
    sentinelPassword: z.string().optional(),
    username: z.string().optional(),
    password: z.string().optional(),
    db: z.number().int().min(0).default(0),
    tls: tlsSchema,
  }),
]);
export type RedisTarget = z.infer<typeof RedisTargetSchema>;

export const ConfigSchema = z.object({
  /** Redis Cluster or Sentinel (Dify's own REDIS_* variables); a plain node is `redisUrl`. */
  redis: RedisTargetSchema.optional(),
  redisUrl: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .optional(),
  databaseUrl: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  /** The folder that contains Dify's `privkeys/` (Dify's storage root). */
  storageDir: z.string().min(1).optional(),
  /** Where keys go when it is not a local folder (Dify's STORAGE_TYPE and its settings). */
  storage: z.custom<StorageSettings>().optional(),
  /** BullMQ key prefix; the braces are a Redis Cluster hash tag so one queue lives on one slot. */
  queuePrefix: z.string().min(1).default('{dify-provision}'),
  /** Owner of deployed key files; default: the owner of the storage folder. */
  keyFileOwner: ownerSpec.optional(),
  /** Dify's HOSTED_POOL_CREDITS: the trial credit pool of a new workspace. */
  trialCredits: z.coerce.number().int().min(0).default(200),
  /** PostgreSQL connections a worker process may hold, whatever its concurrency. */
  dbPoolMax: z.coerce.number().int().min(2).max(100).default(10),
  /** Jobs in flight in a worker process started without --concurrency. */
  workerConcurrency: z.coerce
    .number()
    .int()
    .min(1)
    .default(Math.max(8, availableParallelism() * 4)),
  /** CA bundle for rediss:// (REDIS_SSL_CA_CERTS, as Dify names it). */
  redisCaFile: z.string().min(1).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** The dashboard's token; generated per run when unset. */
  dashboardToken: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Print stack traces of unexpected errors. */
  debug: z.boolean().default(false),
});
export type Config = z.infer<typeof ConfigSchema>;

const ENV_NAMES = {
  redisUrl: 'REDIS_URL',
  redisCaFile: 'REDIS_SSL_CA_CERTS',
  databaseUrl: 'DATABASE_URL',
  storageDir: 'DIFY_STORAGE_DIR',
  queuePrefix: 'DIFY_PROVISION_QUEUE_PREFIX',
  keyFileOwner: 'KEY_FILE_OWNER',
  trialCredits: 'HOSTED_POOL_CREDITS',
  dbPoolMax: 'DIFY_PROVISION_DB_POOL_MAX',
  workerConcurrency: 'WORKER_CONCURRENCY',
  logLevel: 'LOG_LEVEL',
  dashboardToken: 'DASHBOARD_TOKEN',
} as const;

export function loadConfig(processEnv: NodeJS.ProcessEnv = process.env): Config {
  const env = withDifyEnvFile(processEnv);
  const raw: Record<string, unknown> = Object.fromEntries(Object.entries(ENV_NAMES).map(([k, name]) => [k, env[name] || undefined]));
  raw.debug = Boolean(env.DEBUG);
  raw.redis = redisFromDifyEnv(env);
  raw.databaseUrl = databaseUrlFromDify(env);
  const storage = storageFromDify(env);
  if (storage?.kind === 'local') raw.storageDir = storage.root;
  else raw.storage = storage;
  // Dify's REDIS_KEY_PREFIX: our keys sit under it too (an ACL user limited to it still works).
  if (!raw.queuePrefix && env.REDIS_KEY_PREFIX) raw.queuePrefix = `${env.REDIS_KEY_PREFIX}:{dify-provision}`;
  if (!raw.redisUrl && env.REDIS_HOST && !raw.redis) raw.redisUrl = redisUrlFromDifyEnv(env);
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (i) => `${ENV_NAMES[String(i.path[0]) as keyof typeof ENV_NAMES] ?? i.path.join('.')}: ${i.message}`,
    );
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return parsed.data;
}

/** Where keys go, whichever way it was given. */
export function storageOf(config: Config): StorageSettings | undefined {
  return config.storage ?? (config.storageDir ? { kind: 'local', root: config.storageDir } : undefined);
}

/** The Redis a config names, whichever way it was given. */
export function redisTargetOf(config: Config): RedisTarget | undefined {
  return (
    config.redis ??
    (config.redisUrl
      ? { kind: 'single', url: config.redisUrl, tls: config.redisCaFile ? { caFile: config.redisCaFile } : undefined }
      : undefined)
  );
}

type Needed = 'redisUrl' | 'databaseUrl' | 'storageDir';

/** Narrows the config to one that has the settings a command needs, or says which are missing. */
export function requireConfig<K extends Needed>(config: Config, ...keys: K[]): Config & Required<Pick<Config, K>> {
  const missing = keys.filter((k) => (k === 'redisUrl' ? !redisTargetOf(config) : k === 'storageDir' ? !storageOf(config) : !config[k]));
  if (missing.length > 0) {
    throw new ConfigError(
      `missing configuration: set ${missing.map((k) => (k === 'redisUrl' ? "REDIS_URL (or Dify's REDIS_HOST, REDIS_USE_CLUSTERS or REDIS_USE_SENTINEL settings)" : k === 'storageDir' ? "DIFY_STORAGE_DIR (or Dify's STORAGE_TYPE and its settings)" : ENV_NAMES[k])).join(', ')}`,
    );
  }
  return config as Config & Required<Pick<Config, K>>;
}
