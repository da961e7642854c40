// Supabase Storage with Supabase's official client (@supabase/storage-js 2.109, the last that runs
// on Node 20), as Dify's `supabase` type reaches it (api/extensions/storage/supabase_storage.py,
// through supabase-py's storage client): the object's path in the bucket is Dify's storage key.
// Dify creates its bucket when missing; we never create buckets, so a missing one stops us at start.
// Tested against a small HTTP server of our own (test/helpers/fake-supabase.ts) that speaks only
// the part of Supabase Storage's REST API this client uses here; never against Supabase.
import { StorageApiError, StorageClient, StorageError } from '@supabase/storage-js';
import { PreflightError } from '../common/errors.js';
import { readAtMost, scrubbed, shownEndpoint, type ObjectStore } from './object-store.js';

export interface SupabaseSettings {
  /** SUPABASE_URL: the project's URL (storage is under /storage/v1). */
  url: string;
  /** SUPABASE_API_KEY (a service-role key, as Dify's needs to create buckets). */
  apiKey: string;
  bucket: string;
}

export function supabaseStore(s: SupabaseSettings): ObjectStore {
  const base = s.url.replace(/\/+$/, '');
  const client = new StorageClient(`${base}/storage/v1`, { apikey: s.apiKey, Authorization: `Bearer ${s.apiKey}` });
  const from = () => client.from(s.bucket);
  const endpoint = shownEndpoint(base);
  const scrub = (t: string) => endpoint.scrub(t.split(s.apiKey).join('***'));
  const description = `Supabase Storage bucket "${s.bucket}" at ${endpoint.shown}`;
  const ok = <T>(r: { data: T; error: null } | { data: null; error: StorageError }): T => {
    if (r.error) throw r.error;
    return r.data;
  };
  // Supabase Storage answers a missing object with HTTP 400 and statusCode "404" in the body (newer: HTTP 404).
  const notFound = (err: unknown) =>
    err instanceof StorageApiError && (Number(err.status) === 404 || String(err.statusCode) === '404') && !/bucket/i.test(err.message);
  return {
    description,
    async put(key, body) {
      ok(await from().upload(key, Buffer.from(body, 'utf8'), { contentType: 'application/x-pem-file', upsert: false }));
    },
    async get(key, limit) {
      const r = await from().download(key).asStream();
      if (r.error) {
        if (notFound(r.error)) return undefined;
        throw r.error;
      }
      return await readAtMost(r.data as unknown as AsyncIterable<Uint8Array>, limit);
    },
    async delete(key) {
      ok(await from().remove([key]));
    },
    async list(prefix) {
      // Supabase lists one folder at a time (folders have no id): walked down from the prefix's folder.
      const out: { key: string; modified: Date }[] = [];
      const walk = async (folder: string): Promise<void> => {
        for (let offset = 0; ; offset += 1000) {
          const page = ok(await from().list(folder.replace(/\/$/, ''), { limit: 1000, offset, sortBy: { column: 'name', order: 'asc' } }));
          for (const e of page) {
            const key = `${folder}${e.name}`;
            if (e.id === null) {
              if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(`${key}/`);
            } else if (key.startsWith(prefix)) out.push({ key, modified: new Date(e.updated_at ?? e.created_at ?? 0) });
          }
          if (page.length < 1000) return;
        }
      };
      await walk(prefix.slice(0, prefix.lastIndexOf('/') + 1));
      return out;
    },
    explain(err) {
      if (!(err instanceof StorageError)) return scrubbed(err, scrub);
      const status = err instanceof StorageApiError ? Number(err.status) : undefined;
      if (/bucket not found/i.test(err.message))
        return new PreflightError(
          `${description} does not exist: create it (Dify creates it at its first start; dify-provision never creates buckets)`,
        );
      if (status === 401 || status === 403) return new PreflightError(`${description} refused us (HTTP ${status}): check SUPABASE_API_KEY`);
      return new Error(`${description}: ${scrub(err.message)}${status ? ` (HTTP ${status})` : ''}`);
    },
  };
}
