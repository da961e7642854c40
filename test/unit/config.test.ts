// Configuration: every setting parsed as documented, every invalid one refused with its name.
import { describe, expect, it } from 'vitest';
import { databaseOf, loadConfig, redisTargetOf, requireConfig, storageOf } from '../../src/config/config.js';
import { duration, rateLimit } from '../../src/cli/options.js';

describe('configuration from the environment', () => {
  it('parses KEY_FILE_OWNER, HOSTED_POOL_CREDITS, the pool cap and the queue prefix', () => {
    const c = loadConfig({
      KEY_FILE_OWNER: '1001:1002',
      HOSTED_POOL_CREDITS: '500',
      DIFY_PROVISION_DB_POOL_MAX: '6',
      REDIS_KEY_PREFIX: 'dify',
    });
    expect(c.keyFileOwner).toEqual({ uid: 1001, gid: 1002 });
    expect(c.trialCredits).toBe(500);
    expect(c.dbPoolMax).toBe(6);
    expect(c.queuePrefix).toBe('dify:{dify-provision}');
    expect(loadConfig({}).trialCredits).toBe(200);
    expect(loadConfig({}).dbPoolMax).toBe(10);
  });

  it.each([
    [{ KEY_FILE_OWNER: 'dify' }, /KEY_FILE_OWNER: must be "uid:gid" \(numbers\)/],
    [{ HOSTED_POOL_CREDITS: 'lots' }, /HOSTED_POOL_CREDITS: /],
    [{ HOSTED_POOL_CREDITS: '-1' }, /HOSTED_POOL_CREDITS: /],
    [{ REDIS_URL: 'http://x' }, /REDIS_URL: must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL: must be a postgres:\/\/ URL/],
    [{ DIFY_PROVISION_LOG_LEVEL: 'loud' }, /DIFY_PROVISION_LOG_LEVEL: /],
    [{ DIFY_PROVISION_DB_POOL_MAX: '1' }, /DIFY_PROVISION_DB_POOL_MAX: /],
    [{ WORKER_CONCURRENCY: '0' }, /WORKER_CONCURRENCY: /],
    [{ DASHBOARD_TOKEN: 'short' }, /DASHBOARD_TOKEN: must be at least 16 characters/],
    [{ REDIS_USE_CLUSTERS: 'true', REDIS_CLUSTERS: 'nohost' }, /REDIS_CLUSTERS: "nohost" is not host:port/],
    [{ DIFY_ENV_FILE: '/nonexistent/.env' }, /cannot read \/nonexistent\/\.env \(ENOENT\)/],
  ])('refuses %j, naming the variable', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
    expect(() => loadConfig(env)).toThrow(/^invalid configuration:/);
  });

  it.each([
    [{ STORAGE_TYPE: 'ftp' }, /STORAGE_TYPE: "ftp" is not supported yet/],
    [{ STORAGE_TYPE: 's3' }, /S3_BUCKET_NAME: required for STORAGE_TYPE=s3/],
  ])('refuses storage %j when keys are touched, naming the variable', (env, message) => {
    const config = loadConfig(env);
    expect(() => requireConfig(config, 'storageDir')).toThrow(message);
  });

  it("reads Dify's names: DB_*, REDIS_HOST…, Sentinel, Cluster, STORAGE_TYPE", () => {
    const c = loadConfig({
      DB_HOST: 'db',
      DB_PORT: '5433',
      DB_USERNAME: 'dify',
      DB_PASSWORD: 'p@ss',
      DB_DATABASE: 'dify',
      REDIS_HOST: 'redis',
      REDIS_PASSWORD: 'r',
      REDIS_DB: '2',
    });
    expect(databaseOf(c)).toEqual({ host: 'db', port: 5433, user: 'dify', password: 'p@ss', database: 'dify' });
    expect(redisTargetOf(c)).toEqual({ kind: 'node', host: 'redis', port: 6379, password: 'r', db: 2 });
    const sentinel = loadConfig({
      REDIS_USE_SENTINEL: 'true',
      REDIS_SENTINELS: 'a:26379,b:26380',
      REDIS_SENTINEL_SERVICE_NAME: 'mymaster',
    });
    expect(redisTargetOf(sentinel)).toMatchObject({
      kind: 'sentinel',
      name: 'mymaster',
      sentinels: [
        { host: 'a', port: 26379 },
        { host: 'b', port: 26380 },
      ],
    });
    expect(redisTargetOf(loadConfig({ REDIS_URL: 'redis://x:1', REDIS_USE_CLUSTERS: 'true', REDIS_CLUSTERS: 'a:1' }))).toMatchObject({
      kind: 'single',
    });
    expect(storageOf(loadConfig({ STORAGE_TYPE: 'opendal', OPENDAL_SCHEME: 'fs', OPENDAL_FS_ROOT: '/app/api/storage' }))).toEqual({
      kind: 'local',
      root: '/app/api/storage',
    });
    expect(
      storageOf(loadConfig({ STORAGE_TYPE: 'opendal', OPENDAL_SCHEME: 's3', OPENDAL_S3_BUCKET: 'b', OPENDAL_S3_ROOT: '/dify' })),
    ).toMatchObject({
      kind: 's3',
      bucket: 'b',
      prefix: 'dify/',
      forcePathStyle: true,
    });
    expect(storageOf(loadConfig({ DIFY_STORAGE_DIR: '/mine', STORAGE_TYPE: 's3', S3_BUCKET_NAME: 'b' }))).toEqual({
      kind: 'local',
      root: '/mine',
    });
  });
});

describe('durations for --min-age', () => {
  it.each([
    ['600', 600],
    ['600s', 600],
    ['10m', 600],
    ['2h', 7200],
    ['0', 0],
  ])('%s is %i seconds', (text, seconds) => {
    expect(duration('--min-age')(text)).toBe(seconds);
  });
  it.each(['10 minutes', 'abc', '-5', '1.5h', ''])('refuses %j', (text) => {
    expect(() => duration('--min-age')(text)).toThrow(/--min-age takes a duration/);
  });
});

describe('--rate-limit', () => {
  it('parses N/s, N/m and N/h into a BullMQ limiter', () => {
    expect(rateLimit('10/s')).toEqual({ max: 10, durationMs: 1000 });
    expect(rateLimit('600/m')).toEqual({ max: 600, durationMs: 60_000 });
    expect(rateLimit(' 5/h ')).toEqual({ max: 5, durationMs: 3_600_000 });
  });
  it.each(['10', '10/d', '0/s', 'ten/s', '-1/s'])('refuses %j', (text) => {
    expect(() => rateLimit(text)).toThrow(/--rate-limit takes N\/s, N\/m or N\/h/);
  });
});
