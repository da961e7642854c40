// The RSA private decryption of a key's proof (about 1.5 ms of CPU: parsing the PEM and one
// RSA-2048 CRT operation) runs on a small pool of worker threads, off the event loop: at a few
// hundred workspaces a second it was a quarter of the worker's event loop. The threads hold
// nothing between calls; the private key's text only crosses to a thread of this same process.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

// Self-contained (no file to find next to this module, in dist/ or under a test runner).
const THREAD = `
const { parentPort } = require('node:worker_threads');
const c = require('node:crypto');
parentPort.on('message', ({ id, pem, body }) => {
  try {
    const key = c.createPrivateKey(pem);
    const size = (key.asymmetricKeyDetails && key.asymmetricKeyDetails.modulusLength || 2048) / 8;
    const out = c.privateDecrypt({ key, padding: c.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, Buffer.from(body).subarray(0, size));
    parentPort.postMessage({ id, out, size });
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.message || err) });
  }
});`;

interface Pending {
  resolve: (r: { out: Buffer; size: number }) => void;
  reject: (e: Error) => void;
}

interface Thread {
  worker: Worker;
  pending: Map<number, Pending>;
}

const size = Math.max(1, Math.min(4, availableParallelism()));
const threads: Thread[] = [];
let next = 0;
let ids = 0;

function spawn(): Thread {
  const t: Thread = { worker: new Worker(THREAD, { eval: true }), pending: new Map() };
  t.worker.unref(); // never keeps the process alive
  t.worker.on('message', (m: { id: number; out?: Uint8Array; size?: number; error?: string }) => {
    const p = t.pending.get(m.id);
    if (!p) return;
    t.pending.delete(m.id);
    if (t.pending.size === 0) t.worker.unref();
    if (m.error !== undefined || !m.out) p.reject(new Error(m.error ?? 'no answer'));
    else p.resolve({ out: Buffer.from(m.out), size: m.size! });
  });
  const fail = (err: Error) => {
    const i = threads.indexOf(t);
    if (i >= 0) threads.splice(i, 1);
    for (const p of t.pending.values()) p.reject(err);
    t.pending.clear();
  };
  t.worker.on('error', fail);
  t.worker.on('exit', (code) => fail(new Error(`RSA thread exited (${code})`)));
  return t;
}

/**
 * RSA-OAEP-SHA1 decryption of the first modulus-sized block of `body` with the PEM private key,
 * on a thread; answers the plaintext and the block size (the modulus in bytes).
 */
export function rsaOaepDecryptOffLoop(privatePem: string, body: Buffer): Promise<{ out: Buffer; size: number }> {
  while (threads.length < size) threads.push(spawn());
  const t = threads[next++ % threads.length]!;
  const id = ++ids;
  return new Promise((resolve, reject) => {
    t.pending.set(id, { resolve, reject });
    if (t.pending.size === 1) t.worker.ref(); // while it owes an answer
    t.worker.postMessage({ id, pem: privatePem, body });
  });
}
