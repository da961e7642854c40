// Dify's docker/.env, unmodified (test/fixtures/dify-docker/.env.example), as our configuration:
// only the settings we use are read, every error names the file and the variable, the file is read
// only when it is a small regular file, and no part of a password or host is parsed as a URL.
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseOf, loadConfig, redisTargetOf, requireConfig, storageOf } from '../../src/config/config.js';
import { createPool } from '../../src/db/pool.js';
import { ENV_FILE_MAX_BYTES } from '../../src/config/dify-env.js';
import { projectFile } from '../../src/common/project-files.js';
import { failure } from '../helpers/failure.js';

const FIXTURE = projectFile('test', 'fixtures', 'dify-docker');
let dir: string;
/** A copy of Dify's docker/ folder: .env (the unmodified .env.example) beside docker-compose.yaml. */
let docker: string;
let envFile: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-dify-env-'));
  docker = join(dir, 'dify', 'docker');
  await mkdir(join(docker, 'volumes', 'app', 'storage'), { recursive: true });
  envFile = join(docker, '.env');
  await copyFile(join(FIXTURE, '.env.example'), envFile);
  await copyFile(join(FIXTURE, 'docker-compose.yaml'), join(docker, 'docker-compose.yaml'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An env file with these lines, outside any compose folder. */
async function envWith(lines: string, name = `${Math.random().toString(36).slice(2)}.env`): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, lines);
  return file;
}

describe("Dify's docker/.env exactly as Dify ships it", () => {
  it('configures the database, Redis and the compose storage volume; Dify’s LOG_LEVEL=INFO and DEBUG=false are not ours', () => {
    const c = loadConfig({ DIFY_ENV_FILE: envFile });
    expect(c.logLevel).toBe('info');
    expect(c.debug).toBe(false);
    expect(databaseOf(c)).toEqual({ host: 'db_postgres', port: 5432, user: 'postgres', password: 'difyai123456', database: 'dify' });
    expect(redisTargetOf(c)).toMatchObject({ kind: 'node', host: 'redis', port: 6379, password: 'difyai123456', db: 0 });
    expect(storageOf(c)).toEqual({ kind: 'local', root: join(docker, 'volumes', 'app', 'storage') });
    expect(c.storageNote).toContain(`OPENDAL_FS_ROOT=storage (in ${envFile}) is /app/api/storage in Dify's containers`);
    expect(c.composeHosts?.map((h) => h.host)).toEqual(['db_postgres', 'redis']);
    // Our own names, from our environment only.
    expect(loadConfig({ DIFY_ENV_FILE: envFile, LOG_LEVEL: 'loud', DEBUG: 'false' })).toMatchObject({ logLevel: 'info', debug: false });
    expect(loadConfig({ DIFY_PROVISION_LOG_LEVEL: 'WARN', DIFY_PROVISION_DEBUG: '1' })).toMatchObject({ logLevel: 'warn', debug: true });
    expect(loadConfig({ DIFY_PROVISION_DEBUG: 'false' }).debug).toBe(false);
  });

  it('our environment wins over the file (the README’s overrides), as the shell does for compose', () => {
    const c = loadConfig({ DIFY_ENV_FILE: envFile, DB_HOST: '127.0.0.1', DB_PORT: '15432', REDIS_HOST: '127.0.0.1', REDIS_PORT: '16379' });
    expect(databaseOf(c)).toMatchObject({ host: '127.0.0.1', port: 15432, password: 'difyai123456' });
    expect(redisTargetOf(c)).toMatchObject({ host: '127.0.0.1', port: 16379 });
    expect(c.composeHosts).toBeUndefined();
    expect(loadConfig({ DIFY_ENV_FILE: envFile, DATABASE_URL: 'postgres://x@h/d' }).database).toBeUndefined();
  });

  it('knows compose service names in DB_HOST / REDIS_HOST wherever the file is, naming it', async () => {
    const file = await envWith('DB_HOST=db\nREDIS_HOST=cache.internal\n');
    expect(loadConfig({ DIFY_ENV_FILE: file }).composeHosts).toEqual([{ variable: 'DB_HOST', host: 'db', label: `DB_HOST (in ${file})` }]);
  });

  it('resolves storage only for the commands that touch keys: the stock relative root outside a compose folder', async () => {
    const alone = await envWith(`STORAGE_TYPE=opendal\nOPENDAL_SCHEME=fs\nOPENDAL_FS_ROOT=storage\nDB_HOST=h\n`);
    const c = loadConfig({ DIFY_ENV_FILE: alone });
    expect(() => requireConfig(c, 'databaseUrl', 'redisUrl')).toThrow(/REDIS_URL/);
    expect(databaseOf(c)).toMatchObject({ host: 'h' });
    expect(failure(() => requireConfig(c, 'storageDir'))).toContain(
      `OPENDAL_FS_ROOT (in ${alone}): "storage" is relative to Dify's api folder; set DIFY_STORAGE_DIR`,
    );
    expect(storageOf(loadConfig({ DIFY_ENV_FILE: alone, DIFY_STORAGE_DIR: '/srv/keys' }))).toEqual({ kind: 'local', root: '/srv/keys' });
  });

  it('maps /app/api/storage paths to the compose volume, for STORAGE_TYPE=local too', async () => {
    const d = join(dir, 'other', 'docker');
    await mkdir(d, { recursive: true });
    await copyFile(join(FIXTURE, 'docker-compose.yaml'), join(d, 'docker-compose.yaml'));
    await writeFile(join(d, '.env'), 'STORAGE_TYPE=local\nSTORAGE_LOCAL_PATH=/app/api/storage/sub\n');
    expect(storageOf(loadConfig({ DIFY_ENV_FILE: join(d, '.env') }))).toEqual({
      kind: 'local',
      root: join(d, 'volumes', 'app', 'storage', 'sub'),
    });
    await writeFile(join(d, '.env'), 'STORAGE_TYPE=opendal\nOPENDAL_FS_ROOT=data\n');
    expect(failure(() => requireConfig(loadConfig({ DIFY_ENV_FILE: join(d, '.env') }), 'storageDir'))).toMatch(
      /OPENDAL_FS_ROOT \(in .*\): "data"/,
    );
  });

  it("reads Dify's optional envs/*.env files the way its compose file gives them to the api (.env last, and wins)", async () => {
    const d = join(dir, 'layered', 'docker');
    await mkdir(join(d, 'envs', 'core-services'), { recursive: true });
    await mkdir(join(d, 'envs', 'databases'), { recursive: true });
    await copyFile(join(FIXTURE, 'docker-compose.yaml'), join(d, 'docker-compose.yaml'));
    await writeFile(join(d, 'envs', 'core-services', 'shared.env'), 'S3_BUCKET_NAME=from-shared\nS3_REGION=${REGION}\nLOG_LEVEL=loud\n');
    await writeFile(join(d, 'envs', 'databases', 'db-postgres.env'), 'DB_HOST=from-db-env\nDB_DATABASE=from-db-env\n');
    await writeFile(join(d, '.env'), 'REGION=eu-west-3\nSTORAGE_TYPE=s3\nDB_HOST=pg.internal\n');
    const c = loadConfig({ DIFY_ENV_FILE: join(d, '.env') });
    expect(storageOf(c)).toMatchObject({ kind: 's3', bucket: 'from-shared', region: 'eu-west-3' });
    expect(databaseOf(c)).toMatchObject({ host: 'pg.internal', database: 'from-db-env' });
    expect(c.logLevel).toBe('info');
  });

  it('a % in DB_PASSWORD or REDIS_PASSWORD is kept as written; DB_HOST is never pasted into a URL', async () => {
    const file = await envWith(
      `DB_HOST=127.0.0.1:9999/x?host=evil.example\nDB_PASSWORD='p%41ss%zz@#/?'\nREDIS_HOST=r\nREDIS_PASSWORD=%41%zz#x\nDB_DATABASE=a/b?c\n`,
    );
    const c = loadConfig({ DIFY_ENV_FILE: file });
    expect(c.database).toEqual({
      host: '127.0.0.1:9999/x?host=evil.example',
      port: 5432,
      user: 'postgres',
      password: 'p%41ss%zz@#/?',
      database: 'a/b?c',
    });
    expect(redisTargetOf(c)).toMatchObject({ kind: 'node', host: 'r', password: '%41%zz#x' });
    // pg gets the fields as they are: nothing is decoded, no query parameter rewrites the host.
    const pool = createPool(c.database!, 1);
    expect(pool.options).toMatchObject({ host: '127.0.0.1:9999/x?host=evil.example', password: 'p%41ss%zz@#/?', database: 'a/b?c' });
    await pool.end();
  });
});

describe('every error names the file and the variable', () => {
  it.each([
    ['DB_HOST=h\nDB_PORT=abc\n', /DB_PORT \(in @F@\): "abc" is not a port/],
    ['REDIS_HOST=r\nREDIS_PORT=0\n', /REDIS_PORT \(in @F@\): "0" is not a port/],
    ['REDIS_HOST=r\nREDIS_DB=one\n', /REDIS_DB \(in @F@\): "one" is not a database number/],
    ['REDIS_USE_CLUSTERS=true\nREDIS_CLUSTERS=nohost\n', /REDIS_CLUSTERS \(in @F@\): "nohost" is not host:port/],
    [
      'REDIS_USE_SENTINEL=yes\nREDIS_SENTINEL_SERVICE_NAME=m\nREDIS_SENTINELS=a:99999\n',
      /REDIS_SENTINELS \(in @F@\): "a:99999" is not host:port/,
    ],
    ['REDIS_USE_CLUSTERS=1\nREDIS_CLUSTERS=\n', /REDIS_CLUSTERS \(in @F@\): names no host:port/],
    ['REDIS_USE_SENTINEL=true\nREDIS_SENTINELS=a:1\n', /REDIS_SENTINEL_SERVICE_NAME: required with REDIS_USE_SENTINEL=true \(in @F@\)/],
    ['DB_TYPE=mysql\nDB_HOST=db_mysql\n', /DB_TYPE \(in @F@\): "mysql": dify-provision writes Dify's PostgreSQL schema only/],
    ['HOSTED_POOL_CREDITS=lots\n', /HOSTED_POOL_CREDITS \(in @F@\): /],
    ['FOO=1\nlol$wut=2\n', /DIFY_ENV_FILE \/ --dify-env \(in @F@, line 2\): unexpected character "\$"/],
    ['A=1\nDB_PASSWORD="secret\n', /DB_PASSWORD \(in @F@, line 2\): unterminated quoted value/],
    ['DB_PASSWORD=${ secret}\n', /DB_PASSWORD \(in @F@, line 1\): invalid interpolation/],
    ['DB_PASSWORD=${NEED:?must be set}\n', /DB_PASSWORD \(in @F@, line 1\): required variable NEED is missing a value: must be set/],
  ])('%j', async (lines, message) => {
    const file = await envWith(lines);
    const text = failure(() => loadConfig({ DIFY_ENV_FILE: file }));
    expect(text).toMatch(new RegExp(message.source.replaceAll('@F@', file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))));
    expect(text).toMatch(/^invalid configuration:/);
    expect(text).not.toContain('secret');
  });

  it.each([
    ['STORAGE_TYPE=google-storage\n', /GOOGLE_STORAGE_BUCKET_NAME: required for STORAGE_TYPE=google-storage \(in @F@\)/],
    ['STORAGE_TYPE=s3\n', /S3_BUCKET_NAME: required for STORAGE_TYPE=s3 \(in @F@\)/],
    ['STORAGE_TYPE=opendal\nOPENDAL_SCHEME=gcs\n', /OPENDAL_SCHEME \(in @F@\): "gcs" is not supported/],
    ['KEY_PROVIDER_TYPE=vault\n', /KEY_PROVIDER_TYPE \(in @F@\): "vault" keeps tenant keys in a key vault/],
  ])('storage %j: only when keys are touched', async (lines, message) => {
    const file = await envWith(lines);
    const c = loadConfig({ DIFY_ENV_FILE: file });
    const text = failure(() => requireConfig(c, 'storageDir'));
    expect(text).toMatch(new RegExp(message.source.replaceAll('@F@', file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))));
  });

  it('names a variable set in our environment without a file', () => {
    expect(failure(() => loadConfig({ DB_HOST: 'h', DB_PORT: 'x' }))).toContain('DB_PORT: "x" is not a port');
  });
});

describe('only a small regular file is read', () => {
  it('refuses a FIFO at once (no hang), a device, a folder, a missing file and an oversized one, naming it', async () => {
    const fifo = join(dir, 'fifo.env');
    execFileSync('mkfifo', [fifo]);
    expect(failure(() => loadConfig({ DIFY_ENV_FILE: fifo }))).toContain(`DIFY_ENV_FILE / --dify-env: ${fifo} is not a regular file`);
    expect(failure(() => loadConfig({ DIFY_ENV_FILE: '/dev/zero' }))).toContain('/dev/zero is not a regular file');
    expect(failure(() => loadConfig({ DIFY_ENV_FILE: dir }))).toContain(`${dir} is not a regular file`);
    expect(failure(() => loadConfig({ DIFY_ENV_FILE: '/nonexistent/.env' }))).toContain('cannot read /nonexistent/.env (ENOENT)');
    const big = await envWith(`A=${'x'.repeat(ENV_FILE_MAX_BYTES)}\n`);
    expect(failure(() => loadConfig({ DIFY_ENV_FILE: big }))).toContain(`${big} is larger than ${ENV_FILE_MAX_BYTES} bytes`);
  });
});
