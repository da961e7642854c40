// `npm run demo`: the sample batch end to end on a fresh clone. Starts local Redis + PostgreSQL
// when REDIS_URL/DATABASE_URL are unset, makes a fresh database with Dify's schema and sample
// accounts, ingests samples/workspaces.csv, runs a worker until the batch is done, prints results.
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../config/config.js';
import { readRows } from '../csv/read-rows.js';
import { createLogger } from '../log/logger.js';
import { projectFile } from '../project-files.js';
import { enqueueBatch } from '../queue/enqueue-batch.js';
import { waitForBatch } from '../results/batches.js';
import { reportRows } from '../results/report.js';
import { createDifyDatabase } from '../services/dify-database.js';
import { startLocalServices, type LocalServices } from '../services/local-services.js';
import { runWorker } from '../../workers/provision-worker.js';
import { openQueue } from './context.js';
import { formatRejection } from './ingest-command.js';
import { formatStatus } from './batch-commands.js';
import { createProvisioner } from '../provisioner.js';
import { writeReports } from './wait-command.js';

const say = (m: string) => process.stdout.write(`${m}\n`);

export async function demoCommand(flags: { keep?: boolean; dir: string }, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const base = loadConfig(env);
  const demoDir = projectFile(flags.dir);
  let services: LocalServices | undefined;
  if (!base.redisUrl || !base.databaseUrl) {
    say('REDIS_URL/DATABASE_URL not set: starting local redis-server and PostgreSQL…');
    services = await startLocalServices({ dir: join(demoDir, 'services'), say });
  }
  try {
    const redisUrl = base.redisUrl ?? services!.redisUrl;
    const databaseUrl = await createDifyDatabase(base.databaseUrl ?? services!.databaseUrl, 'dify_provision_demo', {
      seedSql: await readFile(projectFile('samples', 'accounts.sql'), 'utf8'),
    });
    const storageDir = join(demoDir, 'storage');
    await rm(storageDir, { recursive: true, force: true });
    await mkdir(storageDir, { recursive: true });
    const config: Config = { ...base, redisUrl, databaseUrl, storageDir, queuePrefix: '{dify-provision-demo}' };
    say(`database: a fresh "dify_provision_demo" with Dify's schema and 10 sample accounts; keys under ${storageDir}`);
    await clearQueue(redisUrl, config.queuePrefix);
    return await runDemo(config, flags.dir);
  } finally {
    if (services) {
      await services.stop({ keep: false });
      say('local services stopped');
    }
  }
}

async function runDemo(config: Config, demoDirName: string): Promise<number> {
  const csv = projectFile('samples', 'workspaces.csv');
  const ctx = await openQueue(config);
  const worker = await runWorker(config, { concurrency: 4, logger: createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel) });
  try {
    say(`\ningesting ${csv}:`);
    const summary = await enqueueBatch(readRows(createReadStream(csv)), ctx, {
      batchId: 'demo',
      source: 'samples/workspaces.csv',
      onRejected: (row) => say(`  rejected ${formatRejection(row)}`),
    });
    say(`batch ${summary.batchId}: ${summary.total} rows read, ${summary.queued} queued, ${summary.rejected} rejected\n`);
    const status = await waitForBatch(ctx.db, summary.batchId, { intervalMs: 250, onProgress: (s) => say(`  ${formatStatus(s)}`) });
    say('\nresults:');
    for (const r of await reportRows(ctx.db, summary.batchId)) {
      const what = r.tenantId ? `tenant ${r.tenantId}` : (r.error ?? '');
      say(`  line ${String(r.line).padStart(2)}  ${r.outcome.padEnd(8)}  ${(r.workspaceName ?? '').slice(0, 28).padEnd(28)}  ${what}`);
    }
    say(`\n${formatStatus(status)}`);
    const provisioner = await createProvisioner({ ...config, redisUrl: config.redisUrl!, databaseUrl: config.databaseUrl! });
    try {
      const paths = await writeReports(provisioner.batch(summary.batchId), projectFile(demoDirName));
      say(`report: ${paths.csv}\n        ${paths.json}`);
    } finally {
      await provisioner.close();
    }
    return status.counts.queued + status.counts.active === 0 ? 0 : 1;
  } finally {
    await worker.close();
    await ctx.close();
  }
}

async function clearQueue(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl);
  try {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}
