// Small HTTP servers of our own standing in for Google Cloud Storage and Supabase Storage, which
// have no server that installs here. Each speaks ONLY the subset of its service's REST API that
// the official Node client uses in src/storage/gcs.ts and src/storage/supabase.ts, in memory:
//   GCS JSON API: POST /upload/storage/v1/b/<bucket>/o?uploadType=multipart (multipart/related:
//     the metadata JSON with the name, then the bytes), GET /storage/v1/b/<bucket>/o/<name>?alt=media,
//     DELETE /storage/v1/b/<bucket>/o/<name>, GET /storage/v1/b/<bucket>/o?prefix=&pageToken= (2 a
//     page) — on an emulator host the client sends all but the upload without /storage/v1 (/b/…);
//   Supabase Storage: POST /storage/v1/object/<bucket>/<path> (x-upsert), GET
//     /storage/v1/object/<bucket>/<path>, DELETE /storage/v1/object/<bucket> {prefixes},
//     POST /storage/v1/object/list/<bucket> {prefix, limit, offset} (one folder level, folders with
//     id null), an apikey/Bearer check.
// Their error bodies are the services' as documented (GCS {error: {code, message}}; Supabase HTTP
// 400 with {statusCode: "404", error, message}). Tests say: "tested against … only".
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

interface Obj {
  body: Buffer;
  updated: string;
  id: string;
}
export interface FakeStore {
  url: string;
  buckets: Map<string, Map<string, Obj>>;
  createBucket(name: string): void;
  /** Requests seen, as "METHOD path" (no query), for tests that check what the client sent. */
  requests: string[];
  stop(): Promise<void>;
}

const read = (req: IncomingMessage) =>
  new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

async function serve(handler: (req: IncomingMessage, res: ServerResponse, store: FakeStore) => Promise<void>): Promise<FakeStore> {
  const buckets = new Map<string, Map<string, Obj>>();
  const requests: string[] = [];
  let store: FakeStore;
  const server: Server = createServer((req, res) => {
    requests.push(`${req.method} ${(req.url ?? '').split('?')[0]}`);
    handler(req, res, store).catch((err: unknown) => json(res, 500, { error: { code: 500, message: String(err) } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  store = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    buckets,
    requests,
    createBucket: (name) => void buckets.set(name, buckets.get(name) ?? new Map()),
    stop: () => new Promise((r) => server.close(() => r())),
  };
  return store;
}

/** GCS: point the client at it with STORAGE_EMULATOR_HOST=<url>. */
export function startFakeGcs(): Promise<FakeStore> {
  return serve(async (req, res, store) => {
    const url = new URL(req.url ?? '/', 'http://x');
    // The client sends media downloads to <STORAGE_EMULATOR_HOST>/b/… (no /storage/v1): both are served.
    const m = /^(\/upload)?(?:\/storage\/v1)?\/b\/([^/]+)\/o(?:\/(.+))?$/.exec(url.pathname);
    if (!m) return json(res, 404, { error: { code: 404, message: `no route ${url.pathname}` } });
    const bucket = store.buckets.get(decodeURIComponent(m[2]!));
    if (!bucket) return json(res, 404, { error: { code: 404, message: 'The specified bucket does not exist.' } });
    const name = m[3] === undefined ? undefined : decodeURIComponent(m[3]);
    const resource = (n: string, o: Obj) => ({
      kind: 'storage#object',
      name: n,
      bucket: m[2],
      size: String(o.body.length),
      updated: o.updated,
      id: o.id,
    });
    if (m[1] && req.method === 'POST') {
      const body = await read(req);
      const boundary = /boundary="?([^";]+)"?/.exec(req.headers['content-type'] ?? '')?.[1];
      let objectName = url.searchParams.get('name') ?? undefined;
      let content = body;
      if (boundary) {
        const parts = body
          .toString('latin1')
          .split(`--${boundary}`)
          .slice(1, -1)
          .map((p) => p.replace(/^\r\n/, '').replace(/\r\n$/, ''));
        const [head, bytes] = parts.map((p) => p.slice(p.indexOf('\r\n\r\n') + 4));
        objectName = (JSON.parse(head!) as { name?: string }).name ?? objectName;
        content = Buffer.from(bytes!, 'latin1');
      }
      if (!objectName) return json(res, 400, { error: { code: 400, message: 'Required object name' } });
      const o = { body: content, updated: new Date().toISOString(), id: randomUUID() };
      bucket.set(objectName, o);
      return json(res, 200, resource(objectName, o));
    }
    if (name !== undefined) {
      const o = bucket.get(name);
      if (req.method === 'DELETE') {
        if (!o) return json(res, 404, { error: { code: 404, message: `No such object: ${m[2]}/${name}` } });
        bucket.delete(name);
        res.writeHead(204).end();
        return;
      }
      if (!o) return json(res, 404, { error: { code: 404, message: `No such object: ${m[2]}/${name}` } });
      if (url.searchParams.get('alt') === 'media') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': o.body.length });
        res.end(o.body);
        return;
      }
      return json(res, 200, resource(name, o));
    }
    // List: lexicographic, two a page (so the client's paging is exercised).
    const prefix = url.searchParams.get('prefix') ?? '';
    const names = [...bucket.keys()].filter((k) => k.startsWith(prefix)).sort();
    const start = Number(url.searchParams.get('pageToken') ?? 0);
    const page = names.slice(start, start + 2);
    return json(res, 200, {
      kind: 'storage#objects',
      items: page.map((n) => resource(n, bucket.get(n)!)),
      ...(start + 2 < names.length ? { nextPageToken: String(start + 2) } : {}),
    });
  });
}

/** Supabase: SUPABASE_URL=<url>, SUPABASE_API_KEY=<apiKey>. */
export function startFakeSupabase(apiKey: string): Promise<FakeStore> {
  return serve(async (req, res, store) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const err = (statusCode: string, error: string, message: string) => json(res, 400, { statusCode, error, message });
    if (req.headers.apikey !== apiKey || req.headers.authorization !== `Bearer ${apiKey}`)
      return json(res, 403, { statusCode: '403', error: 'Unauthorized', message: 'Invalid Compact JWS' });
    const list = /^\/storage\/v1\/object\/list\/([^/]+)$/.exec(url.pathname);
    const obj = /^\/storage\/v1\/object\/([^/]+)(?:\/(.+))?$/.exec(url.pathname);
    const bucketName = decodeURIComponent((list ?? obj)?.[1] ?? '');
    const bucket = store.buckets.get(bucketName);
    if (!list && !obj) return err('404', 'not_found', `no route ${url.pathname}`);
    if (!bucket) return err('404', 'Bucket not found', 'Bucket not found');
    if (list) {
      const {
        prefix = '',
        limit = 100,
        offset = 0,
      } = JSON.parse((await read(req)).toString() || '{}') as { prefix?: string; limit?: number; offset?: number };
      const folder = prefix ? `${prefix.replace(/\/$/, '')}/` : '';
      const entries = new Map<string, unknown>();
      for (const [k, o] of [...bucket.entries()].sort(([a], [b]) => a.localeCompare(b))) {
        if (!k.startsWith(folder)) continue;
        const rest = k.slice(folder.length);
        const slash = rest.indexOf('/');
        const entryName = slash < 0 ? rest : rest.slice(0, slash);
        if (entries.has(entryName)) continue;
        entries.set(
          entryName,
          slash < 0
            ? {
                name: entryName,
                id: o.id,
                updated_at: o.updated,
                created_at: o.updated,
                last_accessed_at: o.updated,
                metadata: { size: o.body.length },
              }
            : { name: entryName, id: null, updated_at: null, created_at: null, last_accessed_at: null, metadata: null },
        );
      }
      return json(res, 200, [...entries.values()].slice(offset, offset + limit));
    }
    const path = obj![2] === undefined ? undefined : decodeURIComponent(obj![2]);
    if (req.method === 'DELETE' && path === undefined) {
      const { prefixes = [] } = JSON.parse((await read(req)).toString() || '{}') as { prefixes?: string[] };
      const removed = prefixes.filter((p) => bucket.delete(p)).map((p) => ({ name: p, bucket_id: bucketName }));
      return json(res, 200, removed);
    }
    if (path === undefined) return err('400', 'invalid', 'no object path');
    if (req.method === 'POST' || req.method === 'PUT') {
      const body = await read(req);
      if (bucket.has(path) && req.headers['x-upsert'] !== 'true') return err('409', 'Duplicate', 'The resource already exists');
      const o = { body, updated: new Date().toISOString(), id: randomUUID() };
      bucket.set(path, o);
      return json(res, 200, { Key: `${bucketName}/${path}`, Id: o.id });
    }
    if (req.method === 'GET') {
      const o = bucket.get(path);
      if (!o) return err('404', 'not_found', 'Object not found');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': o.body.length });
      res.end(o.body);
      return;
    }
    return err('405', 'invalid', `method ${req.method}`);
  });
}
