// Azure Blob Storage with Microsoft's SDK, as Dify's `azure-blob` storage type reaches it: the
// blob's name is Dify's storage key, with no prefix.
import { ManagedIdentityCredential } from '@azure/identity';
import { BlobServiceClient, RestError, StorageSharedKeyCredential } from '@azure/storage-blob';
import { PreflightError } from '../common/errors.js';
import { readAtMost, scrubbed, shownEndpoint, type ObjectStore } from './object-store.js';

export interface AzureBlobSettings {
  accountName: string;
  /** The account key, or "managedidentity" (as Dify spells it) for the managed identity. */
  accountKey: string;
  container: string;
  /** Default https://<account>.blob.core.windows.net */
  accountUrl?: string | undefined;
}

export function azureBlobStore(s: AzureBlobSettings): ObjectStore {
  const url = s.accountUrl || `https://${s.accountName}.blob.core.windows.net`;
  const credential =
    s.accountKey === 'managedidentity' ? new ManagedIdentityCredential() : new StorageSharedKeyCredential(s.accountName, s.accountKey);
  const container = new BlobServiceClient(url, credential).getContainerClient(s.container);
  const endpoint = shownEndpoint(url);
  const description = `Azure Blob container "${s.container}" at ${endpoint.shown}`;
  return {
    description,
    async put(key, body) {
      await container
        .getBlockBlobClient(key)
        .upload(body, Buffer.byteLength(body), { blobHTTPHeaders: { blobContentType: 'application/x-pem-file' } });
    },
    async get(key, limit) {
      try {
        const body = (await container.getBlobClient(key).download()).readableStreamBody;
        return body ? await readAtMost(body as unknown as AsyncIterable<Uint8Array>, limit) : '';
      } catch (err) {
        // A download's 404 may carry no code (a HEAD first): the container itself is checked at start.
        if (err instanceof RestError && err.statusCode === 404 && err.code !== 'ContainerNotFound') return undefined;
        throw err;
      }
    },
    async delete(key) {
      await container.getBlobClient(key).deleteIfExists();
    },
    async list(prefix) {
      const out: { key: string; modified: Date }[] = [];
      for await (const b of container.listBlobsFlat({ prefix })) out.push({ key: b.name, modified: b.properties.lastModified });
      return out;
    },
    explain(err) {
      if (!(err instanceof RestError)) return scrubbed(err, endpoint.scrub);
      if (err.code === 'ContainerNotFound')
        return new PreflightError(`${description} does not exist: create it (dify-provision never creates containers)`);
      if (err.statusCode === 403)
        return new PreflightError(
          `${description} refused us (${err.code ?? 'HTTP 403'}): check AZURE_BLOB_ACCOUNT_NAME and AZURE_BLOB_ACCOUNT_KEY`,
        );
      return new Error(`${description}: ${err.code ?? 'error'}${err.statusCode ? ` (HTTP ${err.statusCode})` : ''}`);
    },
  };
}
