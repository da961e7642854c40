// What this process has open, as Linux names it (a file unlinked while open reads "… (deleted)").
import { readdirSync, readlinkSync } from 'node:fs';

/** The paths of this process's open descriptors that contain `part`. */
export function openFilesNamed(part: string): string[] {
  return readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return ''; // closed since it was listed
      }
    })
    .filter((l) => l.includes(part));
}
