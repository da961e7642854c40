// Deploys a tenant's private key where Dify's local storage looks for it:
// <storage>/privkeys/<tenant_id>/private.pem, folder 0700, file 0600, owned by Dify's user.
//
// Whoever can write privkeys/ (Dify's own user) must not be able to steer a root worker. Every
// step goes through folder handles opened without following links (key-folders.ts), privkeys/
// must stay the very folder opened at start (by inode), and the tenant's folder is ours while the
// key is written: taken (owned by the worker, 0700) before anything is written into it, so nobody
// else can add, swap or remove names inside; handed to Dify's user only once the key is proven.
// On failure only the names we wrote are removed, then the folder if empty; never recursively.
// On a local file system the cheap calls are made on the event loop's thread, fsync through the
// thread pool (fs-calls.ts); the same calls either way.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { proveStoredKey, type KeyPair } from '../crypto/rsa-keys.js';
import { PreflightError, RowError } from '../common/errors.js';
import { fsCalls, isLocalFileSystem, type FsCalls, type Handle } from './fs-calls.js';
import { storageFsError } from './fs-diagnosis.js';
import type { KeyStorage, StoredKey } from './key-storage.js';
import {
  BY_HANDLE,
  KEY_FILE,
  FolderRefused,
  LeftAlone,
  changedMs,
  entriesOf,
  inside,
  isOurName,
  lstatInside,
  openChild,
  newestChangeOf,
  openFolder,
  readKeyText,
  removeOurNames,
  type Folder,
} from './key-folders.js';

export interface FileOwner {
  uid: number;
  gid: number;
}

export interface LocalKeyStorageOptions {
  /** Dify's storage root: the folder that contains privkeys/. */
  root: string;
  /** Owner of the files; default: the owner of `root`. */
  owner?: FileOwner;
  /** Told once if the storage turns out slow and its calls go back to the thread pool (fs-calls.ts). */
  warn?: (message: string) => void;
}

const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const READ = constants.O_RDONLY | constants.O_NOFOLLOW;

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
  const privkeysPath = join(opts.root, 'privkeys');
  const started = await preparePrivkeys(privkeysPath, owner);
  await started.fh.close();
  const calls = fsCalls({
    direct: isLocalFileSystem(privkeysPath),
    onSlow: (message) => opts.warn?.(`local folder ${opts.root}: ${message}`),
  });
  const syncPrivkeys = groupSync();

  /** privkeys/, which must still be the folder checked at start. */
  const withPrivkeys = async <T>(work: (privkeys: Folder) => Promise<T>): Promise<T> => {
    const privkeys = await openFolder(privkeysPath, started, calls).catch((err: unknown) => {
      throw new PreflightError(`${(err as Error).message}: refusing to work through it (restart the worker once it is a plain folder)`);
    });
    try {
      return await work(privkeys);
    } finally {
      await privkeys.fh.close();
    }
  };

  return {
    description: `local folder ${opts.root}`,
    check: () =>
      withPrivkeys(async (privkeys) => {
        // A name Dify never reads: written (owned like a key), removed.
        const probe = `.dify-provision-probe-${randomBytes(6).toString('hex')}`;
        const shown = join(privkeysPath, probe);
        const fh = await calls.open(inside(privkeys, probe), NEW_FILE, 0o600).catch((err: unknown) => {
          throw storageFsError(err, 'create', shown);
        });
        try {
          await chownIfNeeded(owner, fh).catch((err: unknown) => {
            throw storageFsError(err, `change its owner to uid ${owner.uid}`, shown, 'DIFY_STORAGE_DIR and KEY_FILE_OWNER');
          });
          await fh.write('probe');
        } finally {
          await fh.close();
          await calls.unlink(inside(privkeys, probe)).catch(() => {});
        }
      }),
    list: () => withPrivkeys(listKeys),
    read: (tenantId) =>
      withPrivkeys(async (privkeys) => {
        const folder = await openChild(privkeys, tenantId).catch((err: unknown) => {
          if (err instanceof FolderRefused && err.reason === 'absent') return undefined;
          throw err;
        });
        if (!folder) return undefined;
        try {
          return await readKeyFile(folder);
        } finally {
          await folder.fh.close();
        }
      }),
    removeTenant: (tenantId) => withPrivkeys((privkeys) => removeOurNames(privkeys, tenantId)),
    deploy: (tenantId, keys) =>
      withPrivkeys(async (privkeys) => {
        const folder = await takeTenantFolder(privkeys, tenantId);
        const same = { dev: folder.dev, ino: folder.ino };
        const remove = () => withPrivkeys((p) => removeOurNames(p, tenantId, same));
        try {
          await writeAtomically(calls, folder, keys.privatePem, owner);
          await proveKeyFile(calls, folder, keys);
          // Handed to Dify's user only now: the key is in place and proven.
          await chownIfNeeded(owner, folder.fh);
          if (!BY_HANDLE) await mustBeSameFolder(folder);
        } catch (err) {
          await folder.fh.close().catch(() => {});
          const left = await remove().then(
            () => '',
            (e: unknown) => (e instanceof LeftAlone ? `; ${e.message}` : ''),
          );
          if (err instanceof RowError && left) throw new RowError(err.field, err.message + left);
          if (left) throw new RowError('workspace_id', `${(err as Error).message}${left}`);
          throw err;
        }
        await folder.fh.close();
        // The tenant folder's name in privkeys/ made durable: one fsync for the keys written together.
        await syncPrivkeys(privkeys.fh);
        return { location: join(folder.path, KEY_FILE), remove };
      }),
  };
}

/**
 * fsyncs of one folder shared between callers (group commit): a caller is answered by a sync that
 * began after it asked, so whatever it did in the folder before asking is durable; callers that
 * ask while a sync runs share the next one, made through the handle of the first of them (every
 * caller's handle is the same folder, checked by inode, and stays open until it is answered).
 */
export function groupSync(): (fh: Pick<Handle, 'sync'>) => Promise<void> {
  let running: Promise<void> | undefined;
  let next: Promise<void> | undefined;
  const start = (fh: Pick<Handle, 'sync'>) => {
    const p = fh.sync().catch(() => {});
    running = p;
    void p.then(() => {
      if (running === p) running = undefined;
    });
    return p;
  };
  return (fh) => {
    if (!running) return start(fh);
    next ??= running.then(() => {
      next = undefined;
      return start(fh);
    });
    return next;
  };
}

/** privkeys/ (made when missing): a plain folder, never a link, owned like the keys. */
async function preparePrivkeys(path: string, owner: FileOwner): Promise<Folder> {
  await mkdir(path, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw storageFsError(err, 'create', path);
  });
  const folder = await openFolder(path).catch(async (err: unknown) => {
    if (err instanceof FolderRefused && (err.reason === 'link' || err.reason === 'not-folder'))
      throw new PreflightError(
        `${path} ${err.reason === 'link' ? 'is a symbolic link' : 'is not a folder'}, not a plain folder: refusing to write keys through it`,
      );
    throw storageFsError(err, 'open', path);
  });
  try {
    await chownIfNeeded(owner, folder.fh);
  } catch (err) {
    await folder.fh.close();
    throw storageFsError(err, `change its owner to uid ${owner.uid}`, path, 'DIFY_STORAGE_DIR and KEY_FILE_OWNER');
  }
  return folder;
}

/**
 * The tenant's folder, made now or left by an earlier attempt of this tenant, taken over by the
 * worker (its owner, 0700) before anything is written, and then checked to hold nothing but our
 * own names. Anything else (a link, a file, foreign content, a folder swapped in) fails the row.
 */
async function takeTenantFolder(privkeys: Folder, tenantId: string): Promise<Folder> {
  const shown = join(privkeys.path, tenantId);
  const refuse = (why: string) =>
    new RowError('workspace_id', `${shown} ${why}: refusing to write this tenant's key there (see docs/security.md)`);
  const made = await privkeys.calls.mkdir(inside(privkeys, tenantId), 0o700).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
      return false;
    },
  );
  const folder = await openChild(privkeys, tenantId).catch((err: unknown) => {
    throw refuse(err instanceof FolderRefused && err.reason !== 'os' ? err.detail : 'cannot be opened');
  });
  const onlyOurs = async () => {
    for (const entry of await entriesOf(folder)) {
      if (!(entry.isFile() && isOurName(entry.name))) throw refuse(`holds "${entry.name}", which is not ours`);
    }
  };
  try {
    const me = process.getuid?.();
    if (made && me !== undefined && folder.uid !== me) throw refuse('was replaced by a folder of someone else while it was made');
    await onlyOurs(); // a foreign folder is left exactly as it is
    const before = await folder.fh.stat();
    // Ours from here on: nobody else can add, rename or remove a name inside a 0700 folder of ours.
    if (me !== undefined && folder.uid !== me) await folder.fh.chown(me, process.getgid?.() ?? -1);
    await folder.fh.chmod(0o700);
    await onlyOurs().catch(async (err: unknown) => {
      // Something was added before we took it: handed back as it was, untouched.
      await folder.fh.chown(before.uid, before.gid).catch(() => {});
      await folder.fh.chmod(before.mode & 0o7777).catch(() => {});
      throw err;
    });
    return folder;
  } catch (err) {
    await folder.fh.close();
    throw err;
  }
}

async function mustBeSameFolder(folder: Folder): Promise<void> {
  const st = await lstat(folder.path).catch(() => undefined);
  if (!st || st.isSymbolicLink() || st.ino !== folder.ino)
    throw new RowError('workspace_id', `${folder.path} was replaced while its key was written: refusing`);
}

async function writeAtomically(calls: FsCalls, folder: Folder, content: string, owner: FileOwner): Promise<void> {
  const tempName = `.private.pem.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await calls.open(inside(folder, tempName), NEW_FILE, 0o600);
  try {
    await fh.chmod(0o600); // whatever the umask was
    await chownIfNeeded(owner, fh);
    await fh.write(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  // rename replaces a file (or link) named private.pem itself, never what it points to.
  await calls.rename(inside(folder, tempName), inside(folder, KEY_FILE)).catch(async (err: NodeJS.ErrnoException) => {
    await calls.unlink(inside(folder, tempName)).catch(() => {});
    throw new Error(`cannot put the key in place at ${join(folder.path, KEY_FILE)}: ${err.code ?? err.message}`);
  });
  await folder.fh.sync();
}

/** The key file of an opened tenant folder, never through a link; undefined when absent. */
async function readKeyFile(folder: Folder): Promise<string | undefined> {
  // Never blocks on a FIFO, never reads what cannot be a key (key-folders.ts readKeyText).
  return readKeyText(folder).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
}

/**
 * Reads the deployed file back (never through a link) and proves it is `keys`' private key:
 * byte for byte the PEM of a pair proven where it was made, else by decrypting what the public
 * key encrypts, Dify's way (crypto/rsa-keys.ts proveStoredKey).
 */
async function proveKeyFile(calls: FsCalls, folder: Folder, keys: KeyPair): Promise<void> {
  const path = join(folder.path, KEY_FILE);
  const fh = await calls.open(inside(folder, KEY_FILE), READ);
  let text: string;
  try {
    const st = await fh.stat();
    if (!st.isFile() || (st.mode & 0o777) !== 0o600) {
      throw new Error(`key file ${path} is not a 0600 regular file after writing (mode ${(st.mode & 0o777).toString(8)})`);
    }
    text = await readToEnd(fh, st.size);
  } finally {
    await fh.close();
  }
  await proveStoredKey(text, keys, `key file ${path}`);
}

/** Everything under privkeys/, through handles; `modified` is the newest change nobody can backdate. */
async function listKeys(privkeys: Folder): Promise<StoredKey[]> {
  const out: StoredKey[] = [];
  for (const e of await entriesOf(privkeys)) {
    const st = await lstatInside(privkeys, e.name);
    if (!st) continue;
    if (st.isSymbolicLink()) {
      out.push({ tenantId: e.name, name: '', modified: new Date(changedMs(st)), kind: 'link' });
      continue;
    }
    if (!st.isDirectory()) continue;
    const folder = await openChild(privkeys, e.name).catch(() => undefined);
    if (!folder) continue;
    try {
      const inner = await entriesOf(folder);
      const newest = await newestChangeOf(folder, inner);
      for (const f of inner) {
        out.push({
          tenantId: e.name,
          name: f.name,
          modified: new Date(newest),
          kind: f.isFile() ? 'file' : f.isSymbolicLink() ? 'link' : 'other',
        });
      }
    } finally {
      await folder.fh.close();
    }
  }
  return out;
}

/** Everything in an opened file, as UTF-8; `size` (its fstat size) is where the first read stops asking. */
async function readToEnd(fh: Handle, size: number): Promise<string> {
  let buffer = Buffer.allocUnsafe(size + 1);
  let length = 0;
  for (;;) {
    if (length === buffer.length) buffer = Buffer.concat([buffer, Buffer.allocUnsafe(buffer.length)]);
    const bytesRead = await fh.read(buffer, length, buffer.length - length);
    if (bytesRead === 0) break;
    length += bytesRead;
  }
  return buffer.toString('utf8', 0, length);
}

async function chownIfNeeded(owner: FileOwner, fh: Handle): Promise<void> {
  if (owner.uid === process.getuid?.() && owner.gid === process.getgid?.()) return;
  await fh.chown(owner.uid, owner.gid);
}
