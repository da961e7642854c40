// npm run bench: tenants per second against the key-generation ceiling, the manual recipe, and
// ingest at scale, in one run on one machine. Prints a table (and JSON with --json).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { promisify } from 'node:util';
import { Command } from 'commander';
import { Redis } from 'ioredis';
import { createPool } from '../src/db/pool.js';
import { projectFile } from '../src/common/project-files.js';
import { rsaKeySource } from '../src/crypto/rsa-keys.js';
import { waitForBatch } from '../src/store/batches.js';
import { createDifyDatabase } from '../src/services/dify-database.js';
import { startLocalServices, type LocalServices } from '../src/services/local-services.js';

const run = promisify(execFile);
const CLI = projectFile('dist', 'src', 'cli', 'main.js');
const ACCOUNTS = 200;

const opts = new Command('bench')
  .option('--n <n>', 'rows for the pipeline runs', (v) => Number(v), 2000)
  .option('--manual-n <n>', 'tenants for the manual recipe', (v) => Number(v), 300)
  .option('--pool-n <n>', 'rows for the everything-but-keygen run', (v) => Number(v), 5000)
  .option('--ingest-n <n>', 'rows for ingest throughput', (v) => Number(v), 100_000)
  .option('--rss-n <n>', 'rows for the ingest peak-RSS run', (v) => Number(v), 1_000_000)
  .option('--xlsx-n <n>', 'rows for the .xlsx ingest run', (v) => Number(v), 100_000)
  .option('--concurrency <n>', 'jobs in flight per worker process', (v) => Number(v), 8)
  .option('--pool-concurrency <n>', 'jobs in flight per worker process with pooled keys', (v) => Number(v), 32)
  .option('--scale-workers <list>', 'worker processes for the scale runs (pooled keys)', '1,2,4')
  .option('--changes-n <n>', 'member changes for the changes run (10 per workspace)', (v) => Number(v), 10_000)
  .option('--changes-concurrency <n>', 'jobs in flight in the changes run', (v) => Number(v), 32)
  .option(
    '--dify-accounts <n>',
    "more accounts in Dify's accounts table beside the 200 owners (a Dify with many users)",
    (v) => Number(v),
    0,
  )
  .option('--lower-email-index', "create an index on lower(email) of Dify's accounts (what docs/scaling.md advises for a large Dify)")
  .option('--only <parts>', 'comma-separated: ceiling,pipeline1,pipeline2,manual,pooled,scale,ingest,rss,xlsx,changes')
  .option('--json', 'also print the figures as JSON')
  .parse()
  .opts<{
    n: number;
    manualN: number;
    poolN: number;
    ingestN: number;
    rssN: number;
    xlsxN: number;
    concurrency: number;
    poolConcurrency: number;
    scaleWorkers: string;
    changesN: number;
    changesConcurrency: number;
    difyAccounts: number;
    lowerEmailIndex?: boolean;
    only?: string;
    json?: boolean;
  }>();
const wanted = (part: string) => !opts.only || opts.only.split(',').includes(part);
const log = (m: string) => process.stderr.write(`${m}\n`);

interface World {
  redisUrl: string;
  serverUrl: string;
  tmp: string;
}

async function freshWorld(
  w: World,
  tag: string,
  seedSql = [
    `INSERT INTO accounts (name, email, status) SELECT 'Owner ' || i, 'owner' || i || '@example.com', 'active' FROM generate_series(1, ${ACCOUNTS}) i`,
    `INSERT INTO accounts (name, email, status) SELECT 'User ' || i, 'user' || i || '@example' || (i % 50) || '.com', 'active' FROM generate_series(1, ${opts.difyAccounts}) i`,
    ...(opts.lowerEmailIndex ? ['CREATE INDEX accounts_lower_email_idx ON accounts (lower(email))'] : []),
    'ANALYZE accounts',
  ].join(';\n'),
) {
  const databaseUrl = await createDifyDatabase(w.serverUrl, 'dify_bench', { seedSql });
  const storageDir = await mkdtemp(join(w.tmp, `storage-${tag}-`));
  const prefix = `{bench-${tag}-${Date.now()}}`;
  const env = {
    ...process.env,
    REDIS_URL: w.redisUrl,
    DATABASE_URL: databaseUrl,
    DIFY_STORAGE_DIR: storageDir,
    DIFY_PROVISION_QUEUE_PREFIX: prefix,
    DIFY_PROVISION_LOG_LEVEL: 'warn',
  };
  return { databaseUrl, storageDir, prefix, env };
}

async function writeCsv(path: string, n: number, tag: string): Promise<void> {
  const out = createWriteStream(path);
  out.write('workspace_name,owner_email,external_id\n');
  for (let i = 1; i <= n; i++) {
    if (!out.write(`Bench ${tag} ${i},owner${((i - 1) % ACCOUNTS) + 1}@example.com,${tag}-${i}\n`))
      await new Promise<void>((r) => out.once('drain', () => r()));
  }
  out.end();
  await finished(out);
}

/** The same rows as writeCsv, as an .xlsx workbook the way exceljs's streaming writer makes it (shared strings). */
async function writeXlsx(path: string, n: number, tag: string): Promise<void> {
  const { default: ExcelJS } = await import('exceljs');
  const wb = new ExcelJS.stream.xlsx.WorkbookWriter({ filename: path, useSharedStrings: true });
  const ws = wb.addWorksheet('Customers');
  ws.addRow(['workspace_name', 'owner_email', 'external_id']).commit();
  for (let i = 1; i <= n; i++) ws.addRow([`Bench ${tag} ${i}`, `owner${((i - 1) % ACCOUNTS) + 1}@example.com`, `${tag}-${i}`]).commit();
  await ws.commit();
  await wb.commit();
}

function startWorker(env: NodeJS.ProcessEnv, concurrency: number, pooled = 0): Promise<ChildProcess> {
  const args = [
    // BENCH_WORKER_FLAGS: node flags for the worker processes only (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof).
    ...(process.env.BENCH_WORKER_FLAGS?.split(/\s+/).filter(Boolean) ?? []),
    // BENCH_WORKER_SCRIPT: another build's bench/worker-process.js (an older commit built beside this one).
    process.env.BENCH_WORKER_SCRIPT ?? projectFile('dist', 'bench', 'worker-process.js'),
    String(concurrency),
    ...(pooled ? ['--pooled-keys', String(pooled)] : []),
  ];
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => String(d).includes('ready') && resolve(child));
    child.on('exit', (code) => reject(new Error(`worker exited ${code}`)));
  });
}
const stop = (c: ChildProcess) => new Promise<void>((r) => (c.exitCode !== null ? r() : (c.on('exit', () => r()), c.kill('SIGTERM'))));

/** CPU seconds a process (and its reaped children) used, from /proc (Linux). */
function cpuOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime stime cutime cstime: fields 14-17 of stat, 12-15 after "pid (comm) ".
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return 0;
  }
}

/** CPU seconds PostgreSQL (the postmaster and every backend) and Redis have used so far. */
async function serverCpu(db: ReturnType<typeof createPool>, redisUrl: string): Promise<{ pg: number; redis: number }> {
  const { rows } = await db.query<{ dir: string }>(`SELECT current_setting('data_directory') AS dir`);
  const postmaster = Number(readFileSync(join(rows[0]!.dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return Number(readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]) === postmaster;
      } catch {
        return false;
      }
    });
  const pg = cpuOf(postmaster) + children.reduce((n, d) => n + cpuOf(Number(d)), 0);
  const redis = new Redis(redisUrl);
  const info = await redis.info('cpu');
  redis.disconnect();
  const num = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return { pg, redis: num('used_cpu_user') + num('used_cpu_sys') };
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Ingest N rows with the CLI and run `workers` processes until the batch is done. */
async function pipeline(w: World, tag: string, n: number, workers: number, concurrency: number, pooled = 0) {
  const world = await freshWorld(w, tag);
  const csv = join(w.tmp, `${tag}.csv`);
  await writeCsv(csv, n, tag);
  const procs = await Promise.all(Array.from({ length: workers }, () => startWorker(world.env, concurrency, pooled)));
  const db = createPool(world.databaseUrl, 2);
  try {
    const t0 = performance.now();
    await run(process.execPath, [CLI, 'ingest', csv, '--batch-id', tag], { env: world.env, maxBuffer: 64 << 20 });
    // CPU seconds from here to the end (the workers' part; ingest is measured on its own).
    const cpu0 = await serverCpu(db, w.redisUrl);
    const workers0 = procs.reduce((n, p) => n + cpuOf(p.pid!), 0);
    const t1 = performance.now();
    const status = await waitForBatch(db, tag, { intervalMs: 250 });
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = await serverCpu(db, w.redisUrl);
    const workerCpu = procs.reduce((n, p) => n + cpuOf(p.pid!), 0) - workers0;
    const perK = (x: number) => Math.round((x / n) * 1000 * 100) / 100;
    const cpu = {
      workSeconds: (performance.now() - t1) / 1000,
      pgPer1000: perK(cpu1.pg - cpu0.pg),
      redisPer1000: perK(cpu1.redis - cpu0.redis),
      workersPer1000: perK(workerCpu),
    };
    if (status.counts.created !== n) throw new Error(`${tag}: expected ${n} created, got ${JSON.stringify(status.counts)}`);
    const { rows } = await db.query<{ d: number }>(
      `SELECT duration_ms AS d FROM dify_provision.rows WHERE batch_id = $1 ORDER BY duration_ms`,
      [tag],
    );
    const d = rows.map((r) => r.d);
    return { n, seconds, perSec: n / seconds, p50: percentile(d, 50), p95: percentile(d, 95), p99: percentile(d, 99), cpu };
  } finally {
    await Promise.all(procs.map(stop));
    await db.end();
    await rm(world.storageDir, { recursive: true, force: true });
  }
}

/** Workspaces of the changes run, and the people in them before it. */
const CHANGE_WORKSPACES = 1000;
const wsId = (w: number) => `00000000-0000-4000-8000-${w.toString(16).padStart(12, '0')}`;
const person = (i: number) => `person${i}@example.com`;

/**
 * The changes run's Dify, made directly in SQL (apply works on any workspace of a Dify): 1,000
 * workspaces, workspace w owned by person w, with person 1000+w and person 1000+(w mod 1000)+1 as
 * members (normal), and 2,000 more people with no workspace.
 */
const changesSeed = (workspaces: number) => `
  INSERT INTO accounts (name, email, status) SELECT 'Person ' || i, 'person' || i || '@example.com', 'active' FROM generate_series(1, ${2 * workspaces + 2000}) i;
  INSERT INTO tenants (id, name) SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(w), 12, '0'))::uuid, 'Bench ' || w FROM generate_series(1, ${workspaces}) w;
  INSERT INTO tenant_account_joins (tenant_id, account_id, role)
    SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(w), 12, '0'))::uuid, a.id, m.role
      FROM generate_series(1, ${workspaces}) w
      CROSS JOIN LATERAL (VALUES (w, 'owner'), (${workspaces} + w, 'normal'), (${workspaces} + (w % ${workspaces}) + 1, 'normal')) AS m(p, role)
      JOIN accounts a ON a.email = 'person' || m.p || '@example.com';`;

/**
 * Ten member changes per workspace, grouped by workspace as an export would be: eight add_member
 * of existing accounts (normal or editor), one set_role of a member (to editor), one
 * remove_member of a member.
 */
async function writeChangesCsv(path: string, n: number, workspaces: number): Promise<void> {
  const out = createWriteStream(path);
  out.write('action,workspace_id,email,role\n');
  const extra = 2 * workspaces;
  for (let i = 0; i < n; i++) {
    const w = (Math.floor(i / 10) % workspaces) + 1;
    const k = i % 10;
    const line =
      k < 8
        ? `add_member,${wsId(w)},${person(extra + ((w * 8 + k) % 2000) + 1)},${k % 2 ? 'editor' : 'normal'}`
        : k === 8
          ? `set_role,${wsId(w)},${person(workspaces + w)},editor`
          : `remove_member,${wsId(w)},${person(workspaces + (w % workspaces) + 1)},`;
    if (!out.write(`${line}\n`)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  out.end();
  await finished(out);
}

/** `apply` of N member changes with one worker process (no key generation: the pipeline's own speed). */
async function changes(w: World, n: number, concurrency: number) {
  const workspaces = Math.min(CHANGE_WORKSPACES, Math.ceil(n / 10));
  const world = await freshWorld(w, 'changes', changesSeed(workspaces));
  const csv = join(w.tmp, 'changes.csv');
  await writeChangesCsv(csv, n, workspaces);
  // remove_member deletes the person's invitation tokens from Dify's Redis: the worker needs Dify's
  // settings (today its invitation settings as a whole, CONSOLE_WEB_URL included).
  const redis = new URL(w.redisUrl);
  const env = {
    ...world.env,
    REDIS_HOST: redis.hostname,
    REDIS_PORT: redis.port || '6379',
    REDIS_DB: '9',
    CONSOLE_WEB_URL: 'https://dify.example.com',
  };
  const worker = await startWorker(env, concurrency);
  const db = createPool(world.databaseUrl, 2);
  try {
    const t0 = performance.now();
    await run(process.execPath, [CLI, 'apply', csv, '--batch-id', 'changes'], { env, maxBuffer: 64 << 20 });
    const recorded = (performance.now() - t0) / 1000;
    const status = await waitForBatch(db, 'changes', { intervalMs: 250 });
    const seconds = (performance.now() - t0) / 1000;
    if (status.counts.applied !== n) {
      const { rows: why } = await db.query(
        `SELECT line, error FROM dify_provision.rows WHERE batch_id = 'changes' AND outcome <> 'applied' LIMIT 3`,
      );
      throw new Error(`changes: expected ${n} applied, got ${JSON.stringify(status.counts)}: ${JSON.stringify(why)}`);
    }
    const { rows } = await db.query<{ d: number }>(
      `SELECT duration_ms AS d FROM dify_provision.rows WHERE batch_id = 'changes' ORDER BY duration_ms`,
    );
    const d = rows.map((r) => r.d);
    return {
      n,
      workspaces,
      recorded,
      seconds,
      perSec: n / seconds,
      p50: percentile(d, 50),
      p95: percentile(d, 95),
      p99: percentile(d, 99),
    };
  } finally {
    await stop(worker);
    await db.end();
    await rm(world.storageDir, { recursive: true, force: true });
  }
}

async function ceiling(seconds = 15): Promise<{ perSec: number; keys: number }> {
  const inFlight = Math.max(4, cpus().length * 2);
  let keys = 0;
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < until) {
        await rsaKeySource.generate();
        keys++;
      }
    }),
  );
  return { perSec: keys / ((performance.now() - t0) / 1000), keys };
}

async function manual(w: World, n: number) {
  const world = await freshWorld(w, 'manual');
  const url = new URL(world.databaseUrl);
  const env = {
    ...process.env,
    PGHOST: url.hostname,
    PGPORT: url.port,
    PGUSER: url.username,
    PGDATABASE: url.pathname.slice(1),
    ACCOUNTS: String(ACCOUNTS),
  };
  const { stdout } = await run('bash', [projectFile('bench', 'manual_baseline.sh'), String(n), world.storageDir], {
    env,
    maxBuffer: 16 << 20,
  });
  await rm(world.storageDir, { recursive: true, force: true });
  const r = JSON.parse(stdout.trim().split('\n').pop()!);
  return { n, seconds: r.seconds as number, perSec: r.tenantsPerSec as number };
}

async function ingestOnly(w: World, n: number, measureRss: boolean, format: 'csv' | 'xlsx' = 'csv') {
  const world = await freshWorld(w, format === 'xlsx' ? 'xlsx' : measureRss ? 'rss' : 'ingest');
  const csv = join(w.tmp, `ingest-${n}.${format}`);
  await (format === 'xlsx' ? writeXlsx : writeCsv)(csv, n, `i${n}`);
  const db = createPool(world.databaseUrl, 1);
  const cpu0 = await serverCpu(db, w.redisUrl);
  const t0 = performance.now();
  const { stderr } = await run(
    process.execPath,
    [
      ...cliNodeFlags(),
      // BENCH_INGEST_FLAGS: more node flags for the ingest process (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof).
      ...(process.env.BENCH_INGEST_FLAGS?.split(/\s+/).filter(Boolean) ?? []),
      projectFile('dist', 'bench', 'rss-ingest.js'),
      'ingest',
      csv,
      '--batch-id',
      `ingest-${format}-${n}`,
    ],
    { env: world.env, maxBuffer: 64 << 20 },
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = await serverCpu(db, w.redisUrl);
  const rssKb = Number(/maxrss_kb=(\d+)/.exec(stderr)?.[1]);
  // CPU seconds per 1,000 rows: the ingest process, PostgreSQL, Redis (addBulk below: its client and Redis).
  const perK = (s: number) => Math.round((s / n) * 1e6) / 1000;
  const cpu = {
    ingestPer1000: perK(Number(/cpu_us=(\d+)/.exec(stderr)?.[1]) / 1e6),
    pgPer1000: perK(cpu1.pg - cpu0.pg),
    redisPer1000: perK(cpu1.redis - cpu0.redis),
  };
  // What a sweep's scan of every open row costs (the million rows just queued, all waiting), and
  // BullMQ's own addBulk of as many jobs, on the same Redis, right after.
  const sweep = measureRss && format === 'csv' ? await queueMeasure(world.env, 'sweep', n, `ingest-${format}-${n}`) : undefined;
  const withCpu = async (what: 'addbulk' | 'addbulk-ours') => {
    const r = await queueMeasure(world.env, what, n);
    return { ...r, cpu: { clientPer1000: perK(r.clientCpu), redisPer1000: perK(r.redisCpu) } };
  };
  const addBulk = !measureRss ? await withCpu('addbulk') : undefined;
  const addBulkOurs = !measureRss ? await withCpu('addbulk-ours') : undefined;
  await db.end();
  const redis = new Redis(w.redisUrl);
  const keys = await redis.keys(`${world.prefix}:*`);
  for (let i = 0; i < keys.length; i += 1000) await redis.del(...keys.slice(i, i + 1000));
  redis.disconnect();
  await rm(world.storageDir, { recursive: true, force: true });
  return {
    n,
    seconds,
    perSec: n / seconds,
    peakRssMb: rssKb / 1024,
    cpu,
    ...(sweep ? { sweep } : {}),
    ...(addBulk ? { addBulk } : {}),
    ...(addBulkOurs ? { addBulkOurs } : {}),
  };
}

async function queueMeasure(env: NodeJS.ProcessEnv, what: 'sweep' | 'addbulk' | 'addbulk-ours', n = 0, batchId = ''): Promise<any> {
  const { stdout } = await run(process.execPath, [projectFile('dist', 'bench', 'queue-measures.js'), what, String(n), batchId], {
    env,
    maxBuffer: 16 << 20,
  });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

/** The node flags the CLI's shebang gives (so the benchmark measures what users run). */
function cliNodeFlags(): string[] {
  const first = readFileSync(CLI, 'utf8').split('\n', 1)[0]!;
  return first.startsWith('#!') ? first.split(/\s+/).filter((w) => w.startsWith('--')) : [];
}

async function main() {
  let services: LocalServices | undefined;
  const tmp = await mkdtemp(join(tmpdir(), 'dify-provision-bench-'));
  await chmod(tmp, 0o755); // PostgreSQL runs as its own user and must reach its data folder
  let redisUrl = process.env.REDIS_URL;
  let serverUrl = process.env.DATABASE_URL;
  if (!redisUrl || !serverUrl) {
    services = await startLocalServices({ dir: join(tmp, 'services'), say: log });
    redisUrl = services.redisUrl;
    serverUrl = services.databaseUrl;
  }
  const w: World = { redisUrl, serverUrl, tmp };
  const results: Record<string, unknown> = {};
  try {
    if (wanted('ceiling')) (log('ceiling: RSA-2048 keygen, all cores…'), (results.ceiling = await ceiling()));
    if (wanted('pipeline1'))
      (log(`pipeline: ${opts.n} rows, 1 worker process…`), (results.pipeline1 = await pipeline(w, 'p1', opts.n, 1, opts.concurrency)));
    if (wanted('pipeline2'))
      (log(`pipeline: ${opts.n} rows, 2 worker processes…`), (results.pipeline2 = await pipeline(w, 'p2', opts.n, 2, opts.concurrency)));
    if (wanted('manual')) (log(`manual recipe: ${opts.manualN} tenants…`), (results.manual = await manual(w, opts.manualN)));
    if (wanted('pooled'))
      (log(`everything but keygen: ${opts.poolN} rows, pooled keys…`),
        (results.pooled = await pipeline(w, 'pool', opts.poolN, 1, opts.poolConcurrency, 64)));
    if (wanted('scale'))
      for (const k of opts.scaleWorkers.split(',').map(Number)) {
        log(`scale: ${opts.poolN} rows, pooled keys, ${k} worker process(es)…`);
        results[`scale${k}`] = { workers: k, ...(await pipeline(w, `scale${k}`, opts.poolN, k, opts.poolConcurrency, 64)) };
      }
    if (wanted('ingest')) (log(`ingest: ${opts.ingestN} rows…`), (results.ingest = await ingestOnly(w, opts.ingestN, false)));
    if (wanted('rss')) (log(`ingest peak RSS: ${opts.rssN} rows…`), (results.rss = await ingestOnly(w, opts.rssN, true)));
    if (wanted('xlsx')) (log(`ingest an .xlsx: ${opts.xlsxN} rows…`), (results.xlsx = await ingestOnly(w, opts.xlsxN, true, 'xlsx')));
    if (wanted('changes'))
      (log(`changes: ${opts.changesN} member changes, 1 worker process…`),
        (results.changes = await changes(w, opts.changesN, opts.changesConcurrency)));
  } finally {
    await services?.stop();
    await rm(tmp, { recursive: true, force: true });
  }
  printTable(results);
  if (opts.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

function printTable(r: Record<string, any>) {
  const f = (x: number | undefined, d = 1) => (x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
  const cpu = cpus();
  const lines = [`machine: ${cpu.length} × ${cpu[0]?.model ?? '?'}, node ${process.version}, ${new Date().toISOString().slice(0, 10)}`, ''];
  lines.push('| measure | N | seconds | per second | p50 / p95 / p99 ms | ratio |', '| --- | ---: | ---: | ---: | --- | --- |');
  if (r.ceiling) lines.push(`| ceiling: RSA-2048 key pairs, all cores | ${r.ceiling.keys} | 15 | ${f(r.ceiling.perSec)} | | |`);
  for (const [k, label] of [
    ['pipeline1', 'pipeline, 1 worker process'],
    ['pipeline2', 'pipeline, 2 worker processes'],
  ] as const) {
    const p = r[k];
    if (!p) continue;
    const ratios = [
      r.ceiling ? `÷ ceiling ${f(p.perSec / r.ceiling.perSec, 2)}` : '',
      r.manual ? `÷ manual ${f(p.perSec / r.manual.perSec, 2)}` : '',
    ]
      .filter(Boolean)
      .join(', ');
    lines.push(`| ${label} | ${p.n} | ${f(p.seconds)} | ${f(p.perSec)} | ${p.p50} / ${p.p95} / ${p.p99} | ${ratios} |`);
  }
  if (r.manual)
    lines.push(`| manual recipe (psql + openssl per tenant) | ${r.manual.n} | ${f(r.manual.seconds)} | ${f(r.manual.perSec)} | | |`);
  for (const [k, p] of Object.entries(r).filter(([k]) => k === 'pooled' || k.startsWith('scale') || k.startsWith('pipeline'))) {
    if (p?.cpu)
      lines.push(
        `| CPU seconds per 1,000 rows (${k}): workers ${p.cpu.workersPer1000}, PostgreSQL ${p.cpu.pgPer1000}, Redis ${p.cpu.redisPer1000} | | | | | |`,
      );
  }
  if (r.pooled)
    lines.push(
      `| everything but keygen (pooled keys) | ${r.pooled.n} | ${f(r.pooled.seconds)} | ${f(r.pooled.perSec)} | ${r.pooled.p50} / ${r.pooled.p95} / ${r.pooled.p99} | |`,
    );
  for (const k of Object.keys(r).filter((k) => k.startsWith('scale'))) {
    const p = r[k];
    lines.push(
      `| everything but keygen, ${p.workers} worker process(es) | ${p.n} | ${f(p.seconds)} | ${f(p.perSec)} | ${p.p50} / ${p.p95} / ${p.p99} | ${r.scale1 ? `÷ 1 process ${f(p.perSec / r.scale1.perSec, 2)}` : ''} |`,
    );
  }
  if (r.ingest) {
    const ab = r.ingest.addBulk;
    lines.push(
      `| ingest: validate + record + enqueue | ${r.ingest.n} | ${f(r.ingest.seconds)} | ${f(r.ingest.perSec, 0)} | | peak RSS ${f(r.ingest.peakRssMb, 0)} MB${ab ? `, ÷ addBulk **${f(r.ingest.perSec / ab.perSec, 2)}**` : ''} |`,
    );
    const c = r.ingest.cpu;
    if (c)
      lines.push(
        `| CPU seconds per 1,000 rows (ingest): the ingest process ${c.ingestPer1000}, PostgreSQL ${c.pgPer1000}, Redis ${c.redisPer1000} | | | | | |`,
      );
    if (ab)
      lines.push(
        `| BullMQ addBulk alone (small jobs, chunks of 1,000, 4 in flight) | ${ab.n} | ${f(ab.seconds)} | ${f(ab.perSec, 0)} | | CPU s / 1,000: client ${ab.cpu.clientPer1000}, Redis ${ab.cpu.redisPer1000} |`,
      );
    const abo = r.ingest.addBulkOurs;
    if (abo)
      lines.push(
        `| BullMQ addBulk alone, jobs like ingest's (a full row spec, our options) | ${abo.n} | ${f(abo.seconds)} | ${f(abo.perSec, 0)} | | ingest ÷ it ${f(r.ingest.perSec / abo.perSec, 2)}; CPU s / 1,000: client ${abo.cpu.clientPer1000}, Redis ${abo.cpu.redisPer1000} |`,
      );
  }
  if (r.rss) {
    lines.push(`| ingest, peak RSS | ${r.rss.n} | ${f(r.rss.seconds)} | ${f(r.rss.perSec, 0)} | | peak RSS ${f(r.rss.peakRssMb, 0)} MB |`);
    const s = r.rss.sweep;
    if (s)
      lines.push(
        `| one sweep's scan of the open rows (all waiting) | ${s.open} | ${f(s.seconds)} | ${f(s.open / s.seconds, 0)} | | lost ${s.lost}; a middle page dirtied ${s.page.dirtied} buffers |`,
        `| the same scan again at once | ${s.again.open} | ${f(s.again.seconds)} | ${f(s.again.open / s.again.seconds, 0)} | | lost ${s.again.lost}; a middle page dirtied ${s.again.page.dirtied} buffers |`,
        ...(s.touch
          ? [
              `| (before both, BENCH_SWEEP_TOUCH=${s.touch.kind}: ${s.touch.kind === 'analyze' ? 'ANALYZE of' : 'a sequential count(*) of'} the rows table) | | ${f(s.touch.seconds)} | | | |`,
            ]
          : []),
      );
  }
  if (r.xlsx)
    lines.push(
      `| ingest an .xlsx, peak RSS | ${r.xlsx.n} | ${f(r.xlsx.seconds)} | ${f(r.xlsx.perSec, 0)} | | peak RSS ${f(r.xlsx.peakRssMb, 0)} MB |`,
    );
  if (r.changes)
    lines.push(
      `| changes: apply, member changes across ${r.changes.workspaces} workspaces, 1 worker process (recorded and queued in ${f(r.changes.recorded)} s) | ${r.changes.n} | ${f(r.changes.seconds)} | ${f(r.changes.perSec)} | ${r.changes.p50} / ${r.changes.p95} / ${r.changes.p99} | |`,
    );
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
