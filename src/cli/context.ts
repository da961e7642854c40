// The runtime a command needs, opened once and closed when the command is done.
import type { Config } from '../config/config.js';
import { provisionerOn, type Provisioner } from '../provisioner.js';
import { openQueueRuntime } from '../runtime/runtime.js';

/** A provisioner for one command, closed when the command is done. */
export async function withProvisioner<T>(config: Config, fn: (p: Provisioner) => Promise<T>): Promise<T> {
  const p = provisionerOn(await openQueueRuntime(config));
  try {
    return await fn(p);
  } finally {
    await p.close();
  }
}
