// Configuration is read once from the environment, validated, and passed down: nothing else in
// dify-provision reads process.env.
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import {
  composeHostsOf,
  databaseFromDify,
  difySettings,
  invitationsFromDify,
  isDifyName,
  lookedIn,
  redisFromDify,
  smtpFromDify,
  storageFromDify,
  yes,
  type ComposeHost,
  type DbFields,
  type SmtpSettings,
  type InvitationSettings,
  type StorageSettings,
} from './dify-env.js';
import { ConfigError } from '../common/errors.js';
import { RedisTargetSchema, type RedisTarget } from './redis-target.js';

export { RedisTargetSchema, type RedisTarget };
import { defaultPluginsFromDify, type DefaultPluginSettings } from './dify-celery.js';

const ownerSpec = z
  .string()
  .regex(/^\d+:\d+$/, 'must be "uid:gid" (numbers)')
  .transform((s) => {
    const [uid, gid] = s.split(':').map(Number) as [number, number];
    return { uid, gid };
  });

export const ConfigSchema = z.object({
  /** Redis from Dify's REDIS_* variables (one node, a Cluster or Sentinel), as fields; REDIS_URL is `redisUrl`. */
  redis: RedisTargetSchema.optional(),
  redisUrl: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .optional(),
  databaseUrl: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  /** PostgreSQL from Dify's DB_* variables, as fields (no part of them is parsed as a URL). */
  database: z.custom<DbFields>().optional(),
  /** The folder that contains Dify's `privkeys/` (Dify's storage root). */
  storageDir: z.string().min(1).optional(),
  /** Where keys go when it is not a local folder (Dify's STORAGE_TYPE and its settings). */
  storage: z.custom<StorageSettings>().optional(),
  /** Why the key storage cannot be used: raised only by the commands that touch keys. */
  storageProblem: z.string().optional(),
  /** Dify's invitation settings (its own Redis, REDIS_KEY_PREFIX, INVITE_EXPIRY_HOURS, CONSOLE_WEB_URL): --invite. */
  invitations: z.custom<InvitationSettings>().optional(),
  /** Why they cannot be used (a malformed setting): raised only when invitations are asked for. */
  invitationsProblem: z.string().optional(),
  /**
   * Where Dify keeps its tokens (its Redis, REDIS_KEY_PREFIX), read apart from the other
   * invitation settings: a removal deletes a person's tokens with these alone (difyTokenStoreOf).
   */
  difyTokenStore: z.custom<Pick<InvitationSettings, 'redis' | 'keyPrefix'>>().optional(),
  /** How the key storage was found, for the commands that use it to print. */
  /** Dify's default-plugin task after create_tenant (NEW_USER_DEFAULT_PLUGIN_IDS, its Celery broker); absent: Dify queues none. */
  defaultPlugins: z.custom<DefaultPluginSettings>().optional(),
  /** Why Dify's default-plugin task cannot be queued: raised by the worker. */
  defaultPluginsProblem: z.string().optional(),
  storageNote: z.string().optional(),
  /** Dify's SMTP mail (MAIL_TYPE=smtp, SMTP_*), for --send-invites. */
  mail: z.custom<SmtpSettings>().optional(),
  /** Why Dify's mail settings cannot send invitations: raised only when invitations are to be mailed. */
  mailProblem: z.string().optional(),
  /** DB_HOST / REDIS_HOST values that name services of Dify's docker-compose.yaml (hinted when they don't resolve). */
  composeHosts: z.custom<ComposeHost[]>().optional(),
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
  /** Read-only dashboard/API tokens (status and reports), comma-separated in the environment. */
  dashboardReadTokens: z
    .preprocess(
      (v) =>
        typeof v === 'string'
          ? v
              .split(',')
              .map((t) => t.trim())
              .filter(Boolean)
          : v,
      z.array(z.string().min(16, 'each token must be at least 16 characters')),
    )
    .optional(),
  /** Where Dify's settings were looked for (our environment, the files read), for "missing" errors. */
  settingsLookedIn: z.string().optional(),
  /** Print stack traces of unexpected errors. */
  debug: z.boolean().default(false),
});
export type Config = z.infer<typeof ConfigSchema>;

/**
 * Each setting's variable. Ours have names Dify does not use (LOG_LEVEL and DEBUG are Dify's, so
 * ours are DIFY_PROVISION_LOG_LEVEL and DIFY_PROVISION_DEBUG) and come from our environment only;
 * HOSTED_POOL_CREDITS and REDIS_SSL_CA_CERTS are Dify's, read from its .env too.
 */
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
  logLevel: 'DIFY_PROVISION_LOG_LEVEL',
  dashboardToken: 'DASHBOARD_TOKEN',
  dashboardReadTokens: 'DASHBOARD_READ_TOKENS',
} as const;

export function loadConfig(processEnv: NodeJS.ProcessEnv = process.env): Config {
  const dify = difySettings(processEnv);
  const raw: Record<string, unknown> = Object.fromEntries(
    Object.entries(ENV_NAMES).map(([k, name]) => [k, (isDifyName(name) ? dify.get(name) : processEnv[name]) || undefined]),
  );
  if (typeof raw.logLevel === 'string') raw.logLevel = raw.logLevel.toLowerCase();
  raw.debug = yes(processEnv.DIFY_PROVISION_DEBUG);
  raw.settingsLookedIn = lookedIn(dify);
  if (!raw.redisUrl) raw.redis = redisFromDify(dify);
  if (!raw.databaseUrl) raw.database = databaseFromDify(dify);
  // Storage is resolved here but its errors are raised only by the commands that touch keys:
  // Dify's stock OPENDAL_FS_ROOT=storage must not stop `status` or `ingest`.
  try {
    const storage = storageFromDify(dify, processEnv.DIFY_STORAGE_DIR || undefined);
    if (storage?.settings.kind === 'local') raw.storageDir = storage.settings.root;
    else raw.storage = storage?.settings;
    raw.storageNote = storage?.note;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    raw.storageDir = undefined;
    raw.storageProblem = err.message;
  }
  // Dify's default plugins: a broker we cannot use stops the worker, not `status` or `ingest`.
  try {
    raw.defaultPlugins = defaultPluginsFromDify(dify);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    raw.defaultPluginsProblem = err.message;
  }
  // Mail likewise: Dify's stock settings say MAIL_TYPE=resend, which matters only to --send-invites.
  try {
    raw.mail = smtpFromDify(dify);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    raw.mailProblem = err.message;
  }
  // Dify's invitation settings, read whatever our queue uses; raised only by --invite.
  try {
    raw.invitations = invitationsFromDify(dify);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    raw.invitationsProblem = err.message;
    // A malformed CONSOLE_WEB_URL or INVITE_EXPIRY_HOURS does not keep a removal from revoking.
    try {
      const redis = redisFromDify(dify);
      if (redis) raw.difyTokenStore = { redis, keyPrefix: (dify.get('REDIS_KEY_PREFIX') ?? '').trim() };
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
    }
  }
  const composeHosts = composeHostsOf(dify);
  if (composeHosts.length > 0) raw.composeHosts = composeHosts;
  // Dify's REDIS_KEY_PREFIX: our keys sit under it too (an ACL user limited to it still works).
  const redisPrefix = dify.get('REDIS_KEY_PREFIX');
  if (!raw.queuePrefix && redisPrefix) raw.queuePrefix = `${redisPrefix}:{dify-provision}`;
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const name = ENV_NAMES[String(i.path[0]) as keyof typeof ENV_NAMES];
      return `${name ? dify.label(name) : i.path.join('.')}: ${i.message}`;
    });
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

/** The PostgreSQL a config names: DATABASE_URL, or Dify's DB_* as fields. */
export function databaseOf(config: Config): string | DbFields | undefined {
  return config.databaseUrl ?? config.database;
}

/** Dify's SMTP settings, for the commands that mail invitations, or the reason they cannot. */
export function requireMail(config: Config): SmtpSettings {
  if (!config.mail) throw new ConfigError(config.mailProblem ?? 'invalid configuration:\n  MAIL_TYPE: not set');
  return config.mail;
}

type Needed = 'redisUrl' | 'databaseUrl' | 'storageDir';

/** Checks the config has the settings a command needs, or says which are missing. */
export function requireConfig(config: Config, ...keys: Needed[]): Config {
  if (keys.includes('storageDir') && config.storageProblem) throw new ConfigError(config.storageProblem);
  const missing = keys.filter((k) =>
    k === 'redisUrl' ? !redisTargetOf(config) : k === 'storageDir' ? !storageOf(config) : !databaseOf(config),
  );
  if (missing.length > 0) {
    throw new ConfigError(
      `missing configuration: set ${missing.map((k) => (k === 'redisUrl' ? "REDIS_URL (or Dify's REDIS_HOST, REDIS_USE_CLUSTERS or REDIS_USE_SENTINEL settings)" : k === 'storageDir' ? "DIFY_STORAGE_DIR (or Dify's STORAGE_TYPE and its settings)" : "DATABASE_URL (or Dify's DB_HOST and DB_* settings)")).join(', ')}${config.settingsLookedIn ? `; looked in ${config.settingsLookedIn}` : ''}`,
    );
  }
  return config;
}

/**
 * Where Dify keeps its invitation tokens (its own Redis and REDIS_KEY_PREFIX): all that deleting
 * a removed person's tokens needs (no console address, no mail); undefined with the reason.
 */
export function difyTokenStoreOf(
  config: Config,
): { store: { redis: RedisTarget; keyPrefix: string; expiryHours?: number } } | { problem: string } {
  const inv = config.invitations?.redis ? config.invitations : config.difyTokenStore;
  if (inv?.redis) return { store: { ...inv, redis: inv.redis } };
  return {
    problem:
      config.invitationsProblem ??
      "Dify's own Redis is not configured (REDIS_HOST and REDIS_PORT/PASSWORD/DB, or REDIS_USE_SENTINEL or REDIS_USE_CLUSTERS with their settings: give --dify-env Dify's docker/.env); REDIS_URL is our queue's and is never taken for Dify's",
  };
}

/** The invitation options an ingest or an apply may ask for (the library's names). */
export interface InvitationAsk {
  invite?: boolean | undefined;
  invitePending?: boolean | undefined;
  sendInvites?: boolean | undefined;
}

/**
 * The one decision on invitation options, for the CLI, the HTTP API and the library alike, plans
 * (dry runs) and ingests: options asking for invitations this process's settings cannot honour
 * are refused, naming the setting (CONSOLE_WEB_URL, Dify's Redis; for send_invites, MAIL_TYPE and
 * the SMTP settings), before anything is read or recorded: what the workers would refuse.
 */
export function refuseUnusableInvitations(config: Config, ask: InvitationAsk): void {
  if (ask.invite || ask.invitePending || ask.sendInvites) requireInvitations(config);
  if (ask.sendInvites) requireMail(config);
}

/** Dify's invitation settings with its Redis and console address, or what to set (--invite). */
export function requireInvitations(config: Config): Required<Pick<InvitationSettings, 'redis' | 'consoleWebUrl'>> & InvitationSettings {
  if (config.invitationsProblem) throw new ConfigError(config.invitationsProblem);
  const inv = config.invitations;
  const missing = [
    ...(inv?.redis
      ? []
      : [
          "Dify's own Redis (REDIS_HOST and REDIS_PORT/PASSWORD/DB, or REDIS_USE_SENTINEL or REDIS_USE_CLUSTERS with their settings: give --dify-env Dify's docker/.env); REDIS_URL is our queue's and is never taken for Dify's",
        ]),
    ...(inv?.consoleWebUrl
      ? []
      : [
          "CONSOLE_WEB_URL: the address people open Dify's console at (e.g. https://dify.example.com); Dify's default is empty, which makes links without a host, so it is not guessed",
        ]),
  ];
  if (missing.length > 0 || !inv?.redis || !inv.consoleWebUrl)
    throw new ConfigError(`invitations (--invite) need Dify's settings:\n  ${missing.join('\n  ')}`);
  return { ...inv, redis: inv.redis, consoleWebUrl: inv.consoleWebUrl };
}
