// The built CLI run as another user (uid 1001, nobody, …) whatever folder the checkout is in. A
// clone in a private folder (0700, as /root or many home folders are) cannot be traversed by that
// user: the command gets a mount namespace of its own in which the checkout is bind-mounted at a
// folder anyone can reach, and runs the CLI from there, as the image runs it from /app.
import { lstatSync, statSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/common/project-files.js';

/** Throws unless every folder from `path` up to `/` lets others through (o+x). */
export function assertReachableByAnyone(path: string): void {
  for (let dir = path; ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) {
      throw new Error(
        `${dir} is not traversable by other users (mode ${(statSync(dir).mode & 0o777).toString(8)}): set TMPDIR to a folder they can reach`,
      );
    }
    if (dirname(dir) === dir) return;
  }
}

/**
 * An empty folder, 0755, under a path anyone can traverse: where the checkout is mounted. One
 * fixed folder, made once and kept (the mounts are in the commands' own namespaces: nothing to undo).
 */
async function appFolder(): Promise<string> {
  const folder = join(tmpdir(), 'dify-provision-app');
  await mkdir(folder, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const st = lstatSync(folder);
  if (!st.isDirectory() || st.uid !== process.getuid?.())
    throw new Error(`${folder} is not a folder of this user's: remove it (it is where the tests mount the checkout)`);
  await chmod(folder, 0o755);
  assertReachableByAnyone(folder);
  assertReachableByAnyone(dirname(process.execPath)); // node itself
  return folder;
}

/**
 * The program and arguments that run `node <the CLI> …cliArgs` as `user`/`group` (names or numbers,
 * for setpriv), the CLI read from the checkout mounted at a reachable folder. Needs root.
 */
export async function cliAsUser(user: string | number, group: string | number, cliArgs: string[]): Promise<[string, string[]]> {
  const app = await appFolder();
  // unshare --mount makes the mount private to this command; it is gone when the command ends.
  const script = 'mount --rbind "$1" "$2" && shift 2 && exec "$@"'; // rbind: with what is mounted inside it (node_modules)
  const setpriv = ['setpriv', `--reuid=${user}`, `--regid=${group}`, '--clear-groups', '--'];
  return [
    'unshare',
    [
      '--mount',
      '--',
      'sh',
      '-c',
      script,
      'sh',
      PACKAGE_ROOT,
      app,
      ...setpriv,
      process.execPath,
      join(app, 'dist', 'src', 'cli', 'main.js'),
      ...cliArgs,
    ],
  ];
}
