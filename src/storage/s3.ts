// S3 and S3-compatible stores (MinIO, OCI, Ceph, …) with the AWS SDK, as Dify's `s3`,
// `oci-storage` and opendal `s3` storage types reach them; and the S3-compatible APIs of the
// Chinese clouds' object stores (Aliyun OSS, Tencent COS, Huawei OBS, Volcengine TOS, Baidu BOS),
// whose settings src/config/dify-storage.ts derives from Dify's own variables.
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { PreflightError } from '../common/errors.js';
import { readAtMost, scrubbed, shownEndpoint, type ObjectStore } from './object-store.js';

export interface S3Settings {
  bucket: string;
  endpoint?: string | undefined;
  region?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  /** Path-style addressing (http://host/bucket/key), as most S3-compatible servers want. */
  forcePathStyle: boolean;
  /** Whose store it is, for messages ("Aliyun OSS"); default "S3". */
  service?: string | undefined;
  /**
   * A domain bound to the bucket (Tencent COS's custom domain): requests go to
   * `<bucketUrl>/<key>`, with no bucket in the host or path.
   */
  bucketUrl?: string | undefined;
  /**
   * Send a checksum only when S3 requires one (the SDK's newer default adds CRC32 headers to
   * every upload, which S3-compatible services do not all accept).
   */
  checksumsWhenRequired?: boolean | undefined;
  /** The variables holding the credentials, for the "refused us" message. */
  credentialNames?: string | undefined;
}

export function s3Store(s: S3Settings): ObjectStore {
  const client = new S3Client({
    region: s.region || 'us-east-1',
    ...(s.endpoint ? { endpoint: s.endpoint } : {}),
    forcePathStyle: s.forcePathStyle,
    ...(s.bucketUrl ? { bucketEndpoint: true } : {}),
    ...(s.checksumsWhenRequired ? { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' } : {}),
    // No keys: the SDK's own chain (instance role, IRSA, environment), like S3_USE_AWS_MANAGED_IAM.
    ...(s.accessKeyId && s.secretAccessKey ? { credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey } } : {}),
  });
  const address = s.bucketUrl ?? s.endpoint;
  const endpoint = address ? shownEndpoint(address) : undefined;
  const description = `${s.service ?? 'S3'} bucket "${s.bucket}"${endpoint ? ` at ${endpoint.shown}` : ''}`;
  // With a bucket domain the SDK takes the bucket's URL where the bucket's name would go.
  const Bucket = s.bucketUrl ?? s.bucket;
  return {
    description,
    async put(key, body) {
      await client.send(new PutObjectCommand({ Bucket, Key: key, Body: body, ContentType: 'application/x-pem-file' }));
    },
    async get(key, limit) {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket, Key: key }));
        return await readAtMost(out.Body as unknown as AsyncIterable<Uint8Array>, limit);
      } catch (err) {
        if (
          err instanceof S3ServiceException &&
          (err.name === 'NoSuchKey' || err.$metadata.httpStatusCode === 404) &&
          err.name !== 'NoSuchBucket'
        )
          return undefined;
        throw err;
      }
    },
    async delete(key) {
      await client.send(new DeleteObjectCommand({ Bucket, Key: key }));
    },
    async list(prefix) {
      const out: { key: string; modified: Date }[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }));
        for (const o of page.Contents ?? []) if (o.Key) out.push({ key: o.Key, modified: o.LastModified ?? new Date(0) });
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return out;
    },
    explain(err) {
      if (!(err instanceof S3ServiceException)) return endpoint ? scrubbed(err, endpoint.scrub) : scrubbed(err, (t) => t);
      const status = err.$metadata.httpStatusCode;
      if (err.name === 'NoSuchBucket')
        return new PreflightError(`${description} does not exist: create it in your object store (dify-provision never creates buckets)`);
      if (status === 403 || err.name === 'AccessDenied' || err.name === 'SignatureDoesNotMatch' || err.name === 'InvalidAccessKeyId') {
        return new PreflightError(
          `${description} refused us (${err.name}): check ${s.credentialNames ?? 'the access key, secret'} and the bucket's policy`,
        );
      }
      return new Error(`${description}: ${err.name}${status ? ` (HTTP ${status})` : ''}`);
    },
  };
}
