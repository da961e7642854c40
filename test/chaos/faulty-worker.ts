// A real worker process whose key-file writes fail (EIO) until FAULT_UNTIL (ms since epoch):
// the fault enters through the storage interface, as a full or failing disk would.
// With CRASH_AT_STORE=n it also dies by SIGKILL at its n-th store of invitation tokens, after the
// workspace's COMMIT and before the SETEX in Dify's Redis (logged to CRASH_LOG first).
import { appendFileSync } from 'node:fs';
import { loadConfig } from '../../src/config/config.js';
import { DifyTokens } from '../../src/dify/invitations.js';
import { createLogger } from '../../src/log/logger.js';
import { runWorker } from '../../src/worker/run-worker.js';

const until = Number(process.env.FAULT_UNTIL ?? 0);
const crashAt = Number(process.env.CRASH_AT_STORE ?? 0);
if (crashAt > 0) {
  const store = DifyTokens.prototype.store;
  let stores = 0;
  DifyTokens.prototype.store = function (tokens) {
    if (++stores === crashAt) {
      if (process.env.CRASH_LOG) appendFileSync(process.env.CRASH_LOG, `${tokens.map((t) => t.invitee.workspaceId).join(' ')}\n`);
      process.kill(process.pid, 'SIGKILL');
    }
    return store.call(this, tokens);
  };
}
let failures = 0;
await runWorker(loadConfig(), {
  concurrency: Number(process.argv[2] ?? 4),
  lockDurationMs: 3000,
  handleSignals: true,
  logger: createLogger('warn', 1),
  ...(process.env.SWEEP_MS ? { sweep: { intervalMs: Number(process.env.SWEEP_MS), idleSeconds: 10 } } : {}),
  wrapStorage: (real) => ({
    ...real,
    async deploy(tenantId, keys) {
      if (Date.now() < until) {
        failures++;
        if (process.env.FAULT_LOG) appendFileSync(process.env.FAULT_LOG, `${tenantId}\n`);
        throw Object.assign(new Error(`EIO: i/o error, write (injected fault #${failures})`), { code: 'EIO' });
      }
      return real.deploy(tenantId, keys);
    },
  }),
});
process.stdout.write('ready\n');
