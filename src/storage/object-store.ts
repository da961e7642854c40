// Keys in an object store (S3-compatible, Azure Blob): one request writes the whole object, so
// nothing partial is ever visible; it is read back and proven before the transaction commits,
// and removed when the transaction fails. A backend only needs these five verbs.
import { randomBytes, randomUUID } from 'node:crypto';
import { proveStoredKey } from '../crypto/rsa-keys.js';
import { PreflightError } from '../common/errors.js';
import { privateKeyKey, type KeyStorage, type StoredKey } from './key-storage.js';
import { MAX_KEY_BYTES } from './key-folders.js';

/**
 * The first `limit` + 1 bytes of a body as text, the rest never read: leaving the loop early
 * destroys (cancels) the stream, so the connection stops delivering it.
 */
export async function readAtMost(body: AsyncIterable<Uint8Array>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    length += chunk.byteLength;
    if (length > limit) break;
  }
  return Buffer.concat(chunks)
    .subarray(0, limit + 1)
    .toString('utf8');
}

/** A key's text as read from the store: refused whole when it is longer than a key file can be. */
async function keyText(store: ObjectStore, key: string): Promise<string | undefined> {
  const text = await store.get(key, MAX_KEY_BYTES);
  if (text !== undefined && Buffer.byteLength(text, 'utf8') > MAX_KEY_BYTES) {
    throw new Error(`${key} is more than ${MAX_KEY_BYTES} bytes, more than a key file can be: not read further`);
  }
  return text;
}

export interface ObjectStore {
  /** "S3 bucket b at https://…" — never a credential. */
  readonly description: string;
  put(key: string, body: string): Promise<void>;
  /**
   * The object's text, read no further than `limit` bytes and one more (a planted object of a
   * gigabyte costs a key's read, not the process's memory); undefined when there is no such object.
   */
  get(key: string, limit: number): Promise<string | undefined>;
  delete(key: string): Promise<void>;
  /** Keys under `prefix`, with their last-modified time. */
  list(prefix: string): Promise<{ key: string; modified: Date }[]>;
  /** A store that does not exist (no bucket/container) or refuses us: a clear, secret-free error. */
  explain(err: unknown): Error;
}

/**
 * An endpoint as messages show it: no user info (S3_ENDPOINT=https://key:secret@host), no query
 * (a SAS token in AZURE_BLOB_ACCOUNT_URL), no fragment. `scrub` removes those parts from any
 * text (an SDK's error message), in case a library repeats the address it was given.
 */
export function shownEndpoint(url: string): { shown: string; scrub(text: string): string } {
  let shown: string;
  const secrets: string[] = [];
  try {
    const u = new URL(url);
    for (const part of [u.username, u.password, u.search.slice(1), u.hash.slice(1)]) {
      if (part) secrets.push(part, decodeURIComponent(part));
    }
    shown = `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    shown = '(an endpoint that is not a valid URL)';
    secrets.push(url);
  }
  const sorted = [...new Set(secrets.filter((p) => p.length >= 3))].sort((a, b) => b.length - a.length);
  return { shown, scrub: (text) => sorted.reduce((t, secret) => t.split(secret).join('***'), text) };
}

/** An error for messages and logs: its text without the endpoint's secrets. */
export function scrubbed(err: unknown, scrub: (text: string) => string): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  const clean = scrub(e.message);
  if (clean !== e.message) e.message = clean;
  if (e.stack) e.stack = scrub(e.stack);
  return e;
}

/**
 * The prefix Dify's storage root gives every key inside the store (opendal's OPENDAL_S3_ROOT), as
 * OpenDAL builds it: its normalize_root drops empty segments (`dify//edge` is `/dify/edge/`) and
 * build_abs_path leaves out the leading slash. Keys land where Dify reads them.
 */
export function rootPrefix(root: string): string {
  const segments = root
    .split('/')
    .filter((s) => s !== '')
    .join('/');
  return segments ? `${segments}/` : '';
}
/**
 * `prefix` is put before every key as it is (Dify's storage root, as the backend's own client
 * builds it: rootPrefix for OpenDAL, ALIYUN_OSS_PATH joined for OSS).
 */
export function objectKeyStorage(store: ObjectStore, prefix = ''): KeyStorage {
  const join = (key: string) => `${prefix}${key}`;
  const keyOf = (tenantId: string) => join(privateKeyKey(tenantId));
  const privkeys = join('privkeys/');
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw store.explain(err);
    }
  };
  return {
    description: `${store.description}${prefix ? ` under ${prefix}` : ''}`,
    async check() {
      // A name Dify never reads: written, read back, deleted.
      const probe = join(`dify-provision-probe/${randomUUID()}`);
      const body = randomBytes(16).toString('hex');
      await call(() => store.put(probe, body));
      const back = await call(() => store.get(probe, MAX_KEY_BYTES));
      await call(() => store.delete(probe));
      if (back !== body) throw new PreflightError(`${store.description}: a probe object did not read back as written`);
    },
    async deploy(tenantId, keys) {
      const key = keyOf(tenantId);
      const remove = () => call(() => store.delete(key));
      await call(() => store.put(key, keys.privatePem));
      try {
        const back = await call(() => keyText(store, key));
        if (back === undefined) throw new Error(`${key} is not readable right after writing it`);
        await proveStoredKey(back, keys, `key ${key}`);
      } catch (err) {
        await remove().catch(() => {});
        throw err;
      }
      return { location: `${store.description}: ${key}`, remove };
    },
    async list(): Promise<StoredKey[]> {
      const out: StoredKey[] = [];
      for (const o of await call(() => store.list(privkeys))) {
        const m = /^([^/]+)\/(.+)$/.exec(o.key.slice(privkeys.length));
        if (m) out.push({ tenantId: m[1]!, name: m[2]!, modified: o.modified, kind: 'file' });
      }
      return out;
    },
    read: (tenantId) => call(() => keyText(store, keyOf(tenantId))),
    async removeTenant(tenantId) {
      for (const o of await call(() => store.list(join(`privkeys/${tenantId}/`)))) await call(() => store.delete(o.key));
    },
  };
}
