// Deploys a tenant's private key where Dify's local storage looks for it:
// <storage>/privkeys/<tenant_id>/private.pem, folder 0700, file 0600, owned by Dify's user.
// Written atomically (temp file, fsync, rename, fsync folder), then read back and proven.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, chown, lstat, mkdir, open, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { hybridDecrypt, hybridEncrypt } from '../crypto/rsa-keys.js';
import { PreflightError } from '../errors.js';
import { privateKeyKey, type DeployedKey, type KeyStorage } from './key-storage.js';

export interface FileOwner {
  uid: number;
  gid: number;
}

export interface LocalKeyStorageOptions {
  /** Dify's storage root: the folder that contains privkeys/. */
  root: string;
  /** Owner of the files; default: the owner of `root`. */
  owner?: FileOwner;
}

export async function localKeyStorage(opts: LocalKeyStorageOptions): Promise<KeyStorage> {
  const rootStat = await stat(opts.root).catch(() => undefined);
  if (!rootStat?.isDirectory()) {
    throw new PreflightError(
      `DIFY_STORAGE_DIR "${opts.root}" is not a folder: point it at Dify's storage root (the folder holding privkeys/)`,
    );
  }
  const owner = opts.owner ?? { uid: rootStat.uid, gid: rootStat.gid };
  const privkeys = join(opts.root, 'privkeys');

  return {
    async deploy(tenantId, privatePem, publicPem) {
      if (!(await exists(privkeys))) {
        await mkdirOwned(privkeys, owner);
        await fsyncDir(opts.root);
      }
      const dir = join(privkeys, tenantId);
      await mkdirOwned(dir, owner);
      await fsyncDir(privkeys);
      const target = join(dir, 'private.pem');
      const remove = async () => {
        await rm(dir, { recursive: true, force: true });
        await fsyncDir(privkeys).catch(() => {});
      };
      try {
        await writeAtomically(dir, target, privatePem, owner);
        await proveKeyFile(target, publicPem);
      } catch (err) {
        await remove().catch(() => {});
        throw err;
      }
      return { location: target, remove };
    },
  };
}

async function writeAtomically(dir: string, target: string, content: string, owner: FileOwner): Promise<void> {
  const temp = join(dir, `.private.pem.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await fh.chmod(0o600); // whatever the umask was
    await chownIfNeeded(owner, (uid, gid) => fh.chown(uid, gid));
    await fh.writeFile(content);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(temp, target);
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
  await fsyncDir(dir);
}

/** Reads the deployed file back and proves it decrypts what the public key encrypts, Dify's way. */
async function proveKeyFile(path: string, publicPem: string): Promise<void> {
  const st = await lstat(path);
  if (!st.isFile() || (st.mode & 0o777) !== 0o600) {
    throw new Error(`key file ${path} is not a 0600 regular file after writing (mode ${(st.mode & 0o777).toString(8)})`);
  }
  const secret = randomBytes(32);
  const blob = hybridEncrypt(secret, publicPem);
  let decrypted: Buffer;
  try {
    decrypted = hybridDecrypt(blob, await readFile(path, 'utf8'));
  } catch {
    throw new Error(`key file ${path} does not decrypt what the tenant's public key encrypts`);
  }
  if (!decrypted.equals(secret)) throw new Error(`key file ${path} decrypts to the wrong bytes`);
}

async function mkdirOwned(dir: string, owner: FileOwner): Promise<void> {
  await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  await chmod(dir, 0o700);
  await chownIfNeeded(owner, (uid, gid) => chown(dir, uid, gid));
}

async function chownIfNeeded(owner: FileOwner, fn: (uid: number, gid: number) => Promise<void>): Promise<void> {
  if (owner.uid === process.getuid?.() && owner.gid === process.getgid?.()) return;
  await fn(owner.uid, owner.gid);
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
