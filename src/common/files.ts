// Files we create for the operator (reports, revealed secrets, minted tokens): never through a
// symbolic link, never over an existing file unless the caller asks, and never half-written.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FileExistsError } from './errors.js';

export interface NewFileOptions {
  /** Default 0644; secrets use 0600. */
  mode?: number;
  /** Replace an existing file (atomically: a link in its place is replaced, never followed). */
  overwrite?: boolean;
  /** What the refusal of an existing file says after "<path> exists already: " (the way out the command has). */
  ifExists?: string;
}

const CHOOSE_NEW = 'choose a new file (dify-provision never writes over one unless asked)';

const NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** A new file, opened for writing: refused if anything (a file, a link) has the name already. */
export async function openNewFile(path: string, mode: number, shownAs = path, ifExists = CHOOSE_NEW): Promise<FileHandle> {
  const fh = await open(path, NEW, mode).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'EEXIST' || err.code === 'ELOOP' ? new FileExistsError(`${shownAs} exists already: ${ifExists}`) : err;
  });
  await fh.chmod(mode); // whatever the umask was
  return fh;
}

export async function writeNewFile(path: string, content: string | AsyncIterable<string>, opts: NewFileOptions = {}): Promise<void> {
  const target = opts.overwrite ? join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`) : path;
  const fh = await openNewFile(target, opts.mode ?? 0o644, path, opts.ifExists);
  try {
    if (typeof content === 'string') await fh.writeFile(content);
    else for await (const chunk of content) await fh.write(chunk);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(target).catch(() => {});
    throw err;
  } finally {
    await fh.close().catch(() => {});
  }
  if (opts.overwrite) {
    await rename(target, path).catch(async (err: unknown) => {
      await unlink(target).catch(() => {});
      throw err;
    });
  }
}
