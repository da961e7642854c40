// Real servers speaking the object-store protocols, on loopback: s3rver (S3) in this process,
// Azurite (Azure Blob, Microsoft's emulator) as a child process.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { projectFile } from '../../src/common/project-files.js';
import { freePort } from '../../src/services/local-services.js';

export interface S3Server {
  endpoint: string;
  bucket: string;
  createBucket(name: string): Promise<void>;
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

/** s3rver serves S3's REST API (it does not check signatures: Azurite's test covers a wrong secret). */
export async function startS3(dir: string, bucket = 'dify'): Promise<S3Server> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const server = new S3rver({
    port,
    address: '127.0.0.1',
    directory: dir,
    silent: true,
    configureBuckets: [{ name: bucket, configs: [] }],
  });
  await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    env: {
      STORAGE_TYPE: 's3',
      S3_ENDPOINT: endpoint,
      S3_BUCKET_NAME: bucket,
      S3_ACCESS_KEY: 'S3RVER',
      S3_SECRET_KEY: 'S3RVER',
      S3_REGION: 'us-east-1',
      S3_ADDRESS_STYLE: 'path',
    },
    async createBucket(name) {
      const client = new S3Client({
        endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      });
      await client.send(new CreateBucketCommand({ Bucket: name }));
      client.destroy();
    },
    stop: () => server.close(),
  };
}

export const AZURITE_ACCOUNT = 'devstoreaccount1';
// Azurite's published development key (not a secret: it is in Microsoft's documentation).
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteServer {
  accountUrl: string;
  container: string;
  createContainer(name: string): Promise<void>;
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function startAzurite(dir: string, container = 'dify'): Promise<AzuriteServer> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    [
      projectFile('node_modules', 'azurite', 'dist', 'src', 'blob', 'main.js'),
      '--blobHost',
      '127.0.0.1',
      '--blobPort',
      String(port),
      '-l',
      dir,
      '--skipApiVersionCheck',
      '--silent',
      '--loose',
    ],
    { stdio: 'ignore' },
  );
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => (s.end(), r(true)));
      s.on('error', () => r(false));
    });
    if (up) break;
    if (i > 300) throw new Error('azurite did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  const accountUrl = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  const service = new BlobServiceClient(accountUrl, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY));
  const createContainer = async (name: string) => void (await service.getContainerClient(name).createIfNotExists());
  await createContainer(container);
  return {
    accountUrl,
    container,
    createContainer,
    env: {
      STORAGE_TYPE: 'azure-blob',
      AZURE_BLOB_ACCOUNT_NAME: AZURITE_ACCOUNT,
      AZURE_BLOB_ACCOUNT_KEY: AZURITE_KEY,
      AZURE_BLOB_CONTAINER_NAME: container,
      AZURE_BLOB_ACCOUNT_URL: accountUrl,
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    },
  };
}

/**
 * Dify's variables for each S3-compatible store of the Chinese clouds, pointing at a local S3
 * server (s3rver): an endpoint given as an IP address is addressed path-style, so s3rver stands in
 * for OSS, COS (through TENCENT_COS_CUSTOM_DOMAIN, COS's only endpoint setting), OBS, TOS and BOS.
 * s3rver checks no signature: these tests prove where keys go and what we do with them, not that
 * the vendor accepts our requests.
 */
export const VENDOR_STORES = ['aliyun-oss', 'tencent-cos', 'huawei-obs', 'volcengine-tos', 'baidu-obs'] as const;
export type VendorStore = (typeof VENDOR_STORES)[number];
/** The secret in every vendor's settings: s3rver ignores it; tests check it is never printed. */
export const VENDOR_SECRET = 'Vendor-Secret-5f2a9c0e71d4';
export function vendorEnv(type: VendorStore, endpoint: string, bucket: string, folder = ''): NodeJS.ProcessEnv {
  const hostPort = new URL(endpoint).host;
  switch (type) {
    case 'aliyun-oss':
      return {
        STORAGE_TYPE: type,
        ALIYUN_OSS_BUCKET_NAME: bucket,
        ALIYUN_OSS_ACCESS_KEY: 'S3RVER',
        ALIYUN_OSS_SECRET_KEY: VENDOR_SECRET,
        ALIYUN_OSS_ENDPOINT: endpoint,
        ALIYUN_OSS_REGION: 'cn-hangzhou',
        ALIYUN_OSS_AUTH_VERSION: 'v4',
        ALIYUN_OSS_PATH: folder,
      };
    case 'tencent-cos':
      return {
        STORAGE_TYPE: type,
        TENCENT_COS_BUCKET_NAME: bucket,
        TENCENT_COS_SECRET_ID: 'S3RVER',
        TENCENT_COS_SECRET_KEY: VENDOR_SECRET,
        TENCENT_COS_REGION: 'ap-guangzhou',
        TENCENT_COS_SCHEME: 'http',
        TENCENT_COS_CUSTOM_DOMAIN: hostPort,
      };
    case 'huawei-obs':
      return {
        STORAGE_TYPE: type,
        HUAWEI_OBS_BUCKET_NAME: bucket,
        HUAWEI_OBS_ACCESS_KEY: 'S3RVER',
        HUAWEI_OBS_SECRET_KEY: VENDOR_SECRET,
        HUAWEI_OBS_SERVER: endpoint,
      };
    case 'volcengine-tos':
      return {
        STORAGE_TYPE: type,
        VOLCENGINE_TOS_BUCKET_NAME: bucket,
        VOLCENGINE_TOS_ACCESS_KEY: 'S3RVER',
        VOLCENGINE_TOS_SECRET_KEY: VENDOR_SECRET,
        VOLCENGINE_TOS_ENDPOINT: endpoint,
        VOLCENGINE_TOS_REGION: 'cn-beijing',
      };
    case 'baidu-obs':
      return {
        STORAGE_TYPE: type,
        BAIDU_OBS_BUCKET_NAME: bucket,
        BAIDU_OBS_ACCESS_KEY: 'S3RVER',
        BAIDU_OBS_SECRET_KEY: VENDOR_SECRET,
        BAIDU_OBS_ENDPOINT: endpoint,
      };
  }
}
