// What the invitation tests from the CLI share: the operator's key pair in files, and Dify's
// settings for its own Redis (the tests' Redis server, in a logical database of its own) as .env lines.
import { generateKeyPairSync, pbkdf2Sync, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { expect, inject } from 'vitest';
import type { Db } from '../../src/db/pool.js';
import type { InvitationSettings } from '../../src/config/dify-env.js';

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

/** The console address the invitation tests give Dify (links are `${CONSOLE}/activate?…`). */
export const CONSOLE = 'https://dify.example.com';

/** An operator's RSA key pair as PEM text (public SPKI, private PKCS#1), for sealing links in-process. */
export function operatorPems(): { PUBLIC: string; PRIVATE: string } {
  const operator = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    PUBLIC: operator.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    PRIVATE: operator.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
  };
}

/**
 * Dify's invitation settings against the tests' Redis, database `db`, keys under `prefix`; with
 * `consoleWebUrl: undefined` a Dify Redis only (no links can be issued).
 */
export function difyInvitationSettings(
  db: number,
  prefix: string,
  opts: { expiryHours?: number; consoleWebUrl?: string | undefined } = {},
): InvitationSettings {
  const u = new URL(inject('redisUrl'));
  const consoleWebUrl = 'consoleWebUrl' in opts ? opts.consoleWebUrl : CONSOLE;
  return {
    redis: { kind: 'node', host: u.hostname, port: Number(u.port || 6379), db },
    keyPrefix: prefix,
    expiryHours: opts.expiryHours ?? 72,
    ...(consoleWebUrl ? { consoleWebUrl } : {}),
  };
}

/**
 * What Dify's activation writes when the holder of a link sets the password (dify/NOTES.md):
 * the password as Dify hashes it (PBKDF2-HMAC-SHA256, 10,000 rounds, hex, base64; a 16-byte
 * salt, base64), `status = 'active'`, `initialized_at`; the token it used (in Dify's Redis
 * `dify`, keys under `prefix`) is deleted.
 */
export async function activateAsDify(db: Db, dify: Redis, prefix: string, email: string, password: string): Promise<void> {
  const salt = randomBytes(16);
  const hash = Buffer.from(pbkdf2Sync(password, salt, 10000, 32, 'sha256').toString('hex')).toString('base64');
  const { rowCount } = await db.query(
    `UPDATE accounts SET password = $2, password_salt = $3, status = 'active', initialized_at = now(), interface_theme = 'light'
      WHERE email = $1 AND status = 'pending'`,
    [email, hash, salt.toString('base64')],
  );
  expect(rowCount).toBe(1);
  for (const key of await dify.keys(`${prefix}:member_invite:token:*`)) if ((await dify.get(key))?.includes(email)) await dify.del(key);
}
