// What the invitation tests from the CLI share: the operator's key pair in files, and Dify's
// settings for its own Redis (the tests' Redis server, in a logical database of its own) as .env lines.
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inject } from 'vitest';

/** `dir/op.pub` and `dir/op.key` (0600): the operator's RSA key pair. */
export async function operatorKeyFiles(dir: string): Promise<{ pub: string; key: string }> {
  const operator = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const pub = join(dir, 'op.pub');
  const key = join(dir, 'op.key');
  await writeFile(pub, operator.publicKey);
  await writeFile(key, operator.privateKey, { mode: 0o600 });
  return { pub, key };
}

/** Dify's REDIS_* lines naming the tests' Redis, database `db`, keys under `prefix`. */
export function difyRedisLines(db: number, prefix: string): string[] {
  const u = new URL(inject('redisUrl'));
  return [`REDIS_HOST=${u.hostname}`, `REDIS_PORT=${u.port || 6379}`, `REDIS_DB=${db}`, `REDIS_KEY_PREFIX=${prefix}`];
}
