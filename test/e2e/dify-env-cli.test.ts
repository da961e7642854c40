// Every command, configured by Dify's own docker/.env exactly as Dify ships it
// (test/fixtures/dify-docker/.env.example, unmodified, beside Dify's docker-compose.yaml) plus only
// the overrides the README tells an operator to add, read from the README itself:
// - from the host: the `export` line of "From the host, with Dify's `.env`" (DB_HOST, REDIS_HOST;
//   DB_PORT and REDIS_PORT too, since our servers listen on other ports than Dify's);
// - inside Dify's compose network, as deploy/dify-compose/docker-compose.yaml runs them: nothing;
//   the README's compose steps (`docker compose up`, then each `docker compose run` line as written)
//   with each service's environment, mounts and user, in a network namespace where Dify's service
//   names resolve and its ports (5432, 6379) lead to our servers.
// The servers are our own, set up as Dify's compose sets them up: a database named `dify`,
// PostgreSQL checking the password (scram) and Redis requiring it.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parse } from 'yaml';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, projectFile } from '../../src/common/project-files.js';
import { parseComposeDotenv } from '../../src/config/compose-dotenv.js';
import { createDifyDatabase } from '../../src/services/dify-database.js';
import { startLocalServices, type LocalServices } from '../../src/services/local-services.js';
import { csvOf } from '../helpers/batch.js';
import { docsSection, readmeSection, shellBlocks } from '../helpers/readme.js';
import { runCli, runProgram, startCli, startProgram, type Background, type Ran } from '../helpers/cli.js';
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
  overrides = { ...readmeOverrides(), DB_PORT: pgPort, REDIS_PORT: redisPort };
}, 180_000);

afterAll(async () => {
  for (const b of running) await b.stop('SIGKILL');
  await services?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The README's `export` line for running from the host, and its word on other published ports. */
function readmeOverrides(): NodeJS.ProcessEnv {
  const line = shellBlocks(readmeSection("### From the host, with Dify's `.env`"))
    .flatMap((b) => b.split('\n'))
    .find((l) => l.startsWith('export '));
  const [assignments, comment] = line!.split('#');
  // Our servers listen on ports other than Dify's 5432 and 6379: the README says to set these then.
  expect(comment).toContain('DB_PORT=… REDIS_PORT=… if you published other ports');
  return Object.fromEntries(
    assignments!
      .replace(/^export /, '')
      .trim()
      .split(/\s+/)
      .map((a) => a.split('=') as [string, string]),
  );
}

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
    const rows = JSON.parse(report) as { outcome: string; tenant_id: string }[];
    expect(rows.map((r) => r.outcome)).toEqual(['created', 'created']);
    for (const r of rows) expect((await stat(join(storage, 'privkeys', r.tenant_id, 'private.pem'))).isFile()).toBe(true);

    ok(await cli(['retry', 'dify-env']));
    ok(await cli(['cancel', 'dify-env']));
    expect(ok(await cli(['keys', 'list', '--tenant', rows[0]!.tenant_id])).stdout).toMatch(/dataset/);
    ok(await cli(['keys', 'create', '--tenant', rows[0]!.tenant_id, '--out', join(dir, 'tokens.csv')]));
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

  it('our schema holds exactly the tables docs/dify-releases.md lists under "What we write into Dify\'s database"', async () => {
    const section = await docsSection('dify-releases.md', "## What we write into Dify's database");
    const listed = [...section.matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]).sort();
    const db = new pg.Client({ host: '127.0.0.1', port: Number(pgPort), user: 'postgres', password: DIFY_PASSWORD, database: 'dify' });
    await db.connect();
    const { rows } = await db.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'dify_provision'",
    );
    await db.end();
    expect(
      rows.map((r) => r.table_name).sort(),
      "docs/dify-releases.md lists every table of our schema (What we write into Dify's database)",
    ).toEqual(listed);
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

  it('a half-set environment: a missing DB_PASSWORD or a forgotten --dify-env says which setting is missing and where it was looked for', async () => {
    const csv = projectFile('samples', 'workspaces.csv');
    // --dify-env forgotten: DB_HOST and DB_PORT exported, DB_PASSWORD only in Dify's .env.
    const forgotten = await runCli(['ingest', '--dry-run', csv], shell({ DB_HOST: '127.0.0.1', DB_PORT: pgPort }));
    expect(forgotten.stderr).toBe(
      `dify-provision: cannot use PostgreSQL at 127.0.0.1:${pgPort}, database "dify" as user "postgres": the server asks for a password and ` +
        "DB_PASSWORD is not set (looked for in our environment only: no --dify-env FILE (or DIFY_ENV_FILE) was given, so Dify's docker/.env was not read)\n",
    );
    expect(forgotten.code).toBe(1);
    // A Dify .env without DB_PASSWORD: the files read are named.
    const partial = join(dir, 'partial.env');
    await writeFile(partial, 'DB_HOST=127.0.0.1\nDB_USERNAME=postgres\n');
    const half = await runCli(['ingest', '--dry-run', csv, '--dify-env', partial], shell({ DB_PORT: pgPort }));
    expect(half.stderr).toContain(
      `the server asks for a password and DB_PASSWORD is not set (looked for in our environment and ${partial})`,
    );
    expect(half.stderr).not.toContain('DB_HOST and DB_PORT');
    // Our own DATABASE_URL without a password.
    const url = await runCli(['ingest', '--dry-run', csv], shell({ DATABASE_URL: `postgres://postgres@127.0.0.1:${pgPort}/dify` }));
    expect(url.stderr).toContain('the server asks for a password and DATABASE_URL has no password');
    // Nothing set at all: where it looked.
    const none = await runCli(['batches'], shell());
    expect(none.stderr).toContain(
      "looked in our environment only: no --dify-env FILE (or DIFY_ENV_FILE) was given, so Dify's docker/.env was not read",
    );
    const help = await runCli(['--help'], shell());
    expect(help.stdout).toContain('--dify-env FILE');
    expect(help.stdout).toMatch(/DB_PASSWORD[\s\S]*DATABASE_URL, REDIS_URL/);
  });
});

// Inside Dify's compose network, as deploy/dify-compose/docker-compose.yaml runs each service.
interface Service {
  user?: string;
  command?: string[];
  environment?: Record<string, string | null>;
  volumes: string[];
  working_dir?: string;
  profiles?: string[];
  healthcheck?: { test: string[] };
}
/** The image's user (Dockerfile `USER node`: uid 1000 in node's images) for services that name none. */
const IMAGE_USER = '1000:1000';
// Runs in the new network and mount namespaces (unshare, no fork: the same process, so signals
// reach it): brings lo up, makes Dify's service names resolve to it, mounts the service's volumes,
// relays Dify's ports to our servers through unix sockets, then runs the command as the service's user.
const NAMESPACE_SCRIPT = `
const { execFileSync, spawn } = require('node:child_process');
const net = require('node:net');
const { hosts, mounts, ports, user } = JSON.parse(process.argv[1]);
execFileSync('ip', ['link', 'set', 'lo', 'up']);
execFileSync('mount', ['--bind', hosts, '/etc/hosts']);
for (const m of mounts) {
  execFileSync('mount', ['--rbind', m.source, m.target]);
  if (m.readOnly) execFileSync('mount', ['-o', 'remount,bind,ro', m.target]);
}
let listening = 0;
for (const { port, socket } of ports) {
  net.createServer((c) => {
    const u = net.connect(socket);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  }).listen(port, '127.0.0.1', () => {
    if (++listening < ports.length) return;
    const [uid, gid] = user.split(':');
    const child = spawn('setpriv', ['--reuid', uid, '--regid', gid, '--clear-groups', '--', ...process.argv.slice(2)], { stdio: 'inherit' });
    for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => child.kill(s));
    child.on('exit', (code) => process.exit(code ?? 1));
  });
}
`;

describe("every command inside Dify's compose network, as deploy/dify-compose runs it, with no override", () => {
  const compose = parse(readFileSync(projectFile('deploy', 'dify-compose', 'docker-compose.yaml'), 'utf8'), { merge: true }) as {
    services: Record<string, Service>;
  };
  const difyCompose = parse(readFileSync(projectFile('test', 'fixtures', 'dify-docker', 'docker-compose.yaml'), 'utf8'), {
    merge: true,
  }) as {
    services: Record<string, unknown>;
  };
  let root: string;
  let hosts: string;
  const relays: Server[] = [];
  const ports: { port: number; socket: string }[] = [];

  beforeAll(async () => {
    // What the compose file mounts, as Docker and Dify's own services leave it: an envs/ folder
    // (Docker creates a missing bind source; ./out too), the storage given to uid 1001 by init_permissions,
    // an input file in ./files; every folder on the way reachable, as a container's mounts are.
    root = join(dir, 'container');
    await mkdir(join(docker, 'envs'), { recursive: true });
    await mkdir(join(dir, 'files'));
    await mkdir(join(dir, 'out'));
    await writeFile(join(dir, 'files', 'customers.csv'), csvOf([{ workspace_name: 'Compose Initech', owner_email: 'ana@acme.example' }]));
    for (const d of [dir, join(dir, 'dify'), docker, join(docker, 'volumes'), join(docker, 'volumes', 'app'), join(dir, 'files')])
      await chmod(d, 0o755);
    execFileSync('chown', ['-R', '1001:1001', join(docker, 'volumes', 'app', 'storage')]);
    // Dify's service names the .env uses, on its default network: here, loopback in the namespace.
    const difyEnv = parseComposeDotenv(await readFile(envFile, 'utf8'));
    const names = [difyEnv.DB_HOST!, difyEnv.REDIS_HOST!];
    for (const n of names) expect(Object.keys(difyCompose.services)).toContain(n);
    await mkdir(join(root, 'tmp'), { recursive: true, mode: 0o1777 });
    await chmod(join(root, 'tmp'), 0o1777);
    await chmod(root, 0o755);
    hosts = join(dir, 'hosts');
    await writeFile(hosts, `127.0.0.1 localhost ${names.join(' ')}\n`);
    // Dify's containers listen on PostgreSQL's and Redis' own ports: relay them to our servers.
    for (const [port, target] of [
      [5432, Number(pgPort)],
      [6379, Number(redisPort)],
    ] as const) {
      const socket = join(dir, `relay-${port}.sock`);
      const server = createServer((c) => {
        const u = connect(target, '127.0.0.1');
        c.pipe(u).pipe(c);
        c.on('error', () => u.destroy());
        u.on('error', () => c.destroy());
      });
      await new Promise<void>((r) => server.listen(socket, r));
      await chmod(socket, 0o777);
      relays.push(server);
      ports.push({ port, socket });
    }
  });

  afterAll(async () => {
    for (const r of relays) await new Promise((done) => r.close(done));
  });

  /** The service's mounts at `root`: `${DIFY_DOCKER}/x` is Dify's docker folder, `./x` beside the compose file. */
  async function mountsOf(service: Service) {
    const out = [];
    for (const v of service.volumes) {
      const [source, target, mode] = v
        .replace(/\$\{DIFY_DOCKER(:\?[^}]*)?\}/, docker)
        .replace(/^\.\//, `${dir}/`)
        .split(':');
      const at = join(root, target!);
      if ((await stat(source!)).isDirectory()) await mkdir(at, { recursive: true });
      else {
        await mkdir(dirname(at), { recursive: true });
        await writeFile(at, '');
      }
      out.push({ source: source!, target: at, readOnly: mode === 'ro' });
    }
    return out;
  }
  /** Container paths are under `root` here. */
  const inside = (p: string) => join(root, p);
  /** The image's ENTRYPOINT (Dockerfile): node /app/dist/src/cli/main.js. */
  const APP_CLI = '/app/dist/src/cli/main.js';
  async function argsFor(name: string, args: string[]) {
    const service = compose.services[name]!;
    // The image's /app (Dockerfile WORKDIR): this checkout, mounted read-only, so the service's user
    // reaches the CLI whatever the checkout's own folder lets it through (a clone in a 0700 folder).
    await mkdir(inside('/app'), { recursive: true });
    const app = { source: PACKAGE_ROOT, target: inside('/app'), readOnly: true };
    const config = { hosts, mounts: [app, ...(await mountsOf(service))], ports, user: service.user ?? IMAGE_USER };
    const env = Object.fromEntries(
      Object.entries(service.environment ?? {}).map(([k, v]) => [k, k === 'DIFY_ENV_FILE' ? inside(v!) : (v ?? undefined)]),
    );
    return {
      args: [
        '--net',
        '--mount',
        '--',
        process.execPath,
        '-e',
        NAMESPACE_SCRIPT,
        JSON.stringify(config),
        process.execPath,
        inside(APP_CLI),
        ...args,
      ],
      env: { PATH: process.env.PATH, HOME: inside('/tmp'), ...env },
      cwd: inside(service.working_dir ?? '/tmp'),
    };
  }
  const run = async (name: string, args: string[], extra: NodeJS.ProcessEnv = {}) => {
    const a = await argsFor(name, args);
    return runProgram('unshare', a.args, { ...a.env, ...extra }, undefined, a.cwd);
  };
  const start = async (name: string, args: string[], extra: NodeJS.ProcessEnv = {}) => {
    const a = await argsFor(name, args);
    const b = startProgram('unshare', a.args, { ...a.env, ...extra }, a.cwd);
    running.push(b);
    return b;
  };

  /** `b` printed `mark`; fails at once, with its output, if it ended first (it cannot start: no wait for the time limit). */
  const started = (b: Background, mark: string | RegExp) => async () => {
    if (typeof mark === 'string' ? b.output().includes(mark) : mark.test(b.output())) return true;
    if (b.child.exitCode !== null || b.child.signalCode !== null) throw new Error(`it ended before starting:\n${b.output()}`);
    return false;
  };

  it("the README's compose steps: up (worker as uid 1001, dashboard), then each `docker compose run` line, keys Dify's own", async () => {
    const steps = shellBlocks(readmeSection('### A docker-compose Dify: join its network, publish nothing'))[0]!.split('\n');
    expect(steps).toContainEqual(expect.stringMatching(/^docker compose up -d\b/));
    expect(steps).toContainEqual(expect.stringMatching(/\bcp \S+\/customers\.csv files\//));
    // `docker compose up -d`: the services without a profile.
    const up = Object.entries(compose.services).filter(([, service]) => !service.profiles);
    expect(up.map(([name]) => name).sort()).toEqual(['dashboard', 'worker']);
    const worker = await start('worker', compose.services.worker!.command!);
    await until(started(worker, `key storage: ${inside('/dify/docker/volumes/app/storage')}`), 'the worker to start');
    const dashboard = await start('dashboard', compose.services.dashboard!.command!);
    await until(started(dashboard, /dashboard: http/), 'the dashboard to listen');
    // The compose file's health check, run in the dashboard's network namespace: PostgreSQL and Redis answer.
    const [kind, program, ...probe] = compose.services.dashboard!.healthcheck!.test;
    expect([kind, program]).toEqual(['CMD', 'node']);
    const health = await runProgram(
      'nsenter',
      ['--target', String(dashboard.child.pid), '--net', '--', process.execPath, ...probe],
      shell(),
    );
    expect(health.code, health.stdout + health.stderr).toBe(0);

    // Each `docker compose run --rm [-T] cli …` line as written (its /files path seen through the
    // mount, <batch-id> the batch the ingest line made, `> file` its standard output).
    let batchId = '';
    let report = '';
    const lines = steps.filter((l) => l.startsWith('docker compose run '));
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const line of lines) {
      const words = line
        .replace(/\s+#.*$/, '')
        .trim()
        .split(/\s+/);
      const redirect = words.indexOf('>');
      const args = (redirect === -1 ? words : words.slice(0, redirect))
        .slice(words.indexOf('cli') + 1)
        .map((w) => (w === '<batch-id>' ? batchId : w.startsWith('/files/') ? inside(w) : w));
      expect(words.slice(0, words.indexOf('cli')).filter((w) => !['docker', 'compose', 'run', '--rm', '-T'].includes(w))).toEqual([]);
      const r = ok(await run('cli', args));
      if (args[0] === 'ingest') batchId = /batch (\S+):/.exec(r.stdout + r.stderr)?.[1] ?? '';
      expect(batchId, line).not.toBe('');
      if (redirect !== -1) report = r.stdout;
    }
    // report.csv: the row created, its key written through the mount into Dify's storage, Dify's own.
    const [header, row] = report.trim().split('\n');
    const tenant = row!.split(',')[header!.split(',').indexOf('tenant_id')]!;
    expect(row).toContain(',created,');
    const key = await stat(join(docker, 'volumes', 'app', 'storage', 'privkeys', tenant, 'private.pem'));
    expect([key.uid, key.gid, key.mode & 0o777]).toEqual([1001, 1001, 0o600]);
    expect(ok(await run('cli', ['doctor', '--min-age', '0'])).stdout).toMatch(/doctor: no findings/);

    await dashboard.stop();
    expect(await worker.stop()).toBe(0);
    expect(worker.output() + dashboard.output()).not.toContain(DIFY_PASSWORD);
  });
});
