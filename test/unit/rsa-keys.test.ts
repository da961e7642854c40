import { createPrivateKey, createPublicKey } from 'node:crypto';
import forge from 'node-forge';
import { describe, expect, it } from 'vitest';
import {
  cmac,
  eaxDecrypt,
  eaxEncrypt,
  fingerprintOf,
  hybridDecrypt,
  hybridDecryptOffLoop,
  hybridEncrypt,
  isProvenPair,
  proveStoredKey,
  provenPair,
  rsaKeySource,
  type KeyPair,
} from '../../src/crypto/rsa-keys.js';
import { objectKeyStorage, type ObjectStore } from '../../src/storage/object-store.js';

const hex = (s: string) => Buffer.from(s.replace(/\s/g, ''), 'hex');

describe('AES-CMAC (RFC 4493 test vectors)', () => {
  const key = hex('2b7e1516 28aed2a6 abf71588 09cf4f3c');
  const msg = hex(`6bc1bee2 2e409f96 e93d7e11 7393172a ae2d8a57 1e03ac9c 9eb76fac 45af8e51
                   30c81c46 a35ce411 e5fbc119 1a0a52ef f69f2445 df4f9b17 ad2b417b e66c3710`);
  it.each([
    [0, 'bb1d6929 e9593728 7fa37d12 9b756746'],
    [16, '070a16b4 6b4d4144 f79bdd9d d04a287c'],
    [40, 'dfa66747 de9ae630 30ca3261 1497c827'],
    [64, '51f0bebf 7e3b9d92 fc497417 79363cfe'],
  ])('a %i-byte message', (len, mac) => {
    expect(cmac(key, msg.subarray(0, len)).toString('hex')).toBe(hex(mac).toString('hex'));
  });
});

describe('AES-EAX (test vectors of the EAX paper)', () => {
  it.each([
    ['', '233952DEE4D5ED5F9B9C6D6FF80FF478', '62EC67F9C3A4A407FCB2A8C49031A8B3', '6BFB914FD07EAE6B', 'E037830E8389F27B025A2D6527E79D01'],
    [
      'F7FB',
      '91945D3F4DCBEE0BF45EF52255F095A4',
      'BECAF043B0A23D843194BA972C66DEBD',
      'FA3BFD4806EB53FA',
      '19DD5C4C9331049D0BDAB0277408F67967E5',
    ],
    [
      '1A47CB4933',
      '01F74AD64077F2E704C0F60ADA3DD523',
      '70C3DB4F0D26368400A10ED05D2BFF5E',
      '234A3463C1264AC6',
      'D851D5BAE03A59F238A23E39199DC9266626C40F80',
    ],
  ])('message %s', (msg, key, nonce, header, expected) => {
    const { ciphertext, tag } = eaxEncrypt(hex(key), hex(nonce), hex(msg), hex(header));
    expect(Buffer.concat([ciphertext, tag]).toString('hex').toUpperCase()).toBe(expected);
    expect(eaxDecrypt(hex(key), hex(nonce), ciphertext, tag, hex(header)).toString('hex').toUpperCase()).toBe(msg);
  });

  it('refuses a tampered ciphertext', () => {
    const key = hex('01F74AD64077F2E704C0F60ADA3DD523');
    const nonce = hex('70C3DB4F0D26368400A10ED05D2BFF5E');
    const { ciphertext, tag } = eaxEncrypt(key, nonce, Buffer.from('secret'));
    ciphertext[0] = ciphertext[0]! ^ 1;
    expect(() => eaxDecrypt(key, nonce, ciphertext, tag)).toThrow(/tag mismatch/);
  });
});

describe('RSA key pairs in Dify formats', () => {
  it('generates RSA-2048, e=65537, SPKI public and PKCS#1 private PEMs without trailing newlines', async () => {
    const pair = await rsaKeySource.generate();
    expect(pair.publicPem).toMatch(/^-----BEGIN PUBLIC KEY-----\n([A-Za-z0-9+/=]{64}\n)+[A-Za-z0-9+/=]{1,64}\n-----END PUBLIC KEY-----$/);
    expect(pair.privatePem).toMatch(/^-----BEGIN RSA PRIVATE KEY-----\n[\s\S]+\n-----END RSA PRIVATE KEY-----$/);
    const details = createPrivateKey(pair.privatePem).asymmetricKeyDetails;
    expect(details).toMatchObject({ modulusLength: 2048, publicExponent: 65537n });
    expect(pair.fingerprint).toBe(fingerprintOf(createPublicKey(pair.privatePem).export({ type: 'spki', format: 'pem' }) as string));
  });

  it("round-trips Dify's hybrid scheme, and an independent RSA-OAEP-SHA1 (node-forge) unwraps the AES key", async () => {
    const pair = await rsaKeySource.generate();
    const secret = Buffer.from('sk-model-provider-credential-0123456789');
    const blob = hybridEncrypt(secret, pair.publicPem);
    expect(blob.subarray(0, 7).toString()).toBe('HYBRID:');
    expect(blob.length).toBe(7 + 256 + 16 + 16 + secret.length);
    expect(hybridDecrypt(blob, pair.privatePem)).toEqual(secret);

    const forgeKey = forge.pki.privateKeyFromPem(pair.privatePem);
    const aesKey = Buffer.from(forgeKey.decrypt(blob.subarray(7, 263).toString('binary'), 'RSA-OAEP'), 'binary');
    const nonce = blob.subarray(263, 279);
    const tag = blob.subarray(279, 295);
    expect(eaxDecrypt(aesKey, nonce, blob.subarray(295), tag)).toEqual(secret);
  });

  it('decrypts a plain RSA-OAEP block (no HYBRID: prefix), as Dify does for short secrets', async () => {
    const pair = await rsaKeySource.generate();
    const forgePub = forge.pki.publicKeyFromPem(pair.publicPem);
    const blob = Buffer.from(forgePub.encrypt('short-secret', 'RSA-OAEP'), 'binary');
    expect(hybridDecrypt(blob, pair.privatePem).toString()).toBe('short-secret');
  });
});

describe('the proof on a worker thread', () => {
  it('decrypts the same bytes as hybridDecrypt, and refuses another pair’s private key', async () => {
    const [pair, other] = await Promise.all([rsaKeySource.generate(), rsaKeySource.generate()]);
    const secret = Buffer.from('0123456789abcdef0123456789abcdef');
    const blobs = Array.from({ length: 8 }, () => hybridEncrypt(secret, pair.publicPem));
    // Several at once: each answer goes to its own caller.
    const out = await Promise.all(blobs.map((b) => hybridDecryptOffLoop(b, pair.privatePem)));
    for (const [i, o] of out.entries()) expect(o).toEqual(hybridDecrypt(blobs[i]!, pair.privatePem));
    await expect(hybridDecryptOffLoop(blobs[0]!, other.privatePem)).rejects.toThrow();
    await expect(hybridDecryptOffLoop(blobs[0]!, 'not a key')).rejects.toThrow();
  });
});

describe('the key proof: once where a pair is made, then byte for byte', () => {
  it('a generated pair is proven and frozen; a copy of it, or a pair built from strings, is not proven', async () => {
    const pair = await rsaKeySource.generate();
    expect(isProvenPair(pair)).toBe(true);
    expect(Object.isFrozen(pair)).toBe(true);
    expect(() => ((pair as { privatePem: string }).privatePem = 'x')).toThrow(TypeError);
    expect(isProvenPair({ ...pair })).toBe(false);
    expect(isProvenPair({ publicPem: pair.publicPem, privatePem: pair.privatePem, fingerprint: pair.fingerprint })).toBe(false);
  });

  it('a pair is recorded as proven only when its private key decrypts what its public key encrypts', async () => {
    const [pair, other] = await Promise.all([rsaKeySource.generate(), rsaKeySource.generate()]);
    const mixed: KeyPair = { ...pair, privatePem: other.privatePem };
    await expect(provenPair(mixed)).rejects.toThrow(/^the generated key pair does not decrypt what the tenant's public key encrypts$/);
    expect(isProvenPair(mixed)).toBe(false);
    const again = await provenPair({ ...pair });
    expect(isProvenPair(again)).toBe(true);
    expect(again).toEqual(pair);
  });

  it("a proven pair's key that reads back other than written is refused, whatever the difference", async () => {
    const [pair, other] = await Promise.all([rsaKeySource.generate(), rsaKeySource.generate()]);
    await expect(proveStoredKey(pair.privatePem, pair, 'key file k')).resolves.toBeUndefined();
    const flipped = pair.privatePem.slice(0, 100) + (pair.privatePem[100] === 'A' ? 'B' : 'A') + pair.privatePem.slice(101);
    for (const stored of [
      other.privatePem,
      flipped,
      `${pair.privatePem}\n`,
      pair.privatePem.replace(/\n/g, '\r\n'),
      pair.privatePem.slice(0, -1),
      '',
    ])
      await expect(proveStoredKey(stored, pair, 'key file k')).rejects.toThrow(
        /^key file k does not read back byte for byte as the key that was written$/,
      );
  });

  it('a pair not proven where it was made gets the full proof: a key of the pair passes, another one is refused', async () => {
    const [pair, other] = await Promise.all([rsaKeySource.generate(), rsaKeySource.generate()]);
    const copy: KeyPair = { ...pair };
    // The same key in another PEM form (PKCS#8) still decrypts: only the full proof accepts it.
    const pkcs8 = createPrivateKey(pair.privatePem).export({ type: 'pkcs8', format: 'pem' }) as string;
    await expect(proveStoredKey(pkcs8, copy, 'key file k')).resolves.toBeUndefined();
    await expect(proveStoredKey(pkcs8, pair, 'key file k')).rejects.toThrow(/byte for byte/);
    await expect(proveStoredKey(other.privatePem, copy, 'key file k')).rejects.toThrow(
      /^key file k does not decrypt what the tenant's public key encrypts$/,
    );
    await expect(proveStoredKey('not a key', copy, 'key file k')).rejects.toThrow(/does not decrypt/);
  });

  it('an object store whose key reads back changed fails the deploy and the object is removed', async () => {
    const [pair, other] = await Promise.all([rsaKeySource.generate(), rsaKeySource.generate()]);
    const objects = new Map<string, string>();
    let answer: ((body: string) => string) | undefined;
    const store: ObjectStore = {
      description: 'memory',
      put: async (k, body) => void objects.set(k, body),
      get: async (k) => (objects.has(k) ? (answer ?? ((b: string) => b))(objects.get(k)!) : undefined),
      delete: async (k) => void objects.delete(k),
      list: async () => [],
      explain: (err) => err as Error,
    };
    const storage = objectKeyStorage(store, 'root/');
    await storage.deploy('t1', pair);
    expect(objects.get('root/privkeys/t1/private.pem')).toBe(pair.privatePem);
    answer = () => other.privatePem;
    await expect(storage.deploy('t2', pair)).rejects.toThrow(/^key root\/privkeys\/t2\/private.pem does not read back byte for byte/);
    answer = (b) => `${b} `;
    await expect(storage.deploy('t3', pair)).rejects.toThrow(/byte for byte/);
    // A pair from elsewhere (not proven here) is proven in full: another key is refused.
    answer = () => other.privatePem;
    await expect(storage.deploy('t4', { ...pair })).rejects.toThrow(/does not decrypt what the tenant's public key encrypts/);
    expect([...objects.keys()]).toEqual(['root/privkeys/t1/private.pem']);
  });
});
