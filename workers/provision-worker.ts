// The worker process, as BullMQ users run one: `node dist/workers/provision-worker.js`, configured
// by the environment (README: Configuration). `dify-provision worker` does the same with flags.
import { loadConfig } from '../src/config/config.js';
import { runWorker } from '../src/worker/run-worker.js';

await runWorker(loadConfig(), { handleSignals: true });
