// The same promises on every key storage backend Dify uses: a local folder, S3 (s3rver), Azure
// Blob (Azurite), and the S3-compatible APIs of Aliyun OSS, Tencent COS, Huawei OBS, Volcengine TOS
// and Baidu BOS (s3rver standing in for each: it checks no signatures), configured with Dify's own
// variable names. Keys are written whole, proven,
// removed when the transaction fails, found by doctor; re-runs create nothing twice.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, requireConfig } from '../../src/config/config.js';
import { hybridDecrypt, hybridEncrypt, rsaKeySource } from '../../src/crypto/rsa-keys.js';
import { probeDifySchema } from '../../src/dify/schema-probe.js';
import { workspaceWriter, type WorkspaceWriter } from '../../src/dify/workspace-writer.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import { RowError } from '../../src/common/errors.js';
import { openKeyStorage, openObjectStore } from '../../src/runtime/runtime.js';
import { privateKeyKey, type KeyStorage } from '../../src/storage/key-storage.js';
import { s3Store } from '../../src/storage/s3.js';
import { provisionWorkspace } from '../../src/worker/provision-workspace.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import {
  startAzurite,
  startS3,
  vendorEnv,
  VENDOR_STORES,
  type AzuriteServer,
  type S3Server,
  type VendorStore,
} from '../helpers/object-servers.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { startFakeGcs, startFakeSupabase, type FakeStore } from '../helpers/fake-cloud-stores.js';
import { freshEnvEachTest } from '../helpers/world.js';

let dir: string;
let s3: S3Server;
let azure: AzuriteServer;
// Google Cloud Storage and Supabase Storage: tested against our own small servers
// (test/helpers/fake-cloud-stores.ts) speaking only the subset of their REST APIs the official
// clients use here — never against Google's or Supabase's service.
let gcs: FakeStore;
let supabase: FakeStore;
const SUPABASE_KEY = 'supabase-service-role-key-for-tests';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-objects-'));
  [s3, azure, gcs, supabase] = await Promise.all([
    startS3(join(dir, 's3')),
    startAzurite(join(dir, 'azurite')),
    startFakeGcs(),
    startFakeSupabase(SUPABASE_KEY),
  ]);
  // Google's clients (Dify's Python one and ours) send their requests there.
  process.env.STORAGE_EMULATOR_HOST = gcs.url;
}, 60_000);
afterAll(async () => {
  delete process.env.STORAGE_EMULATOR_HOST;
  await Promise.allSettled([s3?.stop(), azure?.stop(), gcs?.stop(), supabase?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

type Backend = 'local' | 's3' | 'azure-blob' | 'opendal-s3' | VendorStore | 'google-storage' | 'supabase';
const isVendor = (b: Backend): b is VendorStore => (VENDOR_STORES as readonly string[]).includes(b);
/** Where the keys sit in the bucket, as Dify's client for that backend puts them. */
const folderOf = (env: TestEnv, backend: Backend) =>
  backend === 'opendal-s3' ? `dify/${env.name}/` : backend === 'aliyun-oss' ? `oss-folder/${env.name}/` : '';
/** The settings an operator would copy from Dify's .env, per backend: a bucket/container per test. */
async function configFor(env: TestEnv, backend: Backend): Promise<TestEnv['config']> {
  const own = env.name.replace(/_/g, '-');
  if (backend === 's3' || backend === 'opendal-s3' || isVendor(backend)) await s3.createBucket(own);
  if (backend === 'azure-blob') await azure.createContainer(own);
  if (backend === 'google-storage') gcs.createBucket(own);
  if (backend === 'supabase') supabase.createBucket(own);
  const difyEnv: NodeJS.ProcessEnv =
    backend === 'local'
      ? { DIFY_STORAGE_DIR: env.config.storageDir }
      : backend === 'google-storage'
        ? { STORAGE_TYPE: 'google-storage', GOOGLE_STORAGE_BUCKET_NAME: own, GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64: '' }
        : backend === 'supabase'
          ? { STORAGE_TYPE: 'supabase', SUPABASE_URL: supabase.url, SUPABASE_API_KEY: SUPABASE_KEY, SUPABASE_BUCKET_NAME: own }
          : isVendor(backend)
            ? // ALIYUN_OSS_PATH without its trailing slash: Dify joins it with posixpath.join.
              vendorEnv(backend, s3.endpoint, own, `oss-folder/${env.name}`)
            : backend === 's3'
              ? { ...s3.env, S3_BUCKET_NAME: own }
              : backend === 'azure-blob'
                ? { ...azure.env, AZURE_BLOB_CONTAINER_NAME: own }
                : {
                    STORAGE_TYPE: 'opendal',
                    OPENDAL_SCHEME: 's3',
                    OPENDAL_S3_BUCKET: own,
                    OPENDAL_S3_ENDPOINT: s3.endpoint,
                    OPENDAL_S3_ACCESS_KEY_ID: 'S3RVER',
                    OPENDAL_S3_SECRET_ACCESS_KEY: 'S3RVER',
                    // Doubled and missing slashes, as an operator may write it: OpenDAL normalises the root.
                    OPENDAL_S3_ROOT: `dify//${env.name}`,
                  };
  const loaded = loadConfig(difyEnv);
  return { ...env.config, storageDir: loaded.storageDir ?? '', storage: loaded.storage };
}

describe.each<Backend>(['local', 's3', 'azure-blob', 'opendal-s3', ...VENDOR_STORES, 'google-storage', 'supabase'])(
  'keys on %s',
  (backend) => {
    let env: TestEnv;
    let config: TestEnv['config'];
    let storage: KeyStorage;
    beforeEach(async () => {
      env = await createTestEnv();
      config = await configFor(env, backend);
      storage = await openKeyStorage(config);
    });
    afterEach(async () => {
      await env.cleanup();
    });

    const works = async (tenantId: string) => {
      const { rows } = await env.db.query(`SELECT encrypt_public_key FROM tenants WHERE id = $1`, [tenantId]);
      const secret = randomBytes(24);
      return hybridDecrypt(hybridEncrypt(secret, rows[0].encrypt_public_key), (await storage.read(tenantId))!).equals(secret);
    };

    it('provisions a batch whose keys Dify can use, and a re-run creates nothing twice', async () => {
      const world = { ...env, config };
      const rows = Array.from({ length: 6 }, (_, i) => ({ workspace_name: `Obj ${i}`, owner_email: `owner${i + 1}@example.com` }));
      await ingestCsv(world, csvOf(rows), 'obj');
      const [status] = await runUntilDone(world, ['obj']);
      expect(status!.counts).toMatchObject({ created: 6, failed: 0 });
      const { rows: tenants } = await env.db.query<{ id: string }>(`SELECT id FROM tenants`);
      for (const t of tenants) expect(await works(t.id)).toBe(true);
      await ingestCsv(world, csvOf(rows), 'obj-again');
      const [again] = await runUntilDone(world, ['obj-again']);
      expect(again!.counts).toMatchObject({ existing: 6, created: 0 });
      expect(await runDoctor(env.db, backend === 'local' ? { storageDir: env.config.storageDir } : { storage })).toEqual([]);
      if (backend === 'google-storage' || backend === 'supabase') {
        // The objects sit at Dify's keys, at the bucket's top.
        const names = [...(backend === 'supabase' ? supabase : gcs).buckets.get(env.name.replace(/_/g, '-'))!.keys()].sort();
        expect(names).toEqual(tenants.map((t) => `privkeys/${t.id}/private.pem`).sort());
      } else if (backend !== 'local' && backend !== 'azure-blob') {
        // Read with no prefix at all: the objects are where Dify's client reads them (OpenDAL's
        // root dify/<name>/…, posixpath.join(ALIYUN_OSS_PATH, key), the bucket's top for the others).
        const raw = s3Store({
          bucket: env.name.replace(/_/g, '-'),
          endpoint: s3.endpoint,
          forcePathStyle: true,
          accessKeyId: 'S3RVER',
          secretAccessKey: 'S3RVER',
        });
        const keys = (await raw.list('')).map((o) => o.key).sort();
        expect(keys).toEqual(tenants.map((t) => `${folderOf(env, backend)}privkeys/${t.id}/private.pem`).sort());
      }
    });

    it('a key that does not match the public key fails its row: nothing commits, nothing stays behind', async () => {
      // A worker whose deploy writes another pair's private key through the real backend (a
      // pair that was not proven where it was made: the full proof runs): only the read-back
      // proof can tell.
      const other = await rsaKeySource.generate();
      const mismatched = (real: KeyStorage): KeyStorage => ({
        ...real,
        deploy: (tenantId, keys) => real.deploy(tenantId, { ...keys, privatePem: other.privatePem }),
      });
      const world = { ...env, config };
      await ingestCsv(world, csvOf([{ workspace_name: 'Bad key', owner_email: 'owner1@example.com' }]), 'badkey', { attempts: 2 });
      const [status] = await runUntilDone(world, ['badkey'], { wrapStorage: mismatched });
      const count = async (sql: string) => (await env.db.query<{ n: number }>(sql)).rows[0]!.n;
      expect(await count(`SELECT count(*)::int AS n FROM tenants`), 'tenants committed').toBe(0);
      expect(await count(`SELECT count(*)::int AS n FROM tenant_account_joins`)).toBe(0);
      expect(await count(`SELECT count(*)::int AS n FROM dify_provision.ledger`)).toBe(0);
      expect(status!.counts).toMatchObject({ failed: 1, created: 0 });
      const { rows } = await env.db.query(`SELECT tenant_id, attempts, error FROM dify_provision.rows WHERE batch_id = 'badkey'`);
      expect(rows[0]).toMatchObject({
        attempts: 2,
        error: expect.stringMatching(/does not decrypt what the tenant's public key encrypts/),
      });
      expect(await storage.read(rows[0].tenant_id)).toBeUndefined();
      expect((await storage.list()).filter((k) => k.tenantId === rows[0].tenant_id)).toEqual([]);
    });

    it('removes the key when the transaction fails', async () => {
      await ingestCsv({ ...env, config }, csvOf([{ workspace_name: 'Rollback', owner_email: 'owner1@example.com' }]), 'rb');
      const spec = (await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'rb'`)).rows[0]!.spec;
      const real = workspaceWriter(await probeDifySchema(env.db), 200);
      let seen: string | undefined;
      const failing: WorkspaceWriter = {
        schema: real.schema,
        async insertWorkspace() {
          seen = await storage.read(spec.tenantId); // the key exists while the transaction is open
          throw new RowError('workspace_name', 'injected failure after the key was written');
        },
      };
      await expect(provisionWorkspace(spec, 1, { db: env.db, keys: rsaKeySource, storage, writer: failing })).rejects.toThrow(/injected/);
      expect(seen).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
      expect(await storage.read(spec.tenantId)).toBeUndefined();
    });

    it('removes the key when the one round trip of rows, ledger and COMMIT fails', async () => {
      await ingestCsv({ ...env, config }, csvOf([{ workspace_name: 'Rollback', owner_email: 'owner1@example.com' }]), 'rb1');
      const spec = (await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'rb1'`)).rows[0]!.spec;
      const real = workspaceWriter(await probeDifySchema(env.db), 200);
      // The statement sent with the ledger and COMMIT fails (after the key was written and proven).
      const failing: WorkspaceWriter = { ...real, statement: (ws) => ({ ...real.statement!(ws), text: 'SELECT 1/0' }) };
      let deployed = false;
      const watched = new Proxy(storage, {
        get: (target, p) =>
          p === 'deploy'
            ? async (...args: Parameters<KeyStorage['deploy']>) => {
                const d = await target.deploy(...args);
                deployed = true;
                return d;
              }
            : (Reflect.get(target, p) as unknown),
      });
      await expect(provisionWorkspace(spec, 1, { db: env.db, keys: rsaKeySource, storage: watched, writer: failing })).rejects.toThrow(
        /division by zero/,
      );
      expect(deployed).toBe(true);
      expect(await storage.read(spec.tenantId)).toBeUndefined();
      expect((await env.db.query(`SELECT count(*)::int AS n FROM tenants WHERE id = $1`, [spec.tenantId])).rows[0].n).toBe(0);
      expect((await env.db.query(`SELECT count(*)::int AS n FROM dify_provision.ledger`)).rows[0].n).toBe(0);
    });

    it('doctor finds missing, mismatched and orphan keys there, and --fix removes only orphans', async () => {
      const world = { ...env, config };
      await ingestCsv(world, csvOf([1, 2].map((i) => ({ workspace_name: `Doc ${i}`, owner_email: `owner${i}@example.com` }))), 'doc');
      await runUntilDone(world, ['doc']);
      const [a, b] = (await env.db.query<{ id: string }>(`SELECT id FROM tenants ORDER BY name`)).rows.map((r) => r.id) as [string, string];
      const other = await rsaKeySource.generate();
      // a: its key replaced by another one; b: its key gone; an orphan key for no tenant.
      const orphan = randomUUID();
      await storage.removeTenant(a);
      await storage.deploy(a, other);
      await storage.removeTenant(b);
      await storage.deploy(orphan, other);
      const opts =
        backend === 'local' ? { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0 } : { storage, minOrphanAgeSeconds: 0 };
      const kinds = (await runDoctor(env.db, opts)).map((f) => `${f.kind}:${f.tenantId}`).sort();
      expect(kinds).toEqual([`key-mismatch:${a}`, `missing-key:${b}`, `orphan-key:${orphan}`].sort());
      await runDoctor(env.db, { ...opts, fix: true });
      expect(await storage.read(orphan)).toBeUndefined();
      expect(await storage.read(a)).toBe(other.privatePem); // never replaced automatically
    });
  },
);

describe('storage settings that cannot work fail at start, clearly and without secrets', () => {
  let env: TestEnv;
  freshEnvEachTest((e) => (env = e));

  it('a bucket or container that does not exist', async () => {
    const noBucket = loadConfig({ ...s3.env, S3_BUCKET_NAME: 'nope' });
    await expect(openKeyStorage({ ...env.config, storage: noBucket.storage })).rejects.toThrow(
      /S3 bucket "nope" at http:\/\/127\.0\.0\.1:\d+ does not exist: create it/,
    );
    const noContainer = loadConfig({ ...azure.env, AZURE_BLOB_CONTAINER_NAME: 'nope' });
    await expect(openKeyStorage({ ...env.config, storage: noContainer.storage })).rejects.toThrow(
      /Azure Blob container "nope" .* does not exist/,
    );
  });

  it('google-storage and supabase (against our own servers only): a missing bucket, a wrong key', async () => {
    const open = (env2: NodeJS.ProcessEnv) => openKeyStorage({ ...env.config, storage: loadConfig(env2).storage });
    await expect(open({ STORAGE_TYPE: 'google-storage', GOOGLE_STORAGE_BUCKET_NAME: 'nope' })).rejects.toThrow(
      /Google Cloud Storage bucket "nope" at http:\/\/127\.0\.0\.1:\d+ does not exist/,
    );
    const base = { STORAGE_TYPE: 'supabase', SUPABASE_URL: supabase.url, SUPABASE_API_KEY: SUPABASE_KEY };
    await expect(open({ ...base, SUPABASE_BUCKET_NAME: 'nope' })).rejects.toThrow(/Supabase Storage bucket "nope" .* does not exist/);
    supabase.createBucket('exists');
    const err = await open({ ...base, SUPABASE_API_KEY: 'wrong-key-0123456789', SUPABASE_BUCKET_NAME: 'exists' }).catch((e: Error) => e);
    expect(String(err)).toMatch(/refused us \(HTTP 403\): check SUPABASE_API_KEY/);
    expect(String(err)).not.toContain('wrong-key-0123456789');
  });

  it('a wrong secret (Azurite checks shared-key signatures)', async () => {
    const wrongKey = Buffer.from('not the account key at all, not at all').toString('base64');
    const bad = loadConfig({ ...azure.env, AZURE_BLOB_ACCOUNT_KEY: wrongKey });
    const err = await openKeyStorage({ ...env.config, storage: bad.storage }).catch((e: Error) => e);
    expect(String(err)).toMatch(/refused us .*check AZURE_BLOB_ACCOUNT_NAME and AZURE_BLOB_ACCOUNT_KEY/);
    expect(String(err)).not.toContain(wrongKey);
  });

  it('a storage type Dify has that we do not support yet, and a key vault (refused by the commands that touch keys)', () => {
    const keys = (env: NodeJS.ProcessEnv) => () => requireConfig(loadConfig(env), 'storageDir');
    expect(keys({ STORAGE_TYPE: 'clickzetta-volume' })).toThrow(/STORAGE_TYPE: "clickzetta-volume" is not supported: .*SQL PUT/);
    expect(keys({ STORAGE_TYPE: 'ftp' })).toThrow(
      /STORAGE_TYPE: "ftp" is not supported yet \(opendal \(fs, s3\), local, s3, oci-storage, azure-blob, aliyun-oss, tencent-cos, huawei-obs, volcengine-tos, baidu-obs/,
    );
    expect(keys({ STORAGE_TYPE: 'opendal', OPENDAL_SCHEME: 'fs', OPENDAL_FS_ROOT: 'storage' })).toThrow(
      /relative to Dify's api folder; set DIFY_STORAGE_DIR/,
    );
    expect(keys({ STORAGE_TYPE: 's3', KEY_PROVIDER_TYPE: 'aws-kms' })).toThrow(/key vault/);
  });
});

describe.each<Backend>(['s3', 'azure-blob', 'opendal-s3', ...VENDOR_STORES])(
  'doctor --fix on %s with folders that are not tenant ids',
  (backend) => {
    it('leaves them alone and does not crash', async () => {
      const env = await createTestEnv();
      try {
        const storage = await openKeyStorage(await configFor(env, backend));
        const pair = await rsaKeySource.generate();
        const strangers = ['not-a-uuid', randomUUID().toUpperCase(), "x'); DROP TABLE tenants;--"];
        for (const name of strangers) await storage.deploy(name, pair);
        const orphan = randomUUID();
        await storage.deploy(orphan, pair);
        const findings = await runDoctor(env.db, { storage, fix: true, minOrphanAgeSeconds: 0 });
        expect(findings.map((f) => `${f.kind}:${f.tenantId}:${f.fixed}`)).toEqual([`orphan-key:${orphan}:true`]);
        expect(await storage.read(orphan)).toBeUndefined();
        for (const name of strangers) expect(await storage.read(name), name).toBe(pair.privatePem);
      } finally {
        await env.cleanup();
      }
    });
  },
);

describe.each<Backend>(['s3', 'azure-blob', 'opendal-s3', 'aliyun-oss', 'google-storage', 'supabase'])(
  'a planted object far larger than a key on %s',
  (backend) => {
    it('is read no further than a key file can be: doctor names it, and a read refuses it', async () => {
      const env = await createTestEnv();
      try {
        const config = await configFor(env, backend);
        const storage = await openKeyStorage(config);
        const world = { ...env, config };
        await ingestCsv(world, csvOf([{ workspace_name: 'Planted', owner_email: 'owner1@example.com' }]), 'planted');
        await runUntilDone(world, ['planted']);
        const { rows } = await env.db.query<{ id: string }>(`SELECT id FROM tenants WHERE name = 'Planted'`);
        const tenantId = rows[0]!.id;
        // Someone with write access to the bucket replaces the key with 8 MB of PEM-looking text.
        const raw = (await openObjectStore(config))!;
        const key = `${raw.prefix}${privateKeyKey(tenantId)}`;
        await raw.store.delete(key);
        await raw.store.put(key, `-----BEGIN PRIVATE KEY-----\n${'A'.repeat(8 * 1024 * 1024)}`);
        await expect(storage.read(tenantId)).rejects.toThrow(/more than 65536 bytes, more than a key file can be/);
        const findings = await runDoctor(env.db, { storage, minOrphanAgeSeconds: 0 });
        expect(findings.map((f) => `${f.kind}:${f.tenantId}`)).toEqual([`unreadable-key:${tenantId}`]);
        expect(findings[0]!.detail).toMatch(/more than 65536 bytes, more than a key file can be: not read further/);
      } finally {
        await env.cleanup();
      }
    });
  },
);
