// Secrets that must reach the operator exactly once are sealed to the operator's RSA public key
// as a standard JWE (compact serialisation, RSA-OAEP-256 + A256GCM, RFC 7516/7518) with `jose`,
// so any JOSE implementation opens them; only the sealed form is ever stored.
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { CompactEncrypt, compactDecrypt } from 'jose';
import { ProvisionError, UsageError } from '../common/errors.js';

export const SEAL_ALG = 'RSA-OAEP-256';
export const SEAL_ENC = 'A256GCM';

export function loadSealKey(pem: string): KeyObject {
  // createPublicKey also accepts a private key (and derives its public half): refuse one, so the
  // operator's private key is never taken in, stored or kept in a batch's options.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new UsageError(
      '--seal-to was given a PRIVATE key: give the public key only (openssl rsa -pubout -in operator.pem -out operator-public.pem); keep the private key to yourself for `secrets`',
    );
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new UsageError('--seal-to must be an RSA public key in PEM (openssl rsa -pubout -in operator.pem)');
  }
  if (key.asymmetricKeyType !== 'rsa' || (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
    throw new UsageError('--seal-to must be an RSA public key of at least 2048 bits');
  }
  return key;
}

/** The SubjectPublicKeyInfo PEM of a public key: all a batch keeps of the operator's key. */
export function publicPemOf(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

export async function seal(secret: string, publicKey: KeyObject, kid?: string): Promise<string> {
  return new CompactEncrypt(new TextEncoder().encode(secret))
    .setProtectedHeader({ alg: SEAL_ALG, enc: SEAL_ENC, cty: 'text/plain', ...(kid ? { kid } : {}) })
    .encrypt(publicKey);
}

export class WrongKeyError extends ProvisionError {
  override readonly name: string = 'WrongKeyError';
  readonly code = 'WRONG_KEY';
  override readonly httpStatus = 400;
}

export function loadOpenKey(pem: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch {
    throw new WrongKeyError('--key must be an unencrypted RSA private key in PEM');
  }
}

export async function unseal(jwe: string, privateKey: KeyObject): Promise<string> {
  try {
    const { plaintext } = await compactDecrypt(jwe, privateKey, {
      keyManagementAlgorithms: [SEAL_ALG],
      contentEncryptionAlgorithms: [SEAL_ENC],
    });
    return new TextDecoder().decode(plaintext);
  } catch {
    throw new WrongKeyError('this private key does not open the sealed secrets (it is not the key they were sealed to)');
  }
}
