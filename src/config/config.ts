// Configuration is read once from the environment, validated, and passed down.
import { z } from 'zod';

const ownerSpec = z
  .string()
  .regex(/^\d+:\d+$/, 'must be "uid:gid" (numbers)')
  .transform((s) => {
    const [uid, gid] = s.split(':').map(Number) as [number, number];
    return { uid, gid };
  });

export const ConfigSchema = z.object({
  redisUrl: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
  databaseUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  /** The folder that contains Dify's `privkeys/` (Dify's storage root). */
  storageDir: z.string().min(1).optional(),
  /** BullMQ key prefix; the braces are a Redis Cluster hash tag so one queue lives on one slot. */
  queuePrefix: z.string().min(1).default('{dify-provision}'),
  /** Owner of deployed key files; default: the owner of the storage folder. */
  keyFileOwner: ownerSpec.optional(),
  /** Dify's HOSTED_POOL_CREDITS: the trial credit pool of a new workspace. */
  trialCredits: z.coerce.number().int().min(0).default(200),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type Config = z.infer<typeof ConfigSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = ConfigSchema.safeParse({
    redisUrl: env.REDIS_URL || undefined,
    databaseUrl: env.DATABASE_URL || undefined,
    storageDir: env.DIFY_STORAGE_DIR || undefined,
    queuePrefix: env.DIFY_PROVISION_QUEUE_PREFIX || undefined,
    keyFileOwner: env.KEY_FILE_OWNER || undefined,
    trialCredits: env.HOSTED_POOL_CREDITS || undefined,
    logLevel: env.LOG_LEVEL || undefined,
  });
  if (!parsed.success) {
    const names: Record<string, string> = {
      redisUrl: 'REDIS_URL',
      databaseUrl: 'DATABASE_URL',
      storageDir: 'DIFY_STORAGE_DIR',
      queuePrefix: 'DIFY_PROVISION_QUEUE_PREFIX',
      keyFileOwner: 'KEY_FILE_OWNER',
      trialCredits: 'HOSTED_POOL_CREDITS',
      logLevel: 'LOG_LEVEL',
    };
    const lines = parsed.error.issues.map((i) => `${names[String(i.path[0])] ?? i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return parsed.data;
}

type Needed = 'redisUrl' | 'databaseUrl' | 'storageDir';
const ENV_NAME: Record<Needed, string> = { redisUrl: 'REDIS_URL', databaseUrl: 'DATABASE_URL', storageDir: 'DIFY_STORAGE_DIR' };

/** Narrows the config to one that has the settings a command needs, or says which are missing. */
export function requireConfig<K extends Needed>(config: Config, ...keys: K[]): Config & Required<Pick<Config, K>> {
  const missing = keys.filter((k) => !config[k]);
  if (missing.length > 0) {
    throw new Error(`missing configuration: set ${missing.map((k) => ENV_NAME[k]).join(', ')}`);
  }
  return config as Config & Required<Pick<Config, K>>;
}
