// Benchmark-only key source: a small pool of pre-generated pairs handed out round-robin, so a run
// measures everything but key generation. Never used by the product.
import { rsaKeySource, type KeyPair, type KeySource } from '../src/crypto/rsa-keys.js';

export async function pooledKeySource(size: number): Promise<KeySource> {
  const pool: KeyPair[] = await Promise.all(Array.from({ length: size }, () => rsaKeySource.generate()));
  let next = 0;
  return { generate: async () => pool[next++ % pool.length]! };
}
