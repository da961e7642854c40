// What a correctly provisioned tenant looks like, checked against the database and the disk.
import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { hybridDecrypt, hybridEncrypt } from '../../src/crypto/rsa-keys.js';
import type { TestEnv } from './test-env.js';

export const keyFile = (env: TestEnv, tenantId: string) => join(env.config.storageDir, 'privkeys', tenantId, 'private.pem');

/** Encrypts with the stored public key, decrypts with the deployed private key, Dify's way. */
export async function keyPairWorks(env: TestEnv, tenantId: string): Promise<boolean> {
  const { rows } = await env.db.query<{ encrypt_public_key: string }>(`SELECT encrypt_public_key FROM tenants WHERE id = $1`, [tenantId]);
  const publicPem = rows[0]?.encrypt_public_key;
  if (!publicPem) return false;
  const secret = randomBytes(40);
  const privatePem = await readFile(keyFile(env, tenantId), 'utf8');
  return hybridDecrypt(hybridEncrypt(secret, publicPem), privatePem).equals(secret);
}

export async function modes(env: TestEnv, tenantId: string): Promise<{ dir: string; file: string }> {
  const file = keyFile(env, tenantId);
  return {
    dir: ((await stat(join(file, '..'))).mode & 0o777).toString(8),
    file: ((await stat(file)).mode & 0o777).toString(8),
  };
}
