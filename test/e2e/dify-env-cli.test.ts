// Every command, configured by Dify's own docker/.env exactly as Dify ships it
// (test/fixtures/dify-docker/.env.example, unmodified, beside Dify's docker-compose.yaml) plus only
// the overrides the README tells an operator to add from the host (DB_HOST, DB_PORT, REDIS_HOST,
// REDIS_PORT: the published ports). The servers are our own, set up as Dify's compose sets them
// up: a database named `dify`, PostgreSQL checking the password (scram) and Redis requiring it.
import { generateKeyPairSync } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectFile } from '../../src/project-files.js';
import { createDifyDatabase } from '../../src/services/dify-database.js';
import { startLocalServices, type LocalServices } from '../../src/services/local-services.js';
import { csvOf } from '../helpers/batch.js';
import { runCli, startCli, type Background, type Ran } from '../helpers/cli.js';
import { until } from '../helpers/cli-world.js';

const DIFY_PASSWORD = 'difyai123456'; // the .env.example's DB_PASSWORD and REDIS_PASSWORD
let services: LocalServices;
let dir: string;
let docker: string;
let envFile: string;
let overrides: NodeJS.ProcessEnv;
let pgPort: string;
let redisPort: string;
const running: Background[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-dify-env-cli-'));
  services = await startLocalServices({});
  await createDifyDatabase(services.databaseUrl, 'dify', { seedSql: await readFile(projectFile('samples', 'accounts.sql'), 'utf8') });
  pgPort = new URL(services.databaseUrl).port;
  redisPort = new URL(services.redisUrl).port;
  // As Dify's compose runs them: PostgreSQL checks the password over TCP, Redis requires it.
  const admin = new pg.Client({ connectionString: services.databaseUrl });
  await admin.connect();
  await admin.query(`ALTER USER postgres PASSWORD '${DIFY_PASSWORD}'`);
  await admin.query(`CREATE USER pct PASSWORD 'p%zz@#/?x' SUPERUSER`);
  await writeFile(join(services.dir, 'pg', 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n');
  await admin.query('SELECT pg_reload_conf()');
  await admin.end();
  const redis = new Redis(services.redisUrl);
  await redis.config('SET', 'requirepass', DIFY_PASSWORD);
  redis.disconnect();

  docker = join(dir, 'dify', 'docker');
  await mkdir(join(docker, 'volumes', 'app', 'storage'), { recursive: true });
  envFile = join(docker, '.env');
  await copyFile(projectFile('test', 'fixtures', 'dify-docker', '.env.example'), envFile);
  await copyFile(projectFile('test', 'fixtures', 'dify-docker', 'docker-compose.yaml'), join(docker, 'docker-compose.yaml'));
  overrides = { DB_HOST: '127.0.0.1', DB_PORT: pgPort, REDIS_HOST: '127.0.0.1', REDIS_PORT: redisPort };
}, 180_000);

afterAll(async () => {
  for (const b of running) await b.stop('SIGKILL');
  await services?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The process environment of an operator's shell: nothing of ours set, plus `extra`. */
const shell = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, HOME: dir, ...extra });
const cli = (args: string[], extra: NodeJS.ProcessEnv = overrides) => runCli([...args, '--dify-env', envFile], shell(extra));

function ok(r: Ran): Ran {
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
  for (const out of [r.stdout, r.stderr]) {
    expect(out).not.toContain(DIFY_PASSWORD);
    expect(out).not.toMatch(/Invalid option|relative to Dify's api folder/);
  }
  return r;
}

describe("every command with Dify's unmodified docker/.env", () => {
  it('without the overrides: a clear hint that db_postgres is a compose service name, naming the file', async () => {
    const r = await cli(['batches'], {});
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`DB_HOST (in ${envFile}): "db_postgres" is the name of a service in Dify's docker-compose.yaml`);
    expect(r.stderr).toContain('set DB_HOST=127.0.0.1');
    const dry = await cli(['ingest', '--dry-run', projectFile('samples', 'workspaces.csv')], { DB_HOST: '127.0.0.1', DB_PORT: pgPort });
    expect(dry.stdout + dry.stderr).not.toMatch(/db_postgres|OPENDAL_FS_ROOT/);
  });

  it('ingest (dry run and real), worker, wait, status, batches, report, retry, cancel, keys, secrets, doctor and dashboard', async () => {
    const csv = join(dir, 'customers.csv');
    await writeFile(
      csv,
      csvOf([
        { workspace_name: 'Env Acme', owner_email: 'ana@acme.example' },
        { workspace_name: 'Env Globex', owner_email: 'chen@globex.example' },
      ]),
    );
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pub = join(dir, 'operator.pub.pem');
    const priv = join(dir, 'operator.pem');
    await writeFile(pub, publicKey.export({ type: 'spki', format: 'pem' }));
    await writeFile(priv, privateKey.export({ type: 'pkcs8', format: 'pem' }));

    ok(await cli(['ingest', '--dry-run', csv]));
    expect(ok(await cli(['ingest', csv, '--batch-id', 'dify-env', '--mint-dataset-keys', '--seal-to', pub])).stdout).toMatch(/queued/);
    ok(await cli(['status', 'dify-env']));
    ok(await cli(['batches']));

    const worker = startCli(['worker', '--concurrency', '2', '--dify-env', envFile], shell(overrides));
    running.push(worker);
    ok(await cli(['wait', 'dify-env', '--report-dir', dir]));
    const storage = join(docker, 'volumes', 'app', 'storage');
    expect(worker.output()).toContain(`key storage: ${storage} (OPENDAL_FS_ROOT=storage (in ${envFile}) is /app/api/storage`);
    const report = ok(await cli(['report', 'dify-env', '--format', 'json'])).stdout;
    const rows = JSON.parse(report) as { outcome: string; tenantId: string }[];
    expect(rows.map((r) => r.outcome)).toEqual(['created', 'created']);
    for (const r of rows) expect((await stat(join(storage, 'privkeys', r.tenantId, 'private.pem'))).isFile()).toBe(true);

    ok(await cli(['retry', 'dify-env']));
    ok(await cli(['cancel', 'dify-env']));
    expect(ok(await cli(['keys', 'list', '--tenant', rows[0]!.tenantId])).stdout).toMatch(/dataset/);
    ok(await cli(['keys', 'create', '--tenant', rows[0]!.tenantId, '--out', join(dir, 'tokens.csv')]));
    ok(await cli(['secrets', 'dify-env', '--key', priv, '--out', join(dir, 'secrets.csv')]));
    const doctor = ok(await cli(['doctor', '--min-age', '0']));
    expect(doctor.stdout).toMatch(/doctor: no findings/);
    expect(doctor.stderr).toContain(`key storage: ${storage}`);

    const dashboard = startCli(
      ['dashboard', '--port', '0', '--dify-env', envFile],
      shell({ ...overrides, DASHBOARD_TOKEN: 'a'.repeat(24) }),
    );
    running.push(dashboard);
    let url = '';
    await until(async () => Boolean((url = /dashboard: (http:\/\/\S+)/.exec(dashboard.output())?.[1] ?? '')), 'the dashboard URL');
    expect((await fetch(new URL('/healthz', url))).status).toBe(200);
    await dashboard.stop();
    expect(await worker.stop()).toBe(0);
    expect(worker.output() + dashboard.output()).not.toContain(DIFY_PASSWORD);
  });

  it('a % or @ in the passwords is sent as written; a DB_HOST cannot redirect the connection with ?host=', async () => {
    const hostile = join(dir, 'hostile', '.env');
    await mkdir(join(dir, 'hostile'));
    await writeFile(hostile, `DB_USERNAME=pct\nDB_PASSWORD='p%zz@#/?x'\nDB_DATABASE=dify\nREDIS_PASSWORD=${DIFY_PASSWORD}\n`);
    const run = (extra: NodeJS.ProcessEnv) => runCli(['batches', '--dify-env', hostile], shell({ ...overrides, ...extra }));
    ok(await run({}));
    // Pasted into a URL, this host's query would send us to 127.0.0.1:<port>: it must be taken literally.
    const r = await run({ DB_HOST: `nowhere.invalid:1/x?port=${pgPort}&host=127.0.0.1&a=` });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/nowhere\.invalid/);
  });
});
