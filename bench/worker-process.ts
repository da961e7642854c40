// A worker process for the benchmark: the real runWorker, with keys from real generation or,
// with --pooled-keys N, from a pre-generated pool (to measure everything but key generation).
import { loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/log/logger.js';
import { runWorker } from '../src/worker/run-worker.js';
import { pooledKeySource } from './pooled-keys.js';

const concurrency = Number(process.argv[2] ?? 4);
const pooled = process.argv[3] === '--pooled-keys' ? Number(process.argv[4]) : 0;
const config = loadConfig();
const keys = pooled > 0 ? await pooledKeySource(pooled) : undefined;
await runWorker(config, { concurrency, handleSignals: true, logger: createLogger('warn'), ...(keys ? { keys } : {}) });
process.stdout.write('ready\n');
