// The file-system calls of the local key storage, on raw descriptors, made one of two ways: through
// libuv's thread pool (Node's asynchronous calls) or directly on the calling thread (Node's
// synchronous calls). A key deploy is ~25 calls, each a few microseconds of kernel work on a local
// disk; through the pool each also costs two thread wake-ups (the pool thread, then the event
// loop), more CPU than the call itself. So on a local file system (by statfs type) the cheap calls
// are made directly; fsync, the one call that waits on the disk, always goes through the pool.
// Slow storage sends an instance back to the pool for good, so the event loop is not held up
// again: when the direct calls' mean time (weighted over the last ~256 calls) passes `slowMs`
// (0.2 ms; a local disk answers in microseconds) while a quarter of them (weighted alike) took
// longer than that: storage slow call after call. Not a few long calls, however long: under fsync
// load ext4 makes a mkdir or rename wait for its journal now and then, and a busy machine
// deschedules a thread in the middle of a call. Measured in the pooled bench, the machine's two
// cores saturated: p50 6 µs, p99 0.29 ms, 2.6% of calls over 0.2 ms, the longest 4.7 ms; the mean
// alone (the rule until then) passed 0.2 ms in a run with more load and sent that worker to the
// pool for the rest of it (BENCHMARKS.md, issue 34, session 8).
//
// The calls and their arguments are the same either way (the same flags, the same paths through
// /proc/self/fd, the same order): only where they run differs, never what they do.
import {
  close,
  closeSync,
  fchmod,
  fchmodSync,
  fchown,
  fchownSync,
  fstat,
  fstatSync,
  fsync,
  lstat,
  lstatSync,
  mkdir,
  mkdirSync,
  open,
  openSync,
  read,
  readdir,
  readdirSync,
  readSync,
  rename,
  renameSync,
  rmdir,
  rmdirSync,
  statfsSync,
  unlink,
  unlinkSync,
  write,
  writeSync,
  type Dirent,
  type Stats,
} from 'node:fs';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';

/** An opened file or folder; `fd` is -1 once closed (so a path through /proc/self/fd never names a reused descriptor). */
export interface Handle {
  readonly fd: number;
  stat(): Promise<Stats>;
  chmod(mode: number): Promise<void>;
  chown(uid: number, gid: number): Promise<void>;
  /** The whole of `data`, at the current offset. */
  write(data: string | Buffer): Promise<void>;
  read(buffer: Buffer, offset: number, length: number): Promise<number>;
  /** Always through the pool: it waits on the disk. */
  sync(): Promise<void>;
  /** Closes once; later calls do nothing. */
  close(): Promise<void>;
}

export interface FsCalls {
  open(path: string, flags: number, mode?: number): Promise<Handle>;
  lstat(path: string): Promise<Stats>;
  mkdir(path: string, mode: number): Promise<void>;
  readdir(path: string): Promise<Dirent[]>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  /** Whether calls are made directly now (false once the storage showed itself slow). */
  readonly direct: boolean;
}

const pool = {
  open: promisify(open),
  close: promisify(close),
  fstat: promisify(fstat),
  fchmod: promisify(fchmod),
  fchown: promisify(fchown),
  fsync: promisify(fsync),
  write: promisify(write) as (fd: number, buffer: Buffer, offset: number, length: number) => Promise<{ bytesWritten: number }>,
  read: promisify(read) as (fd: number, buffer: Buffer, offset: number, length: number, position: null) => Promise<{ bytesRead: number }>,
  lstat: promisify(lstat),
  mkdir: promisify(mkdir),
  readdir: (path: string) => new Promise<Dirent[]>((ok, fail) => readdir(path, { withFileTypes: true }, (e, d) => (e ? fail(e) : ok(d)))),
  rename: promisify(rename),
  unlink: promisify(unlink),
  rmdir: promisify(rmdir),
};

/** Calls through libuv's pool only (doctor, and any storage not known to be local). */
export const POOLED: FsCalls = fsCalls({ direct: false });

export interface FsCallsOptions {
  /** Make the cheap calls directly (see the top of this file). */
  direct: boolean;
  /** The direct calls' weighted mean time (ms) past which, with a quarter of them slower than it, the instance goes back to the pool for good. Default 0.2. */
  slowMs?: number;
  /** How many calls the mean and the share of slow calls are weighted over (each call counts 1/weight). Default 256. */
  weight?: number;
  /** Told once, when that happens (the call's name and its time: never a path or content). */
  onSlow?: (message: string) => void;
  /** Milliseconds, for timing the direct calls (tests); default performance.now. */
  clock?: () => number;
}

/** The share of recent direct calls slower than `slowMs` that, with their mean past it, marks slow storage. */
const SLOW_SHARE = 0.25;

export function fsCalls(opts: FsCallsOptions): FsCalls {
  let direct = opts.direct;
  const { slowMs = 0.2, weight = 256, clock = () => performance.now() } = opts;
  let mean = 0;
  let slowShare = 0;
  const timed = (name: string, ms: number) => {
    mean += (ms - mean) / weight;
    slowShare += ((ms > slowMs ? 1 : 0) - slowShare) / weight;
    if (mean <= slowMs || slowShare < SLOW_SHARE || !direct) return;
    direct = false;
    opts.onSlow?.(
      `key storage calls on this thread took ${mean.toFixed(2)} ms each on average, ${Math.round(slowShare * 100)}% of them over ${slowMs} ms (the last: ${name}, ${ms.toFixed(1)} ms): ` +
        'its file-system calls go through the thread pool from now on',
    );
  };
  /** `work` on this thread, its time watched; its result or error as a settled promise. */
  const now = <T>(name: string, work: () => T): Promise<T> => {
    const start = clock();
    try {
      return Promise.resolve(work());
    } catch (err) {
      return Promise.reject(err as Error);
    } finally {
      timed(name, clock() - start);
    }
  };

  const handle = (opened: number): Handle => {
    let fd = opened;
    const live = () => fd;
    return {
      get fd() {
        return fd;
      },
      stat: () => (direct ? now('fstat', () => fstatSync(live())) : pool.fstat(live())),
      chmod: (mode) => (direct ? now('fchmod', () => fchmodSync(live(), mode)) : pool.fchmod(live(), mode)),
      chown: (uid, gid) => (direct ? now('fchown', () => fchownSync(live(), uid, gid)) : pool.fchown(live(), uid, gid)),
      async write(data) {
        const buffer = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
        let done = 0;
        while (done < buffer.length) {
          done += direct
            ? await now('write', () => writeSync(live(), buffer, done, buffer.length - done))
            : (await pool.write(live(), buffer, done, buffer.length - done)).bytesWritten;
        }
      },
      read: (buffer, offset, length) =>
        direct
          ? now('read', () => readSync(live(), buffer, offset, length, null))
          : pool.read(live(), buffer, offset, length, null).then((r) => r.bytesRead),
      sync: () => pool.fsync(live()),
      close() {
        if (fd < 0) return Promise.resolve();
        const closing = fd;
        fd = -1;
        return direct ? now('close', () => closeSync(closing)) : pool.close(closing);
      },
    };
  };

  return {
    get direct() {
      return direct;
    },
    open: (path, flags, mode) => (direct ? now('open', () => openSync(path, flags, mode)) : pool.open(path, flags, mode)).then(handle),
    lstat: (path) => (direct ? now('lstat', () => lstatSync(path)) : pool.lstat(path)),
    mkdir: async (path, mode) => {
      await (direct ? now('mkdir', () => mkdirSync(path, { mode })) : pool.mkdir(path, { mode }));
    },
    readdir: (path) => (direct ? now('readdir', () => readdirSync(path, { withFileTypes: true })) : pool.readdir(path)),
    rename: (from, to) => (direct ? now('rename', () => renameSync(from, to)) : pool.rename(from, to)),
    unlink: (path) => (direct ? now('unlink', () => unlinkSync(path)) : pool.unlink(path)),
    rmdir: (path) => (direct ? now('rmdir', () => rmdirSync(path)) : pool.rmdir(path)),
  };
}

// statfs f_type of the local, disk- or memory-backed Linux file systems (linux/magic.h); anything
// else (NFS, SMB, FUSE mounts of object stores, …) is never called directly.
const LOCAL_FS_TYPES = new Set([
  0xef53, // ext2/3/4
  0x58465342, // xfs
  0x9123683e, // btrfs
  0x01021994, // tmpfs
  0x858458f6, // ramfs
  0x794c7630, // overlayfs
  0x2fc12fc1, // zfs
  0xf2f52010, // f2fs
]);

/** Whether `path` is on a local file system of Linux (statfs), where the cheap calls may be made directly. */
export function isLocalFileSystem(path: string): boolean {
  if (process.platform !== 'linux') return false;
  try {
    return LOCAL_FS_TYPES.has(statfsSync(path).type);
  } catch {
    return false;
  }
}
