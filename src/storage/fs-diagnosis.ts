// What a failed file operation on the key storage means, in the operator's terms: the path, the
// cause as the OS gave it (EACCES, EPERM, …), who owns the folder in the way and with which mode,
// which user this process runs as, and which setting to check.
import { lstatSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname } from 'node:path';
import { PreflightError } from '../common/errors.js';

const CAUSES: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  ENOENT: 'no such file or folder',
  ENOTDIR: 'a part of the path is not a folder',
  ELOOP: 'a symbolic link where none is followed',
};

/** "uid 1001 (dify)", or just the number when no local account has it. */
function user(uid: number): string {
  let name: string | undefined;
  try {
    name = uid === process.getuid?.() ? userInfo().username : undefined;
    name ??= readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .map((line) => line.split(':'))
      .find((f) => f[2] === String(uid))?.[0];
  } catch {
    // no name to give
  }
  return name ? `uid ${uid} (${name})` : `uid ${uid}`;
}

/** "owned by uid 1001, group 1001, mode 0755" for the path, or its nearest existing parent. */
function ownership(path: string): string {
  for (let p = path; ; p = dirname(p)) {
    try {
      const st = lstatSync(p);
      const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
      return `${p} is owned by ${user(st.uid)}, group ${st.gid}, mode ${mode}`;
    } catch {
      if (dirname(p) === p) return `${path} cannot be examined`;
    }
  }
}

/**
 * A PreflightError for `action` ("create", "open", …) on `path` that failed with `err`: names the
 * OS's code, the owner and mode of the folder in the way, the user this process runs as, and the
 * setting to check. Errors without an OS code are returned as they are.
 */
export function storageFsError(err: unknown, action: string, path: string, setting = 'DIFY_STORAGE_DIR'): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string' || !/^E[A-Z]+$/.test(code)) return err;
  const inTheWay = code === 'ENOENT' || action === 'create' ? dirname(path) : path;
  const me = `this process runs as ${user(process.getuid?.() ?? -1)}, group ${process.getgid?.() ?? '?'}`;
  const access =
    code === 'EACCES' || code === 'EPERM'
      ? `: ${ownership(inTheWay)}, and ${me} — run it as that owner (or root), or give the folder to the user that runs it`
      : '';
  return new PreflightError(`${path}: cannot ${action}: ${code} (${CAUSES[code] ?? 'system error'})${access}; check ${setting}`);
}
