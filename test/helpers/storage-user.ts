// Dify's storage user as a real second account (uid 1001, as in Dify's container) for attacks on the
// key folders: a shell loop run under that uid while a root worker or doctor works there.
import { spawn, spawnSync } from 'node:child_process';
import { chmod, chown } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestEnv } from './test-env.js';

export const STORAGE_UID = 1001;
export const isRoot = process.getuid?.() === 0;

/** Hands the env's storage to uid 1001 (as Dify's container has it) and lets that user reach it. */
export async function storageOwnedByDifyUser(env: TestEnv): Promise<void> {
  if (spawnSync('id', [String(STORAGE_UID)]).status !== 0) {
    throw new Error(`no user with uid ${STORAGE_UID}: \`npm test\` creates it when run as root (see docs/testing.md)`);
  }
  await chmod(env.dir, 0o711); // the test's own temp folder is 0700; the storage user must reach storage/
  await chown(env.config.storageDir, STORAGE_UID, STORAGE_UID);
}

export interface Attacker {
  /** Stops the loop and waits for it; resolves to what it printed. */
  stop(): Promise<string>;
}

/**
 * Runs `body` in a loop as uid 1001 until stopped (bounded: at most `maxSeconds`), in `cwd`.
 * `body` is bash; its failures are expected (EACCES, ENOENT) and ignored.
 */
export function attackAsStorageUser(cwd: string, body: string, maxSeconds = 120): Attacker {
  const stopFile = join(cwd, '..', `.stop-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const script = `end=$((SECONDS + ${maxSeconds})); while [ ! -e '${stopFile}' ] && [ $SECONDS -lt $end ]; do ${body}; done 2>/dev/null; echo looped`;
  const child = spawn('setpriv', [`--reuid=${STORAGE_UID}`, `--regid=${STORAGE_UID}`, '--clear-groups', '--', 'bash', '-c', script], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      spawnSync('touch', [stopFile]);
      await exited;
      spawnSync('rm', ['-f', stopFile]);
      return out;
    },
  };
}
