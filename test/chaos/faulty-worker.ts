// A real worker process whose key-file writes fail (EIO) until FAULT_UNTIL (ms since epoch):
// the fault enters through the storage interface, as a full or failing disk would.
import { appendFileSync } from 'node:fs';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { runWorker } from '../../src/worker/run-worker.js';

const until = Number(process.env.FAULT_UNTIL ?? 0);
let failures = 0;
await runWorker(loadConfig(), {
  concurrency: Number(process.argv[2] ?? 4),
  lockDurationMs: 3000,
  handleSignals: true,
  logger: createLogger('warn', 1),
  wrapStorage: (real) => ({
    ...real,
    async deploy(tenantId, privatePem, publicPem) {
      if (Date.now() < until) {
        failures++;
        if (process.env.FAULT_LOG) appendFileSync(process.env.FAULT_LOG, `${tenantId}\n`);
        throw Object.assign(new Error(`EIO: i/o error, write (injected fault #${failures})`), { code: 'EIO' });
      }
      return real.deploy(tenantId, privatePem, publicPem);
    },
  }),
});
process.stdout.write('ready\n');
