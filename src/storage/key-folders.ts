// Handle-relative work under Dify's privkeys/ folder, which Dify's own user (and so whoever holds
// it) can write while a root worker or doctor works there. Every step goes through a folder handle
// opened without following links (on Linux /proc/self/fd/N names the opened folder itself, whatever
// its path points to by then: an openat equivalent); nothing is ever removed recursively, only the
// names we create ourselves (private.pem and our temp files), then the folder if it is empty.
// A folder carries the calls it was opened with (fs-calls.ts): what is reached through it is
// reached the same way.
import { constants, existsSync, type Dirent, type Stats } from 'node:fs';
import { join } from 'node:path';
import { POOLED, type FsCalls, type Handle } from './fs-calls.js';

export const KEY_FILE = 'private.pem';
export const TEMP_NAME = /^\.private\.pem\.[0-9a-f]{12}\.tmp$/;
const FOLDER = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

// Linux's /proc/self/fd; elsewhere the path (callers check the folder again after writing).
export const BY_HANDLE = process.platform === 'linux' && existsSync('/proc/self/fd');

/** A folder opened without following a link; `path` is for messages only, never for access. */
export interface Folder {
  readonly fh: Handle;
  /** How everything inside it is reached. */
  readonly calls: FsCalls;
  readonly path: string;
  readonly dev: number;
  readonly ino: number;
  readonly uid: number;
}

/** How to reach `name` inside an opened folder (never through `folder.path` on Linux). */
export const inside = (folder: Folder, name: string) => (BY_HANDLE ? `/proc/self/fd/${folder.fh.fd}/${name}` : join(folder.path, name));

/** Why a folder could not be opened: a link, not a folder, absent, or the OS's own reason. */
export class FolderRefused extends Error {
  constructor(
    readonly path: string,
    readonly reason: 'link' | 'not-folder' | 'absent' | 'replaced' | 'os',
    readonly detail: string,
    /** The OS's error code (EACCES, ELOOP, …). */
    readonly code?: string,
  ) {
    super(`${path} ${detail}`);
  }
}

const describeOpenError = (err: NodeJS.ErrnoException): [FolderRefused['reason'], string] =>
  err.code === 'ELOOP'
    ? ['link', 'is a symbolic link']
    : err.code === 'ENOTDIR'
      ? ['not-folder', 'exists and is not a folder']
      : err.code === 'ENOENT'
        ? ['absent', 'does not exist']
        : ['os', `cannot be opened (${err.code ?? err.message})`];

async function openAt(target: string, shown: string, calls: FsCalls): Promise<Folder> {
  const fh = await calls.open(target, FOLDER).catch(async (err: NodeJS.ErrnoException) => {
    // O_DIRECTORY answers ENOTDIR for a link too: ask what the name is, without following it.
    const isLink = err.code === 'ENOTDIR' && (await calls.lstat(target).catch(() => undefined))?.isSymbolicLink();
    const [reason, detail] = describeOpenError(isLink ? Object.assign(err, { code: 'ELOOP' }) : err);
    throw new FolderRefused(shown, reason, detail, err.code);
  });
  const st = await fh.stat().catch(async (err: unknown) => {
    await fh.close();
    throw err;
  });
  return { fh, calls, path: shown, dev: st.dev, ino: st.ino, uid: st.uid };
}

/**
 * A folder by path, never through a link at its last component; `same` must be that very folder
 * (by inode). `calls`: how it and everything inside it is reached (default: the thread pool).
 */
export async function openFolder(path: string, same?: Pick<Folder, 'dev' | 'ino'>, calls: FsCalls = POOLED): Promise<Folder> {
  const folder = await openAt(path, path, calls);
  if (same && (folder.dev !== same.dev || folder.ino !== same.ino)) {
    await folder.fh.close();
    throw new FolderRefused(path, 'replaced', 'was replaced by another folder since it was first opened');
  }
  return folder;
}

/** A child folder of an opened folder, never through a link. */
export const openChild = (parent: Folder, name: string): Promise<Folder> =>
  openAt(inside(parent, name), join(parent.path, name), parent.calls);

export const entriesOf = (folder: Folder): Promise<Dirent[]> =>
  folder.calls.readdir(BY_HANDLE ? `/proc/self/fd/${folder.fh.fd}` : folder.path);

export const lstatInside = (folder: Folder, name: string): Promise<Stats | undefined> =>
  folder.calls.lstat(inside(folder, name)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });

/** A PEM RSA key is a few KiB (4096 bits: about 3.3 KiB); a file bigger than this is not a key and is never read. */
export const MAX_KEY_BYTES = 64 * 1024;

/** A name under our key name that is no key file: not a regular file, or too big to be one (nothing was read). */
export class NotAKeyFile extends Error {}

const kindOf = (st: Stats) =>
  st.isFIFO()
    ? 'a FIFO'
    : st.isDirectory()
      ? 'a folder'
      : st.isSocket()
        ? 'a socket'
        : st.isCharacterDevice() || st.isBlockDevice()
          ? 'a device'
          : 'not a regular file';

/**
 * The text of a key file inside an opened folder, read only if it can be one: opened without
 * following a link and without blocking (a FIFO under the name would otherwise wait for a writer
 * forever), checked on the handle to be a regular file of at most MAX_KEY_BYTES (a sparse file of
 * gigabytes is never read), and read only that far (a file growing meanwhile is refused too).
 */
export async function readKeyText(folder: Folder, name: string = KEY_FILE): Promise<string> {
  const fh = await folder.calls.open(inside(folder, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NotAKeyFile(`it is ${kindOf(st)}, not a regular file: not read`);
    if (st.size > MAX_KEY_BYTES) throw new NotAKeyFile(`it is ${st.size} bytes, more than a key file can be (${MAX_KEY_BYTES}): not read`);
    const buffer = Buffer.alloc(MAX_KEY_BYTES + 1);
    let length = 0;
    for (;;) {
      const bytesRead = await fh.read(buffer, length, buffer.length - length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_KEY_BYTES) throw new NotAKeyFile(`it grew past ${MAX_KEY_BYTES} bytes while being read: not read`);
    }
    return buffer.toString('utf8', 0, length);
  } finally {
    await fh.close();
  }
}

/** Names we write into a tenant's folder: the key and our temp files. */
export const isOurName = (name: string) => name === KEY_FILE || TEMP_NAME.test(name);

/** The newest change the storage's user cannot backdate: ctime moves to now on any change, touch included. */
export const changedMs = (st: Stats) => Math.max(st.ctimeMs, st.mtimeMs);

/** The newest change (changedMs) of an opened folder and of the names in it (`entries`, read by the caller). */
export async function newestChangeOf(folder: Folder, entries: Dirent[]): Promise<number> {
  const stats = await Promise.all([folder.fh.stat(), ...entries.map((e) => lstatInside(folder, e.name))]);
  return Math.max(...stats.map((s) => (s ? changedMs(s) : 0)));
}

/** A tenant's entry could not be removed because it holds something that is not ours: left alone. */
export class LeftAlone extends Error {}

/**
 * Removes `parent/name` as far as it is ours: a link there is removed itself (never its target);
 * a folder loses only private.pem and our temp files (each unlinked through the folder's handle,
 * so a link is removed itself and a folder under one of those names stays), and is then removed
 * if empty. A folder holding anything else is left alone: throws LeftAlone naming what it holds.
 * `same` (device and inode) makes sure it is the folder we wrote into, not one swapped in since.
 */
export async function removeOurNames(parent: Folder, name: string, same?: Pick<Folder, 'dev' | 'ino'>): Promise<void> {
  const shown = join(parent.path, name);
  const st = await lstatInside(parent, name);
  if (!st) return;
  if (st.isSymbolicLink()) {
    await parent.calls.unlink(inside(parent, name)); // the link itself: unlink never follows its last component
    await parent.fh.sync().catch(() => {});
    return;
  }
  if (!st.isDirectory()) throw new LeftAlone(`${shown} is not a folder and not ours: left alone`);
  const folder = await openChild(parent, name).catch((err: unknown) => {
    throw new LeftAlone(`${(err as Error).message}: left alone`);
  });
  const kept: string[] = [];
  try {
    if (same && (folder.dev !== same.dev || folder.ino !== same.ino)) {
      throw new LeftAlone(`${shown} was replaced by another folder: left alone`);
    }
    for (const entry of await entriesOf(folder)) {
      if (!isOurName(entry.name)) {
        kept.push(entry.name);
        continue;
      }
      await folder.calls.unlink(inside(folder, entry.name)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') kept.push(entry.name); // EISDIR/EPERM: a folder under our name is not ours
      });
    }
    await folder.fh.sync().catch(() => {});
  } finally {
    await folder.fh.close();
  }
  if (kept.length > 0) {
    throw new LeftAlone(`${shown} holds ${kept.map((k) => JSON.stringify(k)).join(', ')}, which dify-provision did not write: left alone`);
  }
  await parent.calls.rmdir(inside(parent, name)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return;
    throw new LeftAlone(`${shown} could not be removed (${err.code ?? err.message}): left alone`);
  });
  await parent.fh.sync().catch(() => {});
}
