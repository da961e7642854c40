// Temporary files with no name: created in the system's temporary folder and unlinked at once, so
// nothing is left behind whatever happens to the process (a crash, SIGKILL); the space is freed
// when the descriptor is closed.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A new nameless file open for reading and writing (0600); the caller closes the descriptor. */
export function openScratchFile(what: string): number {
  const path = join(tmpdir(), `dify-provision-${what}-${randomBytes(8).toString('hex')}`);
  const fd = openSync(path, 'wx+', 0o600);
  try {
    unlinkSync(path);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}
