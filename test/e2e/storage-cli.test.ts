// One CLI batch per object-store backend (S3 and the S3-compatible APIs of OSS, COS, OBS, TOS and
// BOS against s3rver, Azure Blob against Azurite), configured only by Dify's own .env file (--dify-env):
// database, Redis, key storage and trial credits all come from it; no secret reaches the output.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { objectKeyStorage } from '../../src/storage/object-store.js';
import { azureBlobStore } from '../../src/storage/azure-blob.js';
import { s3Store } from '../../src/storage/s3.js';
import { csvOf } from '../helpers/batch.js';
import { runCli, startCli, type Background } from '../helpers/cli.js';
import {
  AZURITE_KEY,
  startAzurite,
  startS3,
  vendorEnv,
  VENDOR_SECRET,
  VENDOR_STORES,
  type AzuriteServer,
  type S3Server,
} from '../helpers/object-servers.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { startFakeGcs, startFakeSupabase, type FakeStore } from '../helpers/fake-cloud-stores.js';
import { freePort } from '../../src/services/local-services.js';

let s3: S3Server;
let azure: AzuriteServer;
let gcs: FakeStore;
let supabase: FakeStore;
// A service account key as GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64 holds it (its private key never printed).
const SERVICE_ACCOUNT_KEY = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();
const SERVICE_ACCOUNT_B64 = Buffer.from(
  JSON.stringify({
    type: 'service_account',
    project_id: 'p',
    client_email: 'dify@p.iam.gserviceaccount.com',
    private_key: SERVICE_ACCOUNT_KEY,
  }),
).toString('base64');
let env: TestEnv;
let worker: Background | undefined;
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-storage-cli-'));
  [s3, azure, gcs, supabase] = await Promise.all([
    startS3(join(dir, 's3')),
    startAzurite(join(dir, 'azurite')),
    startFakeGcs(),
    startFakeSupabase(VENDOR_SECRET),
  ]);
}, 60_000);
afterAll(async () => {
  await Promise.allSettled([s3?.stop(), azure?.stop(), gcs?.stop(), supabase?.stop()]);
  await rm(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  env = await createTestEnv();
});
afterEach(async () => {
  await worker?.stop('SIGKILL');
  worker = undefined;
  await env.cleanup();
});

/** Dify's docker/.env as an operator has it, pointing at the test's database and Redis. */
async function difyEnvFile(storage: NodeJS.ProcessEnv, name: string): Promise<string> {
  const db = new URL(env.config.databaseUrl);
  const redis = new URL(env.config.redisUrl);
  const lines = {
    DB_USERNAME: decodeURIComponent(db.username),
    DB_PASSWORD: decodeURIComponent(db.password),
    DB_HOST: db.hostname,
    DB_PORT: db.port,
    DB_DATABASE: db.pathname.slice(1),
    REDIS_HOST: redis.hostname,
    REDIS_PORT: redis.port,
    HOSTED_POOL_CREDITS: '321',
    KEY_PROVIDER_TYPE: 'local',
    ...storage,
  };
  const file = join(env.dir, `${name}.env`);
  await writeFile(
    file,
    `# Dify docker/.env (excerpt)\n${Object.entries(lines)
      .map(([k, v]) => `${k}=${v}`)
      .join('\n')}\n`,
  );
  return file;
}

const SERVICE = {
  s3: 'S3 bucket',
  'azure-blob': 'Azure Blob container',
  'aliyun-oss': 'Aliyun OSS bucket',
  'tencent-cos': 'Tencent COS bucket',
  'huawei-obs': 'Huawei OBS bucket',
  'volcengine-tos': 'Volcengine TOS bucket',
  'baidu-obs': 'Baidu BOS bucket',
  'google-storage': 'Google Cloud Storage bucket',
  supabase: 'Supabase Storage bucket',
} as const;

// google-storage and supabase: tested against our own small servers (test/helpers/
// fake-cloud-stores.ts) speaking only the subset of their REST APIs the official clients use here.
describe.each(['s3', 'azure-blob', ...VENDOR_STORES, 'google-storage', 'supabase'] as const)(
  'a CLI batch with keys on %s, configured by --dify-env',
  (backend) => {
    let bucket: string;
    beforeEach(async () => {
      bucket = `cli-${backend}-${Date.now()}`;
      if (backend === 'azure-blob') await azure.createContainer(bucket);
      else if (backend === 'google-storage') gcs.createBucket(bucket);
      else if (backend === 'supabase') supabase.createBucket(bucket);
      else await s3.createBucket(bucket);
    });

    it('provisions, checks with doctor, and prints no credential', async () => {
      const storage =
        backend === 's3'
          ? { ...s3.env, S3_BUCKET_NAME: bucket }
          : backend === 'azure-blob'
            ? { ...azure.env, AZURE_BLOB_CONTAINER_NAME: bucket }
            : backend === 'google-storage'
              ? {
                  STORAGE_TYPE: backend,
                  GOOGLE_STORAGE_BUCKET_NAME: bucket,
                  GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64: SERVICE_ACCOUNT_B64,
                }
              : backend === 'supabase'
                ? { STORAGE_TYPE: backend, SUPABASE_URL: supabase.url, SUPABASE_API_KEY: VENDOR_SECRET, SUPABASE_BUCKET_NAME: bucket }
                : vendorEnv(backend, s3.endpoint, bucket, 'keys-folder');
      const file = await difyEnvFile(storage, backend);
      const { REDIS_URL: _r, DATABASE_URL: _d, DIFY_STORAGE_DIR: _s, HOSTED_POOL_CREDITS: _h, ...rest } = env.env;
      // Google's clients send their requests to STORAGE_EMULATOR_HOST (our server) when it is set.
      const bare = backend === 'google-storage' ? { ...rest, STORAGE_EMULATOR_HOST: gcs.url } : rest;
      const csv = join(env.dir, `${backend}.csv`);
      await writeFile(csv, csvOf([1, 2, 3].map((i) => ({ workspace_name: `${backend} ${i}`, owner_email: `owner${i}@example.com` }))));

      worker = startCli(['worker', '--concurrency', '2', '--dify-env', file], bare);
      const ingest = await runCli(
        ['--dify-env', file, 'ingest', csv, '--batch-id', `cli-${backend}`, '--wait', '--report-dir', env.dir],
        bare,
      );
      expect(ingest.code, ingest.stdout + ingest.stderr).toBe(0);
      // The start line says which store, bucket and folder the keys went to.
      expect(worker.output()).toContain(`${SERVICE[backend]} \\"${bucket}\\"`);
      if (backend === 'aliyun-oss') expect(worker.output()).toContain('under keys-folder/');
      const { rows } = await env.db.query(
        `SELECT count(*)::int AS n, min(quota_limit)::int AS q FROM tenant_credit_pools p JOIN tenants t ON t.id = p.tenant_id WHERE t.name LIKE $1`,
        [`${backend} %`],
      );
      expect(rows).toEqual([{ n: 3, q: 321 }]);

      const doctor = await runCli(['doctor', '--dify-env', file, '--min-age', '0'], bare);
      expect(doctor.code, doctor.stdout + doctor.stderr).toBe(0);
      const cloud = backend === 'google-storage' ? gcs : backend === 'supabase' ? supabase : undefined;
      if (cloud) expect([...cloud.buckets.get(bucket)!.keys()].filter((k) => k.endsWith('/private.pem'))).toHaveLength(3);
      if (!cloud) {
        const store =
          backend !== 'azure-blob'
            ? objectKeyStorage(
                s3Store({ bucket, endpoint: s3.endpoint, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true }),
                backend === 'aliyun-oss' ? 'keys-folder/' : '',
              )
            : objectKeyStorage(
                azureBlobStore({
                  accountName: 'devstoreaccount1',
                  accountKey: AZURITE_KEY,
                  container: bucket,
                  accountUrl: azure.accountUrl,
                }),
              );
        expect((await store.list()).filter((k) => k.name === 'private.pem')).toHaveLength(3);
      }
      for (const out of [worker.output(), ingest.stdout, ingest.stderr, doctor.stdout]) {
        expect(out).not.toContain(AZURITE_KEY);
        expect(out).not.toContain(VENDOR_SECRET);
        expect(out).not.toContain(SERVICE_ACCOUNT_KEY.slice(40, 100));
      }
      if (backend !== 's3' && backend !== 'azure-blob') {
        // Dify's own variables only: none of ours named the store.
        expect(
          Object.keys(bare).filter((k) => k !== 'STORAGE_EMULATOR_HOST' && /STORAGE|S3|OSS|COS|OBS|TOS|SUPABASE|GOOGLE/.test(k)),
        ).toEqual([]);
      }
    });
  },
);

describe('credentials inside a storage address (S3_ENDPOINT user info, a SAS query in AZURE_BLOB_ACCOUNT_URL)', () => {
  const USER = 'leakyuser';
  const PASSWORD = 'Leaky-Passw0rd';
  const SIG = 'LeakySasSignature0123456789';
  const leaks = (text: string) => [USER, PASSWORD, SIG, encodeURIComponent(SIG)].filter((s) => text.includes(s));

  it.each(['s3', 'azure-blob'] as const)('%s: the worker start line and errors show the address without them', async (backend) => {
    const { REDIS_URL: _r, DATABASE_URL: _d, DIFY_STORAGE_DIR: _s, HOSTED_POOL_CREDITS: _h, ...bare } = env.env;
    const secretive = (url: string) =>
      backend === 's3'
        ? url.replace('http://', `http://${USER}:${PASSWORD}@`)
        : `${url}?sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=${SIG}`;
    const storage = (url: string, bucket: string) =>
      backend === 's3'
        ? { ...s3.env, S3_ENDPOINT: secretive(url), S3_BUCKET_NAME: bucket }
        : { ...azure.env, AZURE_BLOB_ACCOUNT_URL: secretive(url), AZURE_BLOB_CONTAINER_NAME: bucket };
    const base = backend === 's3' ? s3.endpoint : azure.accountUrl;
    const bucket = backend === 's3' ? s3.bucket : azure.container;

    // The start line names where the keys go, without the credentials.
    worker = startCli(['worker', '--dify-env', await difyEnvFile(storage(base, bucket), `${backend}-secret`)], bare);
    for (let i = 0; i < 600 && !worker.output().includes('worker started') && worker.child.exitCode === null; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(worker.output()).toContain('worker started');
    expect(worker.output()).toContain(` at ${base}`);
    expect(leaks(worker.output())).toEqual([]);
    await worker.stop('SIGTERM');

    // Errors: a bucket/container that does not exist, and an endpoint that refuses connections.
    const dead = `http://127.0.0.1:${await freePort()}${backend === 's3' ? '' : '/devstoreaccount1'}`;
    for (const [url, name, says] of [
      [base, 'missing-bucket', /does not exist/],
      [dead, bucket, /ECONNREFUSED|connect/],
    ] as const) {
      const r = await runCli(['worker', '--dify-env', await difyEnvFile(storage(url, name), `${backend}-${name}`)], bare);
      expect(r.code).not.toBe(0);
      expect(r.stdout + r.stderr).toMatch(says);
      expect(leaks(r.stdout + r.stderr), r.stdout + r.stderr).toEqual([]);
    }
  });
});
