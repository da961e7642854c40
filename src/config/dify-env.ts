// Dify's own settings as our configuration: an operator points us at Dify's docker/.env exactly as
// Dify ships it (or exports its variables) and one flag configures the database, Redis, the key
// storage and the trial credits. The file is read as docker compose reads it (compose-dotenv.ts),
// and only the Dify settings below are taken from it: Dify's LOG_LEVEL, DEBUG and the rest of its
// own process settings are never ours. Our own variables (DATABASE_URL, REDIS_URL,
// DIFY_STORAGE_DIR, …) come from our environment only, and win.
import { closeSync, constants, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, posix, resolve } from 'node:path';
import { DotenvSyntaxError, parseComposeDotenv } from './compose-dotenv.js';
import type { RedisTarget } from './redis-target.js';
import { lookup } from 'node:dns/promises';
import addressparser from 'nodemailer/lib/addressparser';
import { ConfigError, UnreachableError } from '../common/errors.js';
import type { DifySettings, ResolvedStorage, StorageSettings } from './dify-settings.js';
import type { GcsSettings } from '../storage/gcs.js';

export type { DifySettings, ResolvedStorage, StorageSettings };
import { rootPrefix } from '../storage/object-store.js';
import { VENDOR_S3_NAMES, VENDOR_S3_TYPES, vendorS3Storage, type VendorS3Type } from './dify-storage.js';
import { CELERY_NAMES } from './dify-celery.js';

/** Every Dify variable we read (from its .env or our environment); nothing else of Dify's. */
const DIFY_NAMES = new Set([
  'DB_TYPE',
  'DB_USERNAME',
  'DB_PASSWORD',
  'DB_HOST',
  'DB_PORT',
  'DB_DATABASE',
  'REDIS_HOST',
  'REDIS_PORT',
  'REDIS_USERNAME',
  'REDIS_PASSWORD',
  'REDIS_DB',
  'REDIS_USE_SSL',
  'REDIS_SSL_CA_CERTS',
  'REDIS_KEY_PREFIX',
  'REDIS_USE_CLUSTERS',
  'REDIS_CLUSTERS',
  'REDIS_CLUSTERS_USERNAME',
  'REDIS_CLUSTERS_PASSWORD',
  'REDIS_USE_SENTINEL',
  'REDIS_SENTINELS',
  'REDIS_SENTINEL_SERVICE_NAME',
  'REDIS_SENTINEL_USERNAME',
  'REDIS_SENTINEL_PASSWORD',
  'KEY_PROVIDER_TYPE',
  'HOSTED_POOL_CREDITS',
  'STORAGE_TYPE',
  'STORAGE_LOCAL_PATH',
  'OPENDAL_SCHEME',
  'OPENDAL_FS_ROOT',
  'OPENDAL_S3_BUCKET',
  'OPENDAL_S3_ENDPOINT',
  'OPENDAL_S3_REGION',
  'OPENDAL_S3_ACCESS_KEY_ID',
  'OPENDAL_S3_SECRET_ACCESS_KEY',
  'OPENDAL_S3_ENABLE_VIRTUAL_HOST_STYLE',
  'OPENDAL_S3_ROOT',
  'S3_ENDPOINT',
  'S3_REGION',
  'S3_BUCKET_NAME',
  'S3_ACCESS_KEY',
  'S3_SECRET_KEY',
  'S3_ADDRESS_STYLE',
  'S3_USE_AWS_MANAGED_IAM',
  'OCI_ENDPOINT',
  'OCI_REGION',
  'OCI_BUCKET_NAME',
  'OCI_ACCESS_KEY',
  'OCI_SECRET_KEY',
  'AZURE_BLOB_ACCOUNT_NAME',
  'AZURE_BLOB_ACCOUNT_KEY',
  'AZURE_BLOB_CONTAINER_NAME',
  'AZURE_BLOB_ACCOUNT_URL',
  'GOOGLE_STORAGE_BUCKET_NAME',
  'GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64',
  'SUPABASE_URL',
  'SUPABASE_API_KEY',
  'SUPABASE_BUCKET_NAME',
  ...VENDOR_S3_NAMES,
  ...CELERY_NAMES,
  'MAIL_TYPE',
  'MAIL_DEFAULT_SEND_FROM',
  'SMTP_SERVER',
  'SMTP_PORT',
  'SMTP_USERNAME',
  'SMTP_PASSWORD',
  'SMTP_USE_TLS',
  'SMTP_OPPORTUNISTIC_TLS',
  'SMTP_LOCAL_HOSTNAME',
  'INVITE_EXPIRY_HOURS',
  'CONSOLE_WEB_URL',
]);

/**
 * The optional files Dify's docker-compose.yaml gives its api service (`env_file:`, in its
 * order, `required: false`) before `./.env`, which comes last and wins. Only files that exist are read.
 */
const COMPOSE_ENV_FILES = [
  'envs/core-services/shared.env',
  'envs/core-services/api.env',
  'envs/security.env',
  'envs/databases/db-postgres.env',
  'envs/databases/db-mysql.env',
  'envs/databases/redis.env',
];

/** Service names of Dify's docker-compose.yaml that a DB_HOST or REDIS_HOST may name. */
const COMPOSE_SERVICES = new Set(['db_postgres', 'db', 'db_mysql', 'redis', 'oceanbase', 'seekdb', 'pgvector', 'api', 'worker']);

/** An env file is small: Dify's is about 15 KB; anything past this is not one. */
export const ENV_FILE_MAX_BYTES = 1024 * 1024;

const bad = (line: string) => new ConfigError(`invalid configuration:\n  ${line}`);

/**
 * Reads an env file safely: only a regular file (a FIFO or a device is refused before it is
 * read: opened non-blocking, checked with fstat) and at most ENV_FILE_MAX_BYTES.
 */
export function readEnvFile(file: string, what: string): string {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw bad(`${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw bad(`${what}: ${file} is not a regular file`);
    if (st.size > ENV_FILE_MAX_BYTES) throw bad(`${what}: ${file} is larger than ${ENV_FILE_MAX_BYTES} bytes: not an env file`);
    const buf = Buffer.alloc(ENV_FILE_MAX_BYTES + 1);
    let len = 0;
    for (;;) {
      const n = readSync(fd, buf, len, buf.length - len, null);
      if (n === 0) break;
      len += n;
      if (len > ENV_FILE_MAX_BYTES) throw bad(`${what}: ${file} is larger than ${ENV_FILE_MAX_BYTES} bytes: not an env file`);
    }
    return buf.subarray(0, len).toString('utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw bad(`${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
  } finally {
    closeSync(fd);
  }
}

function parseFile(file: string, lookup: (k: string) => string | undefined): Record<string, string> {
  const text = readEnvFile(file, 'DIFY_ENV_FILE / --dify-env');
  try {
    return parseComposeDotenv(text, lookup);
  } catch (err) {
    if (err instanceof DotenvSyntaxError)
      throw bad(`${err.variable ?? 'DIFY_ENV_FILE / --dify-env'} (in ${file}, line ${err.line}): ${err.reason}`);
    throw err;
  }
}

/**
 * Dify's settings from DIFY_ENV_FILE (read as docker compose gives them to Dify's api container:
 * the optional env files of Dify's compose layout, then the .env) under our process's own
 * environment, which wins.
 */
export function difySettings(processEnv: NodeJS.ProcessEnv): DifySettings {
  const file = processEnv.DIFY_ENV_FILE;
  const from = new Map<string, string>();
  const values: Record<string, string> = {};
  const files: string[] = [];
  let composeDir: string | undefined;
  if (file) {
    const path = resolve(file);
    const dir = dirname(path);
    const envLookup = (k: string) => processEnv[k];
    // compose: the project's .env is interpolated from the shell's environment; each env_file
    // then from the project's environment (the shell's, then the .env's).
    const project = parseFile(path, envLookup);
    const isCompose = basename(path) === '.env' && ['docker-compose.yaml', 'docker-compose.yml'].some((f) => existsSync(join(dir, f)));
    if (isCompose) composeDir = dir;
    const layers = [...(isCompose ? COMPOSE_ENV_FILES.map((f) => join(dir, f)).filter((f) => existsSync(f)) : []), path];
    for (const layer of layers) {
      const vars = layer === path ? project : parseFile(layer, (k) => processEnv[k] ?? project[k]);
      files.push(layer);
      for (const [k, v] of Object.entries(vars)) {
        if (!DIFY_NAMES.has(k)) continue;
        values[k] = v;
        from.set(k, layer);
      }
    }
  }
  const where = (name: string) => (processEnv[name] === undefined && from.has(name) ? ` (in ${from.get(name)})` : '');
  return {
    get: (name) => processEnv[name] ?? values[name],
    label: (name) => `${name}${where(name)}`,
    where,
    files,
    ...(composeDir ? { composeDir } : {}),
  };
}

/** Our own settings come from our environment only; Dify's names from the file, under our environment. */
export function isDifyName(name: string): boolean {
  return DIFY_NAMES.has(name);
}

/** PostgreSQL as separate fields: no part of a password or host is ever parsed as a URL. */
export interface DbFields {
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
  /** Without DB_PASSWORD: where it was looked for (for the error when the server asks for one). */
  passwordLookedIn?: string;
}

/** Where Dify's settings were looked for: our environment, and the files read (or none given). */
export function lookedIn(s: DifySettings): string {
  return s.files.length > 0
    ? `our environment and ${s.files.join(', ')}`
    : "our environment only: no --dify-env FILE (or DIFY_ENV_FILE) was given, so Dify's docker/.env was not read";
}

const portOf = (s: DifySettings, name: string, fallback: number): number => {
  const v = s.get(name);
  if (!v) return fallback;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 65535) throw bad(`${s.label(name)}: "${v}" is not a port (1-65535)`);
  return n;
};

/** Dify's DB_* settings as connection fields (when DATABASE_URL, ours, is not set). */
export function databaseFromDify(s: DifySettings): DbFields | undefined {
  const type = s.get('DB_TYPE');
  if (type && type !== 'postgresql')
    throw bad(`${s.label('DB_TYPE')}: "${type}": dify-provision writes Dify's PostgreSQL schema only (DB_TYPE=postgresql)`);
  const host = s.get('DB_HOST');
  if (!host) return undefined;
  const password = s.get('DB_PASSWORD');
  return {
    host,
    port: portOf(s, 'DB_PORT', 5432),
    user: s.get('DB_USERNAME') || 'postgres',
    ...(password ? { password } : { passwordLookedIn: lookedIn(s) }),
    database: s.get('DB_DATABASE') || 'dify',
  };
}

export const SUPPORTED_STORAGE = `opendal (fs, s3), local, s3, oci-storage, azure-blob, ${VENDOR_S3_TYPES.join(', ')}, google-storage, supabase`;

export const yes = (v: string | undefined) => /^(1|true|yes|on)$/i.test(v ?? '');

/** Where Dify's api container runs (its WORKDIR) and the folder compose mounts from the host. */
const CONTAINER_API_DIR = '/app/api';
const CONTAINER_STORAGE = '/app/api/storage';
const HOST_STORAGE = 'volumes/app/storage';

/** Where tenant keys go, from DIFY_STORAGE_DIR (ours) or Dify's STORAGE_TYPE and its settings. */
export function storageFromDify(s: DifySettings, ownStorageDir: string | undefined): ResolvedStorage | undefined {
  if (ownStorageDir) return { settings: { kind: 'local', root: ownStorageDir } };
  const need = (name: string, type: string): string => {
    const v = s.get(name);
    if (!v) throw bad(`${s.label(name)}: required for STORAGE_TYPE=${type}${s.where('STORAGE_TYPE')}`);
    return v;
  };
  const provider = s.get('KEY_PROVIDER_TYPE');
  if (provider && provider !== 'local') {
    throw bad(`${s.label('KEY_PROVIDER_TYPE')}: "${provider}" keeps tenant keys in a key vault; dify-provision supports "local" only`);
  }
  const localRoot = (name: string): ResolvedStorage => {
    const path = s.get(name) || 'storage';
    // Dify's api runs in /app/api: a relative root is relative to it. In Dify's docker-compose
    // install, /app/api/storage is ./volumes/app/storage beside the .env.
    const inContainer = posix.resolve(CONTAINER_API_DIR, path);
    if (s.composeDir && (inContainer === CONTAINER_STORAGE || inContainer.startsWith(`${CONTAINER_STORAGE}/`))) {
      const root = join(s.composeDir, HOST_STORAGE, posix.relative(CONTAINER_STORAGE, inContainer));
      return {
        settings: { kind: 'local', root },
        note: `key storage: ${root} (${name}=${path}${s.where(name)} is ${inContainer} in Dify's containers, which Dify's docker-compose.yaml mounts from ./${HOST_STORAGE}; DIFY_STORAGE_DIR overrides)`,
      };
    }
    if (!isAbsolute(path)) {
      throw bad(
        `${s.label(name)}: "${path}" is relative to Dify's api folder; set DIFY_STORAGE_DIR to where that folder is on this machine` +
          ` (in Dify's docker-compose install: docker/${HOST_STORAGE}, found by itself when --dify-env is Dify's docker/.env)`,
      );
    }
    return { settings: { kind: 'local', root: path } };
  };
  const type = s.get('STORAGE_TYPE');
  if (!type) return undefined;
  const settings = ((): StorageSettings | ResolvedStorage => {
    switch (type) {
      case 'opendal': {
        const scheme = s.get('OPENDAL_SCHEME') || 'fs';
        if (scheme === 'fs') return localRoot('OPENDAL_FS_ROOT');
        if (scheme === 's3') {
          return {
            kind: 's3',
            bucket: need('OPENDAL_S3_BUCKET', 'opendal (s3)'),
            endpoint: s.get('OPENDAL_S3_ENDPOINT'),
            region: s.get('OPENDAL_S3_REGION'),
            accessKeyId: s.get('OPENDAL_S3_ACCESS_KEY_ID'),
            secretAccessKey: s.get('OPENDAL_S3_SECRET_ACCESS_KEY'),
            forcePathStyle: !yes(s.get('OPENDAL_S3_ENABLE_VIRTUAL_HOST_STYLE')),
            prefix: rootPrefix(s.get('OPENDAL_S3_ROOT') || '/'),
          };
        }
        throw bad(`${s.label('OPENDAL_SCHEME')}: "${scheme}" is not supported (fs, s3 are): keys must go where Dify reads them`);
      }
      case 'local':
        return localRoot('STORAGE_LOCAL_PATH');
      case 's3': {
        const style = s.get('S3_ADDRESS_STYLE') || 'auto';
        const endpoint = s.get('S3_ENDPOINT');
        const custom = Boolean(endpoint) && !/amazonaws\.com/.test(endpoint ?? '');
        return {
          kind: 's3',
          bucket: need('S3_BUCKET_NAME', 's3'),
          endpoint,
          region: s.get('S3_REGION'),
          ...(yes(s.get('S3_USE_AWS_MANAGED_IAM')) ? {} : { accessKeyId: s.get('S3_ACCESS_KEY'), secretAccessKey: s.get('S3_SECRET_KEY') }),
          forcePathStyle: style === 'path' || (style === 'auto' && custom),
          prefix: '',
        };
      }
      case 'oci-storage':
        return {
          kind: 's3',
          bucket: need('OCI_BUCKET_NAME', 'oci-storage'),
          endpoint: need('OCI_ENDPOINT', 'oci-storage'),
          region: s.get('OCI_REGION'),
          accessKeyId: s.get('OCI_ACCESS_KEY'),
          secretAccessKey: s.get('OCI_SECRET_KEY'),
          forcePathStyle: true,
          prefix: '',
        };
      case 'azure-blob':
        return {
          kind: 'azure-blob',
          accountName: need('AZURE_BLOB_ACCOUNT_NAME', 'azure-blob'),
          accountKey: need('AZURE_BLOB_ACCOUNT_KEY', 'azure-blob'),
          container: need('AZURE_BLOB_CONTAINER_NAME', 'azure-blob'),
          accountUrl: s.get('AZURE_BLOB_ACCOUNT_URL'),
        };
      case 'aliyun-oss':
      case 'tencent-cos':
      case 'huawei-obs':
      case 'volcengine-tos':
      case 'baidu-obs':
        return vendorS3Storage(type satisfies VendorS3Type, s);
      case 'google-storage': {
        // Dify: base64 of the service account's JSON key; empty: Application Default Credentials.
        const b64 = (s.get('GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64') ?? '').trim();
        let serviceAccount: GcsSettings['serviceAccount'];
        if (b64) {
          try {
            serviceAccount = JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) as GcsSettings['serviceAccount'];
          } catch {
            throw bad(`${s.label('GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64')}: not the base64 of a service account's JSON key`);
          }
          if (!serviceAccount || typeof serviceAccount !== 'object' || !serviceAccount.client_email || !serviceAccount.private_key)
            throw bad(
              `${s.label('GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64')}: the JSON has no client_email and private_key (not a service account key)`,
            );
        }
        return { kind: 'gcs', bucket: need('GOOGLE_STORAGE_BUCKET_NAME', 'google-storage'), ...(serviceAccount ? { serviceAccount } : {}) };
      }
      case 'supabase': {
        const url = need('SUPABASE_URL', 'supabase').trim();
        if (!/^https?:\/\/[^/?#\s]+[^?#\s]*$/i.test(url))
          throw bad(`${s.label('SUPABASE_URL')}: not an http(s) address without query or fragment`);
        return { kind: 'supabase', url, apiKey: need('SUPABASE_API_KEY', 'supabase'), bucket: need('SUPABASE_BUCKET_NAME', 'supabase') };
      }
      case 'clickzetta-volume':
        throw bad(
          `${s.label('STORAGE_TYPE')}: "clickzetta-volume" is not supported: Dify puts files into a ClickZetta Lakehouse volume ` +
            `with SQL PUT statements through ClickZetta's Python connector, which has no Node client and no server that runs here ` +
            `to test against; dify-provision never writes a key where it cannot prove Dify will find it`,
        );
      default:
        throw bad(
          `${s.label('STORAGE_TYPE')}: "${type}" is not supported yet (${SUPPORTED_STORAGE} are); ` +
            `dify-provision never writes a key where Dify would not look for it`,
        );
    }
  })();
  return 'settings' in settings ? settings : { settings };
}

const tlsOf = (s: DifySettings) => (yes(s.get('REDIS_USE_SSL')) ? { caFile: s.get('REDIS_SSL_CA_CERTS') || undefined } : undefined);

/** "h1:p1,h2:p2" (Dify's REDIS_CLUSTERS / REDIS_SENTINELS) → host/port pairs. */
function nodesOf(s: DifySettings, name: string): { host: string; port: number }[] {
  const list = s.get(name) ?? '';
  if (!list.trim()) throw bad(`${s.label(name)}: names no host:port`);
  return list
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean)
    .map((n) => {
      const at = n.lastIndexOf(':');
      const port = Number(n.slice(at + 1));
      if (at < 1 || !/^\d+$/.test(n.slice(at + 1)) || port < 1 || port > 65535) throw bad(`${s.label(name)}: "${n}" is not host:port`);
      return { host: n.slice(0, at), port };
    });
}

const dbNumber = (s: DifySettings): number => {
  const v = s.get('REDIS_DB');
  if (!v) return 0;
  if (!/^\d+$/.test(v)) throw bad(`${s.label('REDIS_DB')}: "${v}" is not a database number`);
  return Number(v);
};

/** Dify's REDIS_* settings: one node, a Redis Cluster or Sentinel, as fields (REDIS_URL, ours, wins). */
export function redisFromDify(s: DifySettings): RedisTarget | undefined {
  const opt = (key: string, name: string) => {
    const v = s.get(name);
    return v ? { [key]: v } : {};
  };
  if (yes(s.get('REDIS_USE_CLUSTERS'))) {
    return {
      kind: 'cluster',
      nodes: nodesOf(s, 'REDIS_CLUSTERS'),
      ...opt('username', 'REDIS_CLUSTERS_USERNAME'),
      ...opt('password', 'REDIS_CLUSTERS_PASSWORD'),
      tls: tlsOf(s),
    };
  }
  if (yes(s.get('REDIS_USE_SENTINEL'))) {
    if (!s.get('REDIS_SENTINEL_SERVICE_NAME'))
      throw bad(`REDIS_SENTINEL_SERVICE_NAME: required with REDIS_USE_SENTINEL=true${s.where('REDIS_USE_SENTINEL')}`);
    return {
      kind: 'sentinel',
      sentinels: nodesOf(s, 'REDIS_SENTINELS'),
      name: s.get('REDIS_SENTINEL_SERVICE_NAME') ?? '',
      ...opt('sentinelUsername', 'REDIS_SENTINEL_USERNAME'),
      ...opt('sentinelPassword', 'REDIS_SENTINEL_PASSWORD'),
      ...opt('username', 'REDIS_USERNAME'),
      ...opt('password', 'REDIS_PASSWORD'),
      db: dbNumber(s),
      tls: tlsOf(s),
    };
  }
  const host = s.get('REDIS_HOST');
  if (!host) return undefined;
  return {
    kind: 'node',
    host,
    port: portOf(s, 'REDIS_PORT', 6379),
    ...opt('username', 'REDIS_USERNAME'),
    ...opt('password', 'REDIS_PASSWORD'),
    db: dbNumber(s),
    tls: tlsOf(s),
  };
}

/** Where and how Dify keeps invitation tokens, and the address its links start with (--invite). */
export interface InvitationSettings {
  /** Dify's own Redis (REDIS_*), whatever our queue uses; absent when Dify's settings name none. */
  redis?: RedisTarget;
  /** REDIS_KEY_PREFIX, trimmed as Dify trims it ('' = none). */
  keyPrefix: string;
  /** INVITE_EXPIRY_HOURS (Dify's default 72). */
  expiryHours: number;
  /** CONSOLE_WEB_URL without trailing slashes; absent when unset or empty (Dify's default). */
  consoleWebUrl?: string;
}

/** Dify's invitation settings; a malformed one throws (the caller keeps the error for --invite). */
export function invitationsFromDify(s: DifySettings): InvitationSettings {
  const hours = s.get('INVITE_EXPIRY_HOURS');
  if (hours && (!/^\d+$/.test(hours) || Number(hours) < 1))
    throw bad(`${s.label('INVITE_EXPIRY_HOURS')}: "${hours}" is not a positive number of hours`);
  const url = (s.get('CONSOLE_WEB_URL') ?? '').trim().replace(/\/+$/, '');
  if (url && !/^https?:\/\/[^/?#\s]+[^?#\s]*$/i.test(url))
    throw bad(`${s.label('CONSOLE_WEB_URL')}: "${url}" is not an http(s) address without query or fragment`);
  const redis = redisFromDify(s);
  return {
    ...(redis ? { redis } : {}),
    keyPrefix: (s.get('REDIS_KEY_PREFIX') ?? '').trim(),
    expiryHours: hours ? Number(hours) : 72,
    ...(url ? { consoleWebUrl: url } : {}),
  };
}

/** A host that is a service name of Dify's docker-compose.yaml, read from its .env: how to reach it. */
export interface ComposeHost {
  host: string;
  variable: string;
  label: string;
}

/** DB_HOST / REDIS_HOST values from Dify's files that name compose services (checked before connecting). */
export function composeHostsOf(s: DifySettings): ComposeHost[] {
  return ['DB_HOST', 'REDIS_HOST']
    .map((variable) => ({ variable, host: s.get(variable) ?? '', label: s.label(variable) }))
    .filter((h) => COMPOSE_SERVICES.has(h.host));
}

/** The hint for a compose service name that does not resolve here. */
export function composeHostHint(h: ComposeHost): string {
  const port = h.variable === 'DB_HOST' ? 'DB_PORT' : 'REDIS_PORT';
  return (
    `${h.label}: "${h.host}" is the name of a service in Dify's docker-compose.yaml and resolves only inside the compose network. ` +
    `From this host: publish the port (e.g. a docker-compose.override.yaml with ports: ["127.0.0.1:<port>:<container port>"] under ${h.host}) ` +
    `and set ${h.variable}=127.0.0.1 (and ${port} if you published another port) in our environment; or run dify-provision inside the compose network`
  );
}

/**
 * Before connecting: a DB_HOST or REDIS_HOST from Dify's compose .env that names a compose
 * service and does not resolve here fails with the way to reach it, instead of a bare ENOTFOUND.
 */
export async function checkComposeHost(hosts: readonly ComposeHost[] | undefined, variable: 'DB_HOST' | 'REDIS_HOST'): Promise<void> {
  const h = hosts?.find((x) => x.variable === variable);
  if (!h) return;
  try {
    await lookup(h.host);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME' || code === 'EAI_FAIL')
      throw new UnreachableError(composeHostHint(h));
  }
}

/**
 * Dify's SMTP mail, as its `ext_mail.py` and `libs/smtp.py` use it. Never printed: the password
 * is a secret, and errors name the variable, not the value.
 */
export interface SmtpSettings {
  host: string;
  port: number;
  /**
   * How Dify's SMTPClient protects the connection: SMTP_USE_TLS alone is TLS from the first byte
   * (Python's SMTP_SSL; port 465); with SMTP_OPPORTUNISTIC_TLS it is STARTTLS, required (Python's
   * starttls() fails when the server does not offer it); with neither it is plain SMTP, never
   * upgraded.
   */
  tls: 'implicit' | 'starttls' | 'none';
  /** Dify logs in only when both SMTP_USERNAME and SMTP_PASSWORD are non-blank. */
  auth?: { user: string; pass: string };
  /** MAIL_DEFAULT_SEND_FROM: the From of every message ("Name <address>" or an address). */
  from: string;
  /** SMTP_LOCAL_HOSTNAME: the name given in EHLO. */
  localHostname?: string;
}

// pydantic's bool (Dify's settings are pydantic fields): these words, in any case.
const TRUE_WORDS = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE_WORDS = new Set(['0', 'off', 'f', 'false', 'n', 'no']);
function difyBool(s: DifySettings, name: string): boolean {
  const v = (s.get(name) ?? '').trim().toLowerCase();
  if (v === '' || FALSE_WORDS.has(v)) return false;
  if (TRUE_WORDS.has(v)) return true;
  throw bad(`${s.label(name)}: "${s.get(name)}" is not true or false`);
}

/**
 * Dify's mail settings, for sending invitations: MAIL_TYPE=smtp only (resend and sendgrid are
 * APIs of their own). Throws a ConfigError naming the file and the variable.
 */
export function smtpFromDify(s: DifySettings): SmtpSettings {
  const type = s.get('MAIL_TYPE');
  const read =
    s.files.length > 0 ? `in ${s.files.join(', ')} or our environment` : 'in our environment (no DIFY_ENV_FILE / --dify-env given)';
  if (!type)
    throw bad(
      `MAIL_TYPE: not set ${read}: Dify's mail is off, so there is nothing to send invitations through; set MAIL_TYPE=smtp and SMTP_SERVER, SMTP_PORT, … as Dify's own .env does`,
    );
  if (type !== 'smtp')
    throw bad(
      `${s.label('MAIL_TYPE')}: "${type}": dify-provision sends invitations through SMTP only (MAIL_TYPE=smtp and SMTP_*); ` +
        'without --send-invites the links are still delivered to you (sealed or in a file) to send yourself',
    );
  const need = (name: string): string => {
    const v = s.get(name);
    if (!v) throw bad(`${s.label(name)}: required for MAIL_TYPE=smtp${s.where(name) === s.where('MAIL_TYPE') ? '' : s.where('MAIL_TYPE')}`);
    return v;
  };
  const host = need('SMTP_SERVER');
  const port = portOf(s, 'SMTP_PORT', 465);
  const useTls = difyBool(s, 'SMTP_USE_TLS');
  if (difyBool(s, 'SMTP_OPPORTUNISTIC_TLS') && !useTls)
    throw bad(`${s.label('SMTP_OPPORTUNISTIC_TLS')}: true needs SMTP_USE_TLS=true${s.where('SMTP_USE_TLS')} (Dify refuses it too)`);
  const from = need('MAIL_DEFAULT_SEND_FROM');
  const senders = addressparser(from, { flatten: true });
  if (senders.length !== 1 || !/^[^@\s]+@[^@\s]+$/.test(senders[0]?.address ?? ''))
    throw bad(`${s.label('MAIL_DEFAULT_SEND_FROM')}: "${from}" is not one address ("Name <address@domain>" or address@domain)`);
  const user = s.get('SMTP_USERNAME') ?? '';
  const pass = s.get('SMTP_PASSWORD') ?? '';
  const localHostname = s.get('SMTP_LOCAL_HOSTNAME');
  return {
    host,
    port,
    tls: !useTls ? 'none' : difyBool(s, 'SMTP_OPPORTUNISTIC_TLS') ? 'starttls' : 'implicit',
    ...(user.trim() && pass.trim() ? { auth: { user, pass } } : {}),
    from,
    ...(localHostname ? { localHostname } : {}),
  };
}
