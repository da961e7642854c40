// Deploys a tenant's private key where Dify's local storage looks for it:
// <storage>/privkeys/<tenant_id>/private.pem, folder 0700, file 0600, owned by Dify's user.
// Written atomically (temp file, fsync, rename, fsync folder), then read back and proven.
//
// Whoever can write privkeys/ (Dify's own user) must not be able to steer a root worker through a
// symbolic link: no link under the storage root is ever followed. Folders are opened with
// O_NOFOLLOW and everything inside is reached through the opened handle (/proc/self/fd/N on
// Linux: the folder that was opened, whatever its name points to by then); modes and owners are
// changed on handles, never on paths; a tenant folder that exists must be a plain folder holding
// nothing but an earlier attempt's key.
import { randomBytes } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { hybridDecrypt, hybridEncrypt } from '../crypto/rsa-keys.js';
import { PreflightError, RowError } from '../errors.js';
import { storageFsError } from './fs-diagnosis.js';
import type { KeyStorage, StoredKey } from './key-storage.js';

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

const KEY_FILE = 'private.pem';
const TEMP = /^\.private\.pem\.[0-9a-f]{12}\.tmp$/;
const FOLDER = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
// Reaching a file through its opened folder: Linux's /proc/self/fd; elsewhere the path (then
// the folder is checked again after the write).
const BY_HANDLE = process.platform === 'linux' && existsSync('/proc/self/fd');
const inside = (dir: FileHandle, path: string, name: string) => (BY_HANDLE ? `/proc/self/fd/${dir.fd}/${name}` : join(path, name));

export async function localKeyStorage(opts: LocalKeyStorageOptions): Promise<KeyStorage> {
  // The root itself is the operator's setting (it may be a link to a volume); below it, nothing is followed.
  const rootStat = await stat(opts.root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw storageFsError(err, 'open', opts.root);
  });
  if (!rootStat?.isDirectory()) {
    throw new PreflightError(
      `DIFY_STORAGE_DIR "${opts.root}" is not a folder: point it at Dify's storage root (the folder holding privkeys/)`,
    );
  }
  const owner = opts.owner ?? { uid: rootStat.uid, gid: rootStat.gid };
  const privkeys = join(opts.root, 'privkeys');
  await ensureFolder(
    privkeys,
    owner,
    () => new PreflightError(`${privkeys} is not a plain folder (a symbolic link?): refusing to write keys through it`),
  );
  await (await openFolder(privkeys)).close();

  const tenantDir = (tenantId: string) => join(privkeys, tenantId);
  return {
    description: `local folder ${opts.root}`,
    async check() {
      // A name Dify never reads: written (owned like a key), read back, removed.
      const probe = join(privkeys, `.dify-provision-probe-${randomBytes(6).toString('hex')}`);
      const fh = await open(probe, NEW_FILE, 0o600).catch((err: unknown) => {
        throw storageFsError(err, 'create', probe);
      });
      try {
        await chownIfNeeded(owner, fh).catch((err: unknown) => {
          throw storageFsError(err, `change its owner to uid ${owner.uid}`, probe, 'DIFY_STORAGE_DIR and KEY_FILE_OWNER');
        });
        await fh.writeFile('probe');
      } finally {
        await fh.close();
        await unlink(probe).catch(() => {});
      }
    },
    async list() {
      const out: StoredKey[] = [];
      for (const e of await readdir(privkeys, { withFileTypes: true })) {
        const modified = (await lstat(join(privkeys, e.name))).mtime;
        if (e.isSymbolicLink()) out.push({ tenantId: e.name, name: '', modified, kind: 'link' });
        else if (!e.isDirectory()) continue;
        else {
          for (const f of await readdir(join(privkeys, e.name), { withFileTypes: true })) {
            out.push({ tenantId: e.name, name: f.name, modified, kind: f.isFile() ? 'file' : f.isSymbolicLink() ? 'link' : 'other' });
          }
        }
      }
      return out;
    },
    async read(tenantId) {
      const fh = await open(join(tenantDir(tenantId), KEY_FILE), constants.O_RDONLY | constants.O_NOFOLLOW).catch(
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return undefined;
          throw err;
        },
      );
      return fh?.readFile('utf8').finally(() => fh.close());
    },
    async removeTenant(tenantId) {
      await rm(tenantDir(tenantId), { recursive: true, force: true }); // a link is removed itself, never its target
    },
    async deploy(tenantId, privatePem, publicPem) {
      const parent = await openFolder(privkeys);
      try {
        const dir = join(privkeys, tenantId);
        const dirPath = inside(parent, privkeys, tenantId);
        await claimTenantFolder(dirPath, dir, owner);
        await parent.sync();
        const remove = async () => {
          const p = await openFolder(privkeys);
          try {
            await rm(inside(p, privkeys, tenantId), { recursive: true, force: true }); // removes a link, never its target
            await p.sync().catch(() => {});
          } finally {
            await p.close();
          }
        };
        try {
          const folder = await openFolder(dirPath).catch(() => {
            throw new RowError('workspace_id', `${dir} changed while its key was written (replaced by a link?): refusing`);
          });
          try {
            await writeAtomically(folder, dir, privatePem, owner);
            await proveKeyFile(folder, dir, publicPem);
          } finally {
            await folder.close();
          }
          if (!BY_HANDLE) await mustBePlainFolder(dir);
        } catch (err) {
          await remove().catch(() => {});
          throw err;
        }
        return { location: join(dir, KEY_FILE), remove };
      } finally {
        await parent.close();
      }
    },
  };
}

const openFolder = (path: string) => open(path, FOLDER);

/** privkeys/ (made when missing): a plain folder, never a link. A failure names its cause (EACCES, …). */
async function ensureFolder(path: string, owner: FileOwner, refuse: () => Error): Promise<void> {
  await mkdir(path, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw storageFsError(err, 'create', path);
  });
  const st = await lstat(path);
  if (!st.isDirectory()) throw refuse();
  const fh = await openFolder(path).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'ELOOP' || err.code === 'ENOTDIR' ? refuse() : storageFsError(err, 'open', path);
  });
  try {
    await chownIfNeeded(owner, fh).catch((err: unknown) => {
      throw storageFsError(err, `change its owner to uid ${owner.uid}`, path, 'DIFY_STORAGE_DIR and KEY_FILE_OWNER');
    });
  } finally {
    await fh.close();
  }
}

/**
 * The tenant's folder, made now (0700, Dify's owner), or one an earlier attempt of this tenant
 * left: a plain folder holding nothing but private.pem and our temp files. Anything else (a link,
 * a file, foreign content) is refused: the row fails and nothing is written.
 */
async function claimTenantFolder(dirPath: string, shown: string, owner: FileOwner): Promise<void> {
  const made = await mkdir(dirPath, { mode: 0o700 }).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
      return false;
    },
  );
  const refuse = (why: string) =>
    new RowError('workspace_id', `${shown} ${why}: refusing to write this tenant's key there (see README, Security)`);
  const st = await lstat(dirPath);
  if (st.isSymbolicLink()) throw refuse('is a symbolic link');
  if (!st.isDirectory()) throw refuse('exists and is not a folder');
  const fh = await openFolder(dirPath).catch(() => {
    throw refuse('is not a plain folder');
  });
  try {
    if (!made) {
      for (const entry of await readdir(dirPath, { withFileTypes: true })) {
        if (!(entry.isFile() && (entry.name === KEY_FILE || TEMP.test(entry.name))))
          throw refuse(`holds "${entry.name}", which is not ours`);
      }
    }
    await fh.chmod(0o700);
    await chownIfNeeded(owner, fh);
  } finally {
    await fh.close();
  }
}

async function mustBePlainFolder(dir: string): Promise<void> {
  const st = await lstat(dir);
  if (st.isSymbolicLink() || !st.isDirectory())
    throw new RowError('workspace_id', `${dir} was replaced while its key was written: refusing`);
}

async function writeAtomically(folder: FileHandle, dir: string, content: string, owner: FileOwner): Promise<void> {
  const tempName = `.private.pem.${randomBytes(6).toString('hex')}.tmp`;
  const temp = inside(folder, dir, tempName);
  const fh = await open(temp, NEW_FILE, 0o600);
  try {
    await fh.chmod(0o600); // whatever the umask was
    await chownIfNeeded(owner, fh);
    await fh.writeFile(content);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    // rename replaces a link named private.pem itself, never what it points to.
    await rename(temp, inside(folder, dir, KEY_FILE));
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
  await folder.sync();
}

/** Reads the deployed file back (never through a link) and proves it decrypts what the public key encrypts, Dify's way. */
async function proveKeyFile(folder: FileHandle, dir: string, publicPem: string): Promise<void> {
  const path = join(dir, KEY_FILE);
  const fh = await open(inside(folder, dir, KEY_FILE), constants.O_RDONLY | constants.O_NOFOLLOW);
  let text: string;
  try {
    const st = await fh.stat();
    if (!st.isFile() || (st.mode & 0o777) !== 0o600) {
      throw new Error(`key file ${path} is not a 0600 regular file after writing (mode ${(st.mode & 0o777).toString(8)})`);
    }
    text = await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
  const secret = randomBytes(32);
  const blob = hybridEncrypt(secret, publicPem);
  let decrypted: Buffer;
  try {
    decrypted = hybridDecrypt(blob, text);
  } catch {
    throw new Error(`key file ${path} does not decrypt what the tenant's public key encrypts`);
  }
  if (!decrypted.equals(secret)) throw new Error(`key file ${path} decrypts to the wrong bytes`);
}

async function chownIfNeeded(owner: FileOwner, fh: FileHandle): Promise<void> {
  if (owner.uid === process.getuid?.() && owner.gid === process.getgid?.()) return;
  await fh.chown(owner.uid, owner.gid);
}
