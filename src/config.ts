// Configuration is read once from the environment, validated, and passed down: nothing else in
// dify-provision reads process.env.
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { ConfigError } from './errors.js';

const ownerSpec = z
  .string()
  .regex(/^\d+:\d+$/, 'must be "uid:gid" (numbers)')
  .transform((s) => {
    const [uid, gid] = s.split(':').map(Number) as [number, number];
    return { uid, gid };
  });

export const ConfigSchema = z.object({
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
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** The dashboard's token; generated per run when unset. */
  dashboardToken: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Print stack traces of unexpected errors. */
  debug: z.boolean().default(false),
});
export type Config = z.infer<typeof ConfigSchema>;

const ENV_NAMES = {
  redisUrl: 'REDIS_URL',
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

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, unknown> = Object.fromEntries(Object.entries(ENV_NAMES).map(([k, name]) => [k, env[name] || undefined]));
  raw.debug = Boolean(env.DEBUG);
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (i) => `${ENV_NAMES[String(i.path[0]) as keyof typeof ENV_NAMES] ?? i.path.join('.')}: ${i.message}`,
    );
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return parsed.data;
}

type Needed = 'redisUrl' | 'databaseUrl' | 'storageDir';

/** Narrows the config to one that has the settings a command needs, or says which are missing. */
export function requireConfig<K extends Needed>(config: Config, ...keys: K[]): Config & Required<Pick<Config, K>> {
  const missing = keys.filter((k) => !config[k]);
  if (missing.length > 0) {
    throw new ConfigError(`missing configuration: set ${missing.map((k) => ENV_NAMES[k]).join(', ')}`);
  }
  return config as Config & Required<Pick<Config, K>>;
}
