// A file sent to the API (the raw body, or one part of a multipart form) goes to a private temp
// folder of its own, counted as it streams: past the cap the upload is refused (413) and what was
// written is removed; a Content-Length over the cap is refused before a byte is read. The folder
// is removed once the request is answered, whatever happened. The file is spooled (never held
// in memory) because a strict ingest reads it twice and an Idempotency-Key compares its hash.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ProvisionError } from '../../common/errors.js';
import { sizeWords } from '../../common/limits.js';

export class UploadTooLargeError extends ProvisionError {
  override readonly name: string = 'UploadTooLargeError';
  readonly code = 'UPLOAD_TOO_LARGE';
  override readonly httpStatus = 413;
  constructor(cap: number) {
    super(`the upload is over the limit of ${sizeWords(cap)} (the dashboard's --max-bytes): nothing was stored; split the file`);
  }
}

export interface Spooled {
  /** The file, in a folder only this request uses. */
  path: string;
  sha256: string;
  bytes: number;
}

export interface UploadDir {
  /** Streams `input` into a new file named `name` (a safe stem), refusing it past `cap` bytes. */
  spool(input: Readable, name: string, cap: number): Promise<Spooled>;
  /** Removes the folder and everything in it. */
  remove(): Promise<void>;
}

/** A new private folder under `parent` (default: the system temp dir) for one request's upload. */
export async function uploadDir(parent = tmpdir()): Promise<UploadDir> {
  const dir = await mkdtemp(join(parent, 'dify-provision-upload-'));
  return {
    async spool(input, name, cap) {
      const path = join(
        dir,
        name
          .replace(/[^A-Za-z0-9._-]+/g, '-')
          .replace(/^[^A-Za-z0-9]+/, '')
          .slice(0, 60) || 'upload',
      );
      const hash = createHash('sha256');
      let bytes = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          bytes += chunk.length;
          if (bytes > cap) return done(new UploadTooLargeError(cap));
          hash.update(chunk);
          done(null, chunk);
        },
      });
      await pipeline(input, counter, createWriteStream(path, { mode: 0o600, flags: 'wx' }));
      return { path, sha256: hash.digest('hex'), bytes };
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A Content-Length that is over the cap already (refused before reading). */
export function declaredTooLarge(contentLength: string | undefined, cap: number): boolean {
  return contentLength !== undefined && Number(contentLength) > cap;
}
