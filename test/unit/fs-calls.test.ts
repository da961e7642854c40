// The local key storage's file-system calls (storage/fs-calls.ts): made directly or through the
// thread pool, they must do exactly the same; a closed handle never closes a descriptor reused
// since; slow storage sends an instance back to the pool once, and a busy machine's odd slow call
// does not.
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fsCalls, isLocalFileSystem, POOLED, type FsCalls } from '../../src/storage/fs-calls.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fs-calls-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const FOLDER = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** What a settled call gave: its value (through `show`), or its error's code. */
const outcome = <T>(p: Promise<T>, show: (v: T) => unknown = (v) => v) =>
  p.then(
    (v) => ({ ok: show(v) }),
    (err: NodeJS.ErrnoException) => ({ error: err.code ?? err.message }),
  );

/** The steps of a deploy and the refusals that protect it, in `root`, every outcome recorded. */
async function scenario(calls: FsCalls, root: string): Promise<unknown[]> {
  const seen: unknown[] = [];
  await symlink(join(root, 't'), join(root, 'link'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  seen.push(await outcome(calls.mkdir(join(root, 't'), 0o700)));
  seen.push(await outcome(calls.mkdir(join(root, 't'), 0o700)));
  seen.push(await outcome(calls.open(join(root, 'link'), FOLDER), () => 'opened'));
  seen.push(await outcome(calls.open(join(root, 'link'), constants.O_RDONLY | constants.O_NOFOLLOW), () => 'opened'));
  seen.push(await outcome(calls.lstat(join(root, 'link')), (st) => st.isSymbolicLink()));
  // A FIFO opened without blocking (directly too), then seen for what it is.
  const fifo = await calls.open(join(root, 'fifo'), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  seen.push(await outcome(fifo.stat(), (st) => st.isFIFO()));
  await fifo.close();
  const folder = await calls.open(join(root, 't'), FOLDER);
  const st = await folder.stat();
  seen.push({ folder: st.isDirectory(), mode: (st.mode & 0o777).toString(8) });
  const inside = (name: string) => `/proc/self/fd/${folder.fd}/${name}`;
  const file = await calls.open(inside('.tmp'), NEW_FILE, 0o600);
  await file.chmod(0o640);
  await file.write('-----BEGIN PRIVATE KEY-----\n');
  await file.write(Buffer.from('é'.repeat(40_000)));
  seen.push(await outcome(file.stat(), (s) => ({ size: s.size, mode: (s.mode & 0o777).toString(8) })));
  await file.sync();
  await file.close();
  seen.push(await outcome(calls.open(inside('.tmp'), NEW_FILE, 0o600), () => 'opened'));
  seen.push(await outcome(calls.rename(inside('.tmp'), inside('private.pem'))));
  await folder.sync();
  seen.push(await outcome(calls.readdir(`/proc/self/fd/${folder.fd}`), (es) => es.map((e) => [e.name, e.isFile()])));
  const back = await calls.open(inside('private.pem'), constants.O_RDONLY | constants.O_NOFOLLOW);
  const buffer = Buffer.alloc(100_000);
  let length = 0;
  for (let n = -1; n !== 0; length += n) n = await back.read(buffer, length, buffer.length - length);
  seen.push(buffer.toString('utf8', 0, length) === '-----BEGIN PRIVATE KEY-----\n' + 'é'.repeat(40_000));
  await back.close();
  seen.push(await outcome(calls.rmdir(join(root, 't'))));
  seen.push(await outcome(calls.unlink(inside('private.pem'))));
  seen.push(await outcome(calls.unlink(inside('private.pem'))));
  await folder.close();
  seen.push(folder.fd);
  seen.push(await outcome(calls.rmdir(join(root, 't'))));
  return seen;
}

describe.skipIf(process.platform !== 'linux')('the local key storage’s file-system calls', () => {
  it('do the same, with the same refusals, made directly or through the pool', async () => {
    await mkdir(join(dir, 'a'));
    await mkdir(join(dir, 'b'));
    const direct = fsCalls({ direct: true, slowMs: Infinity });
    const pooled = await scenario(POOLED, join(dir, 'a'));
    expect(await scenario(direct, join(dir, 'b'))).toEqual(pooled);
    expect(direct.direct).toBe(true);
    expect(pooled).toContainEqual({ error: 'ELOOP' }); // the link refused, not followed
    expect(pooled).toContainEqual({ error: 'EEXIST' }); // O_EXCL held
    expect(pooled).toContainEqual({ error: 'ENOTEMPTY' }); // never removed with the key inside
  });

  it.each([
    ['directly', () => fsCalls({ direct: true, slowMs: Infinity })],
    ['through the pool', () => POOLED],
  ])('close a handle once (%s): a second close does not close the descriptor reused since', async (_, make) => {
    const calls = make();
    await writeFile(join(dir, 'f'), 'x');
    const first = await calls.open(join(dir, 'f'), constants.O_RDONLY);
    const fd = first.fd;
    await first.close();
    expect(first.fd).toBe(-1);
    const second = await calls.open(join(dir, 'f'), constants.O_RDONLY);
    expect(second.fd).toBe(fd); // the lowest free descriptor: the one just closed
    await first.close();
    expect((await second.stat()).size).toBe(1);
    await second.close();
  });

  /** Calls whose every direct call the clock times as `ms()` milliseconds. */
  const clocked = (ms: () => number) => {
    const warned: string[] = [];
    let t = 0;
    let readings = 0;
    const calls = fsCalls({
      direct: true,
      onSlow: (m) => warned.push(m),
      clock: () => (readings++ % 2 === 0 ? t : (t += ms())), // a call's start, then its end
    });
    return { calls, warned };
  };

  it('go back to the pool for good once the calls take 1 ms each (a slow disk), saying so once without a path', async () => {
    let ms = 1;
    const { calls, warned } = clocked(() => ms);
    const secret = join(dir, 'tenant-0f9c');
    for (let i = 0; i < 70; i++) await calls.lstat(secret).catch(() => {});
    expect(calls.direct).toBe(true); // a quarter of the last ~256 calls are not slow yet
    for (let i = 0; i < 10; i++) await calls.lstat(secret).catch(() => {});
    expect(calls.direct).toBe(false);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(
      /^key storage calls on this thread took 0\.2\d ms each on average, 25% of them over 0\.2 ms \(the last: lstat, 1\.0 ms\): /,
    );
    expect(warned[0]).not.toContain(dir);
    ms = 100;
    expect((await calls.lstat(dir)).isDirectory()).toBe(true); // through the pool now, same answers
    expect(warned).toHaveLength(1);
  });

  it('stay direct through a busy machine’s slow calls, however long (a journal wait, a descheduled thread), and go back when a quarter of them are slow', async () => {
    let n = 0;
    // Every 300th call 20 ms, and once three calls of 5 ms in a row; the rest 10 µs.
    const busy = clocked(() => (n++ % 300 === 299 ? 20 : n >= 1000 && n < 1003 ? 5 : 0.01));
    for (let i = 0; i < 3000; i++) await busy.calls.lstat(dir);
    expect({ direct: busy.calls.direct, warned: busy.warned }).toEqual({ direct: true, warned: [] });
    // One stall of 60 ms, then another 100 calls later: the mean passes 0.2 ms, the calls are not slow one after another.
    let m = 0;
    const stalls = clocked(() => (m++ % 100 === 0 ? 60 : 0.01));
    for (let i = 0; i < 300; i++) await stalls.calls.lstat(dir);
    expect({ direct: stalls.calls.direct, warned: stalls.warned }).toEqual({ direct: true, warned: [] });
    // Every third call 1 ms (storage slow call after call): back to the pool.
    let k = 0;
    const slow = clocked(() => (k++ % 3 === 0 ? 1 : 0.01));
    for (let i = 0; i < 1000 && slow.calls.direct; i++) await slow.calls.lstat(dir);
    expect(slow.calls.direct).toBe(false);
    expect(slow.warned).toEqual([expect.stringMatching(/ took 0\.\d+ ms each on average, 25% of them over 0\.2 ms /)]);
  });

  it('are made directly only on a local file system', () => {
    expect(isLocalFileSystem(dir)).toBe(true); // ext4, tmpfs, overlayfs, … wherever the tests run
    expect(isLocalFileSystem('/proc')).toBe(false);
    expect(isLocalFileSystem(join(dir, 'absent'))).toBe(false);
  });
});
