// Google Cloud Storage with Google's official Node client (@google-cloud/storage 7, which runs on
// Node 20), as Dify's `google-storage` type reaches it (api/extensions/storage/google_cloud_storage.py):
// the object's name is Dify's storage key, with no prefix. Credentials: the service account JSON of
// GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64, or (empty) Application Default Credentials, as Dify's.
// The client honours STORAGE_EMULATOR_HOST, as Dify's Python client does.
// Tested against a small HTTP server of our own (test/helpers/fake-gcs.ts) that speaks only the
// part of the GCS JSON API this client uses here; never against Google's service.
import { ApiError, Storage } from '@google-cloud/storage';
import { PreflightError } from '../common/errors.js';
import { readAtMost, scrubbed, type ObjectStore } from './object-store.js';

export interface GcsSettings {
  bucket: string;
  /** The service account key (parsed JSON); absent: Application Default Credentials. */
  serviceAccount?: { client_email?: string; private_key?: string; project_id?: string } | undefined;
}

export function gcsStore(s: GcsSettings): ObjectStore {
  const storage = new Storage({
    ...(s.serviceAccount
      ? { credentials: s.serviceAccount, ...(s.serviceAccount.project_id ? { projectId: s.serviceAccount.project_id } : {}) }
      : {}),
    retryOptions: { autoRetry: true, maxRetries: 3 },
  });
  const bucket = storage.bucket(s.bucket);
  const secret = s.serviceAccount?.private_key;
  const scrub = (t: string) => (secret ? t.split(secret).join('***') : t);
  const description = `Google Cloud Storage bucket "${s.bucket}"${process.env.STORAGE_EMULATOR_HOST ? ` at ${storage.apiEndpoint}` : ''}`;
  return {
    description,
    async put(key, body) {
      await bucket.file(key).save(body, { resumable: false, contentType: 'application/x-pem-file', validation: false });
    },
    async get(key, limit) {
      try {
        return await readAtMost(bucket.file(key).createReadStream({ validation: false }), limit);
      } catch (err) {
        if (err instanceof ApiError && err.code === 404 && !/bucket/i.test(err.message)) return undefined;
        throw err;
      }
    },
    async delete(key) {
      await bucket.file(key).delete({ ignoreNotFound: true });
    },
    async list(prefix) {
      const [files] = await bucket.getFiles({ prefix, autoPaginate: true });
      return files.map((f) => ({ key: f.name, modified: new Date(String(f.metadata.updated ?? 0)) }));
    },
    explain(err) {
      if (!(err instanceof ApiError)) return scrubbed(err, scrub);
      if (err.code === 404 && /bucket/i.test(err.message))
        return new PreflightError(`${description} does not exist: create it (dify-provision never creates buckets)`);
      if (err.code === 401 || err.code === 403)
        return new PreflightError(
          `${description} refused us (HTTP ${err.code}): check GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64 and the bucket's permissions`,
        );
      return new Error(`${description}: ${scrub(err.message)}${err.code ? ` (HTTP ${err.code})` : ''}`);
    },
  };
}
