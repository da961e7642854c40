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

/**
 * The public key a batch seals its secrets to (undefined: no key given), or the refusal of what
 * needs one without it: invitation links (`invite`, `sendInvites`; ingest's `invitePending` too),
 * minted API keys (`mintDatasetKeys`), or of a key that is not a public RSA key. The runs (ingest,
 * apply) ask it before recording anything, and their plans (the dry runs, plan(), planChanges(),
 * the API's plans) ask it too, so a dry run refuses what the run would.
 */
export function sealKeyOf(opts: {
  invite?: boolean | undefined;
  invitePending?: boolean | undefined;
  sendInvites?: boolean | undefined;
  mintDatasetKeys?: boolean | undefined;
  sealTo?: string | undefined;
}): string | undefined {
  if (opts.mintDatasetKeys && !opts.sealTo) throw new SealRequiredError();
  if ((opts.invite || opts.invitePending || opts.sendInvites) && !opts.sealTo)
    throw new UsageError(
      'invitations need --seal-to operator-public.pem: each link lets its holder set the password, so it is sealed to that key and revealed once with `dify-provision secrets --invites`',
    );
  // Only the public half is ever kept (a private key given by mistake is refused by loadSealKey).
  return opts.sealTo ? publicPemOf(loadSealKey(opts.sealTo)) : undefined;
}

/** Minting API keys without a key to seal them to. */
export class SealRequiredError extends UsageError {
  override readonly name: string = 'SealRequiredError';
  constructor() {
    super(
      'minting API keys needs --seal-to operator-public.pem: each token is sealed to that key and revealed once with `dify-provision secrets`',
    );
  }
}
