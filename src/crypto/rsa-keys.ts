// RSA-2048 key pairs in the formats Dify's api/libs/rsa.py writes, and Dify's hybrid encryption
// (AES-128-EAX + RSA-OAEP-SHA1) to prove a deployed pair works before anyone depends on it.
import {
  constants,
  createCipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPair,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { promisify } from 'node:util';
import { rsaOaepDecryptOffLoop } from './rsa-threads.js';

const generate = promisify(generateKeyPair);

export interface KeyPair {
  /** SubjectPublicKeyInfo PEM, 64-character lines, no trailing newline (tenants.encrypt_public_key). */
  readonly publicPem: string;
  /** PKCS#1 PEM, unencrypted, no trailing newline. Secret: only the key storage ever sees it. */
  readonly privatePem: string;
  /** SHA-256 of the SubjectPublicKeyInfo DER, hex. */
  readonly fingerprint: string;
}

/** Where key pairs come from: the worker generates them; the benchmark can inject a pool. */
export interface KeySource {
  generate(): Promise<KeyPair>;
}

/**
 * Pairs proven in this process: frozen objects whose private PEM decrypted what their public PEM
 * encrypted, Dify's way. Only provenPair adds to it (rsaKeySource.generate calls it); a pair from
 * anywhere else (another KeySource, a copy, an object built from strings) is not in it, and its
 * key is proven in full on deploy.
 */
const proven = new WeakSet<KeyPair>();

/**
 * node:crypto's async generateKeyPair runs on libuv's thread pool, so the event loop stays free.
 * Measured here: 15.3 pairs/s with 4 in flight on 2 cores, against 13.2 for node-forge's callback
 * API (which defers to the same native code, then converts) and 2.4 for forge in pure JavaScript.
 * Every pair is proven here, once, where it is made (provePair: ~1.5 ms beside ~70 ms of
 * generation), and frozen: a storage backend then checks the key it reads back byte for byte
 * against the proven PEM instead of decrypting again (proveStoredKey).
 */
export const rsaKeySource: KeySource = {
  async generate() {
    const { publicKey, privateKey } = await generate('rsa', {
      modulusLength: 2048,
      publicExponent: 65537,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    });
    return provenPair({ publicPem: publicKey.trimEnd(), privatePem: privateKey.trimEnd() });
  },
};

/**
 * The pair of these PEMs (with its fingerprint), frozen and recorded as proven once its private
 * PEM decrypted what its public PEM encrypts (provePair); throws, recording nothing, when not.
 */
export async function provenPair(candidate: Pick<KeyPair, 'privatePem' | 'publicPem'>): Promise<KeyPair> {
  const pair: KeyPair = Object.freeze({
    publicPem: candidate.publicPem,
    privatePem: candidate.privatePem,
    fingerprint: fingerprintOf(candidate.publicPem),
  });
  await provePair(pair, 'the generated key pair');
  proven.add(pair);
  return pair;
}

/** Was this very (frozen) pair object proven here when it was made? */
export const isProvenPair = (pair: KeyPair): boolean => proven.has(pair);

/**
 * Proves that `pair.privatePem` decrypts what `pair.publicPem` encrypts with Dify's hybrid scheme
 * (the RSA private step on a worker thread, crypto/rsa-threads.ts), or throws naming `what`.
 */
export async function provePair(pair: Pick<KeyPair, 'privatePem' | 'publicPem'>, what: string): Promise<void> {
  const secret = randomBytes(32);
  let decrypted: Buffer;
  try {
    decrypted = await hybridDecryptOffLoop(hybridEncrypt(secret, pair.publicPem), pair.privatePem);
  } catch {
    throw new Error(`${what} does not decrypt what the tenant's public key encrypts`);
  }
  if (!decrypted.equals(secret)) throw new Error(`${what} decrypts to the wrong bytes`);
}

/**
 * The proof that `stored` (a private key as read back from the storage, named `what` in errors)
 * is the private key of `pair`, so that the tenant row's public key (`pair.publicPem`) works
 * with the file Dify reads. For a pair proven where it was made (isProvenPair): `stored` must be
 * its private PEM byte for byte: the same bytes parse to the same key, so the file decrypts
 * what the public key encrypts exactly as the proven PEM did (constant work, no RSA). For any
 * other pair: the full proof on the stored text (provePair).
 */
export async function proveStoredKey(stored: string, pair: KeyPair, what: string): Promise<void> {
  if (isProvenPair(pair)) {
    if (!sameBytes(stored, pair.privatePem)) throw new Error(`${what} does not read back byte for byte as the key that was written`);
    return;
  }
  await provePair({ privatePem: stored, publicPem: pair.publicPem }, what);
}

function sameBytes(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && x.equals(y);
}

export function fingerprintOf(publicPem: string): string {
  const der = createPublicKey(publicPem).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex');
}

const HYBRID = Buffer.from('HYBRID:');

/** Dify's encrypt(): "HYBRID:" ‖ RSA-OAEP-SHA1(aes key) ‖ nonce ‖ tag ‖ AES-128-EAX(ciphertext). */
export function hybridEncrypt(plaintext: Buffer, publicPem: string): Buffer {
  const aesKey = randomBytes(16);
  const nonce = randomBytes(16);
  const { ciphertext, tag } = eaxEncrypt(aesKey, nonce, plaintext);
  const wrapped = publicEncrypt({ key: publicPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, aesKey);
  return Buffer.concat([HYBRID, wrapped, nonce, tag, ciphertext]);
}

/** Dify's decrypt(): hybrid when prefixed, else one RSA-OAEP-SHA1 block. */
export function hybridDecrypt(blob: Buffer, privatePem: string | KeyObject): Buffer {
  const key = typeof privatePem === 'string' ? createPrivateKey(privatePem) : privatePem;
  const oaep = { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' };
  if (!blob.subarray(0, HYBRID.length).equals(HYBRID)) return privateDecrypt(oaep, blob);
  const body = blob.subarray(HYBRID.length);
  const size = (key.asymmetricKeyDetails?.modulusLength ?? 2048) / 8;
  const aesKey = privateDecrypt(oaep, body.subarray(0, size));
  const nonce = body.subarray(size, size + 16);
  const tag = body.subarray(size + 16, size + 32);
  return eaxDecrypt(aesKey, nonce, body.subarray(size + 32), tag);
}

/**
 * hybridDecrypt with the RSA step (parsing the PEM and the private decryption: the costly part)
 * on a worker thread (rsa-threads.ts); the same bytes, the same checks.
 */
export async function hybridDecryptOffLoop(blob: Buffer, privatePem: string): Promise<Buffer> {
  if (!blob.subarray(0, HYBRID.length).equals(HYBRID)) return (await rsaOaepDecryptOffLoop(privatePem, blob)).out;
  const body = blob.subarray(HYBRID.length);
  const { out: aesKey, size } = await rsaOaepDecryptOffLoop(privatePem, body);
  const nonce = body.subarray(size, size + 16);
  const tag = body.subarray(size + 16, size + 32);
  return eaxDecrypt(aesKey, nonce, body.subarray(size + 32), tag);
}

// EAX = CTR + OMAC (CMAC), which Node lacks; built from AES-ECB/CBC/CTR primitives.
// Dify passes no associated data; `header` exists so the published EAX test vectors can be checked.
export function eaxEncrypt(key: Buffer, nonce: Buffer, plaintext: Buffer, header = Buffer.alloc(0)): { ciphertext: Buffer; tag: Buffer } {
  const n = omac(key, 0, nonce);
  const h = omac(key, 1, header);
  const ciphertext = ctr(key, n, plaintext);
  return { ciphertext, tag: xor(xor(n, h), omac(key, 2, ciphertext)) };
}

export function eaxDecrypt(key: Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, header = Buffer.alloc(0)): Buffer {
  const n = omac(key, 0, nonce);
  const h = omac(key, 1, header);
  const expected = xor(xor(n, h), omac(key, 2, ciphertext));
  if (tag.length !== 16 || !expected.equals(tag)) throw new Error('EAX tag mismatch: the key or ciphertext is wrong');
  return ctr(key, n, ciphertext);
}

function ctr(key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const c = createCipheriv('aes-128-ctr', key, iv);
  return Buffer.concat([c.update(data), c.final()]);
}

function omac(key: Buffer, t: number, message: Buffer): Buffer {
  const prefix = Buffer.alloc(16);
  prefix[15] = t;
  return cmac(key, Buffer.concat([prefix, message]));
}

/** AES-CMAC (RFC 4493). */
export function cmac(key: Buffer, message: Buffer): Buffer {
  const l = aesBlock(key, Buffer.alloc(16));
  const k1 = dbl(l);
  const k2 = dbl(k1);
  const blocks = Math.max(1, Math.ceil(message.length / 16));
  const complete = message.length > 0 && message.length % 16 === 0;
  const last = Buffer.alloc(16);
  message.copy(last, 0, (blocks - 1) * 16);
  if (!complete) last[message.length - (blocks - 1) * 16] = 0x80;
  const padded = Buffer.concat([message.subarray(0, (blocks - 1) * 16), xor(last, complete ? k1 : k2)]);
  const c = createCipheriv('aes-128-cbc', key, Buffer.alloc(16)).setAutoPadding(false);
  const out = Buffer.concat([c.update(padded), c.final()]);
  return out.subarray(out.length - 16);
}

function aesBlock(key: Buffer, block: Buffer): Buffer {
  const c = createCipheriv('aes-128-ecb', key, null).setAutoPadding(false);
  return Buffer.concat([c.update(block), c.final()]);
}

function dbl(b: Buffer): Buffer {
  const out = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) out[i] = ((b[i]! << 1) | (i < 15 ? b[i + 1]! >>> 7 : 0)) & 0xff;
  if (b[0]! & 0x80) out[15] = out[15]! ^ 0x87;
  return out;
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}
