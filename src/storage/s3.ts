// S3 and S3-compatible stores (MinIO, OCI, Ceph, …) with the AWS SDK, as Dify's `s3`,
// `oci-storage` and opendal `s3` storage types reach them.
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { PreflightError } from '../errors.js';
import { scrubbed, shownEndpoint, type ObjectStore } from './object-store.js';

export interface S3Settings {
  bucket: string;
  endpoint?: string | undefined;
  region?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  /** Path-style addressing (http://host/bucket/key), as most S3-compatible servers want. */
  forcePathStyle: boolean;
}

export function s3Store(s: S3Settings): ObjectStore {
  const client = new S3Client({
    region: s.region || 'us-east-1',
    ...(s.endpoint ? { endpoint: s.endpoint } : {}),
    forcePathStyle: s.forcePathStyle,
    // No keys: the SDK's own chain (instance role, IRSA, environment), like S3_USE_AWS_MANAGED_IAM.
    ...(s.accessKeyId && s.secretAccessKey ? { credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey } } : {}),
  });
  const endpoint = s.endpoint ? shownEndpoint(s.endpoint) : undefined;
  const description = `S3 bucket "${s.bucket}"${endpoint ? ` at ${endpoint.shown}` : ''}`;
  return {
    description,
    async put(key, body) {
      await client.send(new PutObjectCommand({ Bucket: s.bucket, Key: key, Body: body, ContentType: 'application/x-pem-file' }));
    },
    async get(key) {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket: s.bucket, Key: key }));
        return await out.Body!.transformToString('utf8');
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
      await client.send(new DeleteObjectCommand({ Bucket: s.bucket, Key: key }));
    },
    async list(prefix) {
      const out: { key: string; modified: Date }[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: prefix, ContinuationToken: token }));
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
        return new PreflightError(`${description} refused us (${err.name}): check the access key, secret and the bucket's policy`);
      }
      return new Error(`${description}: ${err.name}${status ? ` (HTTP ${status})` : ''}`);
    },
  };
}
