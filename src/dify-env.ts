// Dify's own settings as our configuration: an operator points us at Dify's docker/.env (or
// exports its variables) and one flag configures the database, Redis, the key storage and the
// trial credits. Our own variables (DATABASE_URL, REDIS_URL, DIFY_STORAGE_DIR, …) win.
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { parseEnv } from 'node:util';
import type { RedisTarget } from './config.js';
import { ConfigError } from './errors.js';
import type { AzureBlobSettings } from './storage/azure-blob.js';
import type { S3Settings } from './storage/s3.js';

/** The variables of Dify's .env file under the process's own (which win). */
export function withDifyEnvFile(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const file = env.DIFY_ENV_FILE;
  if (!file) return env;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `invalid configuration:\n  DIFY_ENV_FILE / --dify-env: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`,
    );
  }
  return { ...parseEnv(text), ...env };
}

/** Dify's DB_* settings as a URL (when DATABASE_URL is not set). */
export function databaseUrlFromDify(env: NodeJS.ProcessEnv): string | undefined {
  if (env.DATABASE_URL || !env.DB_HOST) return env.DATABASE_URL || undefined;
  const url = new URL(`postgres://${env.DB_HOST}:${env.DB_PORT || 5432}`);
  url.username = env.DB_USERNAME || 'postgres';
  if (env.DB_PASSWORD) url.password = env.DB_PASSWORD;
  url.pathname = `/${env.DB_DATABASE || 'dify'}`;
  return url.toString();
}

export type StorageSettings =
  | { kind: 'local'; root: string }
  /** `root`: Dify's storage root inside the bucket (opendal's OPENDAL_S3_ROOT). */
  | ({ kind: 's3'; root: string } & S3Settings)
  | ({ kind: 'azure-blob' } & AzureBlobSettings);

export const SUPPORTED_STORAGE = 'opendal (fs, s3), local, s3, oci-storage, azure-blob';

const yes = (v: string | undefined) => /^(1|true|yes|on)$/i.test(v ?? '');
const need = (env: NodeJS.ProcessEnv, name: string, type: string): string => {
  const v = env[name];
  if (!v) throw new ConfigError(`invalid configuration:\n  ${name}: required for STORAGE_TYPE=${type}`);
  return v;
};
const localRoot = (path: string | undefined, name: string): StorageSettings => {
  // A relative path is relative to Dify's api folder, which is not ours to guess.
  if (!path || !isAbsolute(path)) {
    throw new ConfigError(
      `invalid configuration:\n  ${name}: "${path ?? 'storage'}" is relative to Dify's api folder; set DIFY_STORAGE_DIR to where that folder is on this machine`,
    );
  }
  return { kind: 'local', root: path };
};

/** Where tenant keys go, from DIFY_STORAGE_DIR or Dify's STORAGE_TYPE and its settings. */
export function storageFromDify(env: NodeJS.ProcessEnv): StorageSettings | undefined {
  if (env.DIFY_STORAGE_DIR) return { kind: 'local', root: env.DIFY_STORAGE_DIR };
  if (env.KEY_PROVIDER_TYPE && env.KEY_PROVIDER_TYPE !== 'local') {
    throw new ConfigError(
      `invalid configuration:\n  KEY_PROVIDER_TYPE: "${env.KEY_PROVIDER_TYPE}" keeps tenant keys in a key vault; dify-provision supports "local" only`,
    );
  }
  const type = env.STORAGE_TYPE;
  if (!type) return undefined;
  switch (type) {
    case 'opendal': {
      const scheme = env.OPENDAL_SCHEME || 'fs';
      if (scheme === 'fs') return localRoot(env.OPENDAL_FS_ROOT, 'OPENDAL_FS_ROOT');
      if (scheme === 's3') {
        return {
          kind: 's3',
          bucket: need(env, 'OPENDAL_S3_BUCKET', 'opendal (s3)'),
          endpoint: env.OPENDAL_S3_ENDPOINT,
          region: env.OPENDAL_S3_REGION,
          accessKeyId: env.OPENDAL_S3_ACCESS_KEY_ID,
          secretAccessKey: env.OPENDAL_S3_SECRET_ACCESS_KEY,
          forcePathStyle: !yes(env.OPENDAL_S3_ENABLE_VIRTUAL_HOST_STYLE),
          root: env.OPENDAL_S3_ROOT || '/',
        };
      }
      throw new ConfigError(
        `invalid configuration:\n  OPENDAL_SCHEME: "${scheme}" is not supported (fs, s3 are): keys must go where Dify reads them`,
      );
    }
    case 'local':
      return localRoot(env.STORAGE_LOCAL_PATH, 'STORAGE_LOCAL_PATH');
    case 's3': {
      const style = env.S3_ADDRESS_STYLE || 'auto';
      const custom = Boolean(env.S3_ENDPOINT) && !/amazonaws\.com/.test(env.S3_ENDPOINT ?? '');
      return {
        kind: 's3',
        bucket: need(env, 'S3_BUCKET_NAME', 's3'),
        endpoint: env.S3_ENDPOINT,
        region: env.S3_REGION,
        ...(yes(env.S3_USE_AWS_MANAGED_IAM) ? {} : { accessKeyId: env.S3_ACCESS_KEY, secretAccessKey: env.S3_SECRET_KEY }),
        forcePathStyle: style === 'path' || (style === 'auto' && custom),
        root: '',
      };
    }
    case 'oci-storage':
      return {
        kind: 's3',
        bucket: need(env, 'OCI_BUCKET_NAME', 'oci-storage'),
        endpoint: need(env, 'OCI_ENDPOINT', 'oci-storage'),
        region: env.OCI_REGION,
        accessKeyId: env.OCI_ACCESS_KEY,
        secretAccessKey: env.OCI_SECRET_KEY,
        forcePathStyle: true,
        root: '',
      };
    case 'azure-blob':
      return {
        kind: 'azure-blob',
        accountName: need(env, 'AZURE_BLOB_ACCOUNT_NAME', 'azure-blob'),
        accountKey: need(env, 'AZURE_BLOB_ACCOUNT_KEY', 'azure-blob'),
        container: need(env, 'AZURE_BLOB_CONTAINER_NAME', 'azure-blob'),
        accountUrl: env.AZURE_BLOB_ACCOUNT_URL,
      };
    default:
      throw new ConfigError(
        `invalid configuration:\n  STORAGE_TYPE: "${type}" is not supported yet (${SUPPORTED_STORAGE} are); ` +
          `dify-provision never writes a key where Dify would not look for it`,
      );
  }
}

const tlsOf = (env: NodeJS.ProcessEnv) => (yes(env.REDIS_USE_SSL) ? { caFile: env.REDIS_SSL_CA_CERTS || undefined } : undefined);

/** "h1:p1,h2:p2" (Dify's REDIS_CLUSTERS / REDIS_SENTINELS) → host/port pairs. */
function nodesOf(list: string | undefined, name: string): { host: string; port: number }[] {
  return (list ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean)
    .map((n) => {
      const at = n.lastIndexOf(':');
      const port = Number(n.slice(at + 1));
      if (at < 1 || !Number.isInteger(port)) throw new ConfigError(`invalid configuration:\n  ${name}: "${n}" is not host:port`);
      return { host: n.slice(0, at), port };
    });
}

/** Dify's docker .env names for Redis Cluster and Sentinel (REDIS_URL, ours, wins over them). */
export function redisFromDifyEnv(env: NodeJS.ProcessEnv): RedisTarget | undefined {
  if (env.REDIS_URL) return undefined;
  if (yes(env.REDIS_USE_CLUSTERS)) {
    return {
      kind: 'cluster',
      nodes: nodesOf(env.REDIS_CLUSTERS, 'REDIS_CLUSTERS'),
      ...(env.REDIS_CLUSTERS_USERNAME ? { username: env.REDIS_CLUSTERS_USERNAME } : {}),
      ...(env.REDIS_CLUSTERS_PASSWORD ? { password: env.REDIS_CLUSTERS_PASSWORD } : {}),
      tls: tlsOf(env),
    };
  }
  if (yes(env.REDIS_USE_SENTINEL)) {
    return {
      kind: 'sentinel',
      sentinels: nodesOf(env.REDIS_SENTINELS, 'REDIS_SENTINELS'),
      name: env.REDIS_SENTINEL_SERVICE_NAME ?? '',
      ...(env.REDIS_SENTINEL_USERNAME ? { sentinelUsername: env.REDIS_SENTINEL_USERNAME } : {}),
      ...(env.REDIS_SENTINEL_PASSWORD ? { sentinelPassword: env.REDIS_SENTINEL_PASSWORD } : {}),
      ...(env.REDIS_USERNAME ? { username: env.REDIS_USERNAME } : {}),
      ...(env.REDIS_PASSWORD ? { password: env.REDIS_PASSWORD } : {}),
      db: Number(env.REDIS_DB ?? 0),
      tls: tlsOf(env),
    };
  }
  return undefined;
}

/** Dify's REDIS_HOST/PORT/USERNAME/PASSWORD/DB/USE_SSL as one URL. */
export function redisUrlFromDifyEnv(env: NodeJS.ProcessEnv): string {
  const url = new URL(`${yes(env.REDIS_USE_SSL) ? 'rediss' : 'redis'}://${env.REDIS_HOST}:${env.REDIS_PORT || 6379}`);
  if (env.REDIS_USERNAME) url.username = env.REDIS_USERNAME;
  if (env.REDIS_PASSWORD) url.password = env.REDIS_PASSWORD;
  url.pathname = `/${env.REDIS_DB || 0}`;
  return url.toString();
}
