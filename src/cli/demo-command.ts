// `npm run demo`: the sample batch end to end on a fresh clone. Starts local Redis + PostgreSQL
// when REDIS_URL/DATABASE_URL are unset, makes a fresh database with Dify's schema and sample
// accounts, ingests samples/workspaces.csv, runs a worker until the batch is done, prints results.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/config.js';
import { createLogger } from '../log/logger.js';
import { projectFile } from '../common/project-files.js';
import { provisionerOn } from '../provisioner.js';
import { openQueueRuntime } from '../runtime/runtime.js';
import { createDifyDatabase } from '../services/dify-database.js';
import { startLocalServices, type LocalServices } from '../services/local-services.js';
import { reportRows } from '../store/report.js';
import { runWorker } from '../worker/run-worker.js';
import { formatStatus } from './batch-commands.js';
import { formatRejection } from './rejections.js';
import { escapeControls } from './terminal.js';
import { writeReports } from './wait-command.js';

const say = (m: string) => process.stdout.write(`${m}\n`);

export async function demoCommand(flags: { dir: string }, base: Config): Promise<number> {
  const demoDir = projectFile(flags.dir);
  let services: LocalServices | undefined;
  if (!base.redisUrl || !base.databaseUrl) {
    say('REDIS_URL/DATABASE_URL not set: starting local redis-server and PostgreSQL…');
    services = await startLocalServices({ say });
  }
  try {
    const redisUrl = base.redisUrl ?? services!.redisUrl;
    const databaseUrl = await createDifyDatabase(base.databaseUrl ?? services!.databaseUrl, 'dify_provision_demo', {
      seedSql: await readFile(projectFile('samples', 'accounts.sql'), 'utf8'),
    });
    const storageDir = join(demoDir, 'storage');
    await rm(storageDir, { recursive: true, force: true });
    await mkdir(storageDir, { recursive: true });
    const config: Config = {
      ...base,
      redis: undefined,
      redisUrl,
      database: undefined,
      databaseUrl,
      storageDir,
      storage: undefined,
      storageProblem: undefined,
      storageNote: undefined,
      queuePrefix: '{dify-provision-demo}',
    };
    say(`database: a fresh "dify_provision_demo" with Dify's schema and 10 sample accounts; keys under ${storageDir}`);
    return await runDemo(config, demoDir);
  } finally {
    if (services) {
      await services.stop();
      say('local services stopped');
    }
  }
}

async function runDemo(config: Config, demoDir: string): Promise<number> {
  const csv = projectFile('samples', 'workspaces.csv');
  const rt = await openQueueRuntime(config);
  const provisioner = provisionerOn(rt);
  // A fresh queue: the demo's batch id is fixed, and its database was just made anew.
  await rt.queue.obliterate({ force: true });
  // The demo's output is its own lines: the worker's JSON log stays off unless DIFY_PROVISION_LOG_LEVEL asks for it
  // (every row's outcome, failures included, is in the results below).
  const worker = await runWorker(config, { concurrency: 4, logger: createLogger(config.logLevel === 'info' ? 'silent' : config.logLevel) });
  try {
    // Its worker serves the queue before the batch is followed (else the first lines say "stalled").
    while ((await provisioner.workers()) === 0) await new Promise((r) => setTimeout(r, 50));
    say(`\ningesting ${csv}:`);
    const batch = await provisioner.enqueueCsv(csv, {
      batchId: 'demo',
      source: 'samples/workspaces.csv',
      onRejected: (row) => say(`  rejected ${formatRejection(row)}`),
    });
    const { summary } = batch;
    say(`batch ${summary.batchId}: ${summary.total} rows read, ${summary.queued} queued, ${summary.rejected} rejected\n`);
    let status = await batch.status();
    let shown = '';
    for await (const s of batch.progress(250)) {
      const line = `  ${formatStatus(s)}`;
      if (line !== shown) say(line); // a line when something changed, not every poll
      shown = line;
      status = s;
    }
    say('\nresults:');
    for (const r of await reportRows(rt.db, summary.batchId)) {
      const what = r.tenantId ? `tenant ${r.tenantId}` : (r.error ?? '');
      const name = escapeControls((r.workspaceName ?? '').slice(0, 28)).padEnd(28);
      say(`  line ${String(r.line).padStart(2)}  ${r.outcome.padEnd(8)}  ${name}  ${escapeControls(what)}`);
    }
    say(`\n${formatStatus(status)}`);
    const paths = await writeReports(batch, demoDir, { overwrite: true });
    say(`report: ${paths.csv}\n        ${paths.json}`);
    return status.open === 0 ? 0 : 1;
  } finally {
    await worker.close();
    await provisioner.close();
  }
}
