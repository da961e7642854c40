// Starts throwaway Redis and PostgreSQL servers from the system's own binaries, on loopback and
// free ports, for the demo and the tests on machines without a Docker engine.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ProvisionError } from '../common/errors.js';

const run = promisify(execFile);

export interface LocalServices {
  readonly redisUrl: string;
  readonly databaseUrl: string;
  readonly dir: string;
  /** Stops both servers; the data folder is removed unless `keep` is set. */
  stop(opts?: { keep?: boolean }): Promise<void>;
  /** Restarts Redis on the same port and data (for crash tests with appendonly on). */
  restartRedis(): Promise<void>;
  /** Restarts PostgreSQL on the same port and data (`crash`: an immediate shutdown, so it starts with crash recovery). */
  restartPostgres(opts?: { crash?: boolean }): Promise<void>;
  /**
   * A physical copy of the running PostgreSQL (pg_basebackup, as staging is made from production),
   * started on a port of its own; its URL names the same database as the original's.
   */
  copyPostgres(): Promise<{ databaseUrl: string; stop(): Promise<void> }>;
}

export interface StartOptions {
  /**
   * Folder for data, sockets and logs; created if missing. Default: a new folder under the
   * system temp dir, which the postgres user can reach whatever folder the clone is in.
   */
  dir?: string;
  /** Keep Redis' queue across restarts (appendonly). Default false. */
  redisAppendOnly?: boolean;
  /** Where progress messages go (apt-get installs, start-up). */
  say?: (message: string) => void;
}

const APT_PACKAGES = 'redis-server postgresql';
const INSTALL_HINT = `sudo apt-get update && sudo apt-get install -y --no-install-recommends ${APT_PACKAGES}`;

export class MissingBinariesError extends ProvisionError {
  override readonly name: string = 'MissingBinariesError';
  readonly code = 'MISSING_BINARIES';
}

export async function startLocalServices(opts: StartOptions): Promise<LocalServices> {
  const say = opts.say ?? (() => {});
  const bins = await ensureBinaries(say);
  const dir = opts.dir ? resolve(opts.dir) : await mkdtemp(join(tmpdir(), 'dify-provision-services-'));
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755); // the postgres user must be able to enter it when we are root
  const redis = await startRedis(bins.redisServer, dir, opts.redisAppendOnly ?? false);
  let pg: PgServer;
  try {
    pg = await startPostgres(bins.pgBin, dir);
  } catch (err) {
    await redis.stop();
    throw err;
  }
  return {
    redisUrl: `redis://127.0.0.1:${redis.port}`,
    databaseUrl: `postgres://postgres@127.0.0.1:${pg.port}/postgres`,
    dir,
    async stop(stopOpts) {
      await Promise.allSettled([redis.stop(), pg.stop()]);
      if (!stopOpts?.keep) await rm(dir, { recursive: true, force: true });
    },
    async restartRedis() {
      await redis.stop();
      await redis.start();
    },
    async restartPostgres(restartOpts) {
      await pg.stop(restartOpts?.crash ? 'immediate' : 'fast');
      await pg.start();
    },
    async copyPostgres() {
      const copy = await pg.copy();
      return { databaseUrl: `postgres://postgres@127.0.0.1:${copy.port}/postgres`, stop: () => copy.stop() };
    },
  };
}

interface Binaries {
  redisServer: string;
  pgBin: string;
}

function findBinaries(): Partial<Binaries> {
  const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const redisServer = which.status === 0 ? which.stdout.trim() : undefined;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const pgBin = versions[0] ? join(root, versions[0], 'bin') : undefined;
  return { redisServer, pgBin };
}

async function ensureBinaries(say: (m: string) => void): Promise<Binaries> {
  let found = findBinaries();
  if (found.redisServer && found.pgBin) return found as Binaries;
  if (!canInstallWithApt()) {
    throw new MissingBinariesError(
      `redis-server and PostgreSQL's server binaries are needed to start local services. ` +
        `Install them (${INSTALL_HINT}) or set REDIS_URL and DATABASE_URL to servers you run.`,
    );
  }
  await installWithApt(APT_PACKAGES.split(' '), say);
  found = findBinaries();
  if (!found.redisServer || !found.pgBin) throw new MissingBinariesError(`apt-get did not provide ${APT_PACKAGES}`);
  return found as Binaries;
}

/** Whether this process may install system packages itself: root, with apt-get (Debian, Ubuntu). */
export function canInstallWithApt(): boolean {
  return process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v apt-get']).status === 0;
}

/** apt-get install, saying so first (as root on Debian/Ubuntu: see canInstallWithApt). */
export async function installWithApt(packages: string[], say: (m: string) => void): Promise<void> {
  say(`installing ${packages.join(' ')} with apt-get (not found on this machine)…`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update', '-qq'], { env, maxBuffer: 64 << 20 });
  await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], { env, maxBuffer: 64 << 20 });
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? res(addr.port) : rej(new Error('no port'))));
    });
  });
}

interface Server {
  port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
}
interface PgServer extends Server {
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  copy(): Promise<PgServer>;
}

async function startRedis(redisServer: string, dir: string, appendOnly: boolean): Promise<Server> {
  const port = await freePort();
  const dataDir = join(dir, 'redis');
  await mkdir(dataDir, { recursive: true });
  const pidFile = join(dataDir, 'redis.pid');
  const server: Server = {
    port,
    async start() {
      // prettier-ignore
      await run(redisServer, [
        '--port', String(port), '--bind', '127.0.0.1', '--daemonize', 'yes',
        '--pidfile', pidFile, '--logfile', join(dataDir, 'redis.log'), '--dir', dataDir,
        '--save', '', '--appendonly', appendOnly ? 'yes' : 'no', '--appendfsync', 'everysec',
      ]);
      await waitFor(async () => (await run('redis-cli', ['-p', String(port), 'ping'])).stdout.includes('PONG'), 'Redis');
    },
    async stop() {
      const pid = await readPid(pidFile);
      if (pid) await killAndWait(pid);
    },
  };
  await server.start();
  return server;
}

async function startPostgres(pgBin: string, dir: string): Promise<PgServer> {
  const port = await freePort();
  const dataDir = join(dir, 'pg');
  const sockDir = join(dir, 'pgsock');
  await mkdir(sockDir, { recursive: true });
  const asPg = await pgRunner();
  await asPg.prepare([dir, sockDir]);
  await asPg.run(join(pgBin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8', '-N']);
  const server = pgServer(pgBin, asPg, dir, dataDir, port, sockDir, '');
  await server.start();
  return server;
}

/** One PostgreSQL data folder served on `port` (`name` tells copies' options and logs apart). */
function pgServer(pgBin: string, asPg: PgRunner, dir: string, dataDir: string, port: number, sockDir: string, name: string): PgServer {
  let copies = 0;
  const optionsFile = join(dir, `pg-options${name}`);
  const server: PgServer = {
    port,
    async start() {
      if (!existsSync(optionsFile))
        await writeFile(optionsFile, `-p ${port} -k ${sockDir} -c listen_addresses=127.0.0.1 -c max_connections=300`);
      const options = await readFile(optionsFile, 'utf8');
      await asPg.run(join(pgBin, 'pg_ctl'), [
        '-D',
        dataDir,
        '-l',
        join(dir, `postgres${name}.log`),
        '-o',
        options,
        '-w',
        '-t',
        '60',
        'start',
      ]);
    },
    async stop(mode = 'fast') {
      await asPg.run(join(pgBin, 'pg_ctl'), ['-D', dataDir, '-m', mode, '-w', 'stop']).catch(() => {});
    },
    async copy() {
      const copyName = `${name}-copy${++copies}`;
      const copyDir = join(dir, `pg${copyName}`);
      // initdb's pg_hba.conf lets local users replicate, and wal_level is replica by default.
      // prettier-ignore
      await asPg.run(join(pgBin, 'pg_basebackup'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-D', copyDir, '-X', 'stream', '-c', 'fast']);
      const copy = pgServer(pgBin, asPg, dir, copyDir, await freePort(), sockDir, copyName);
      await copy.start();
      return copy;
    },
  };
  return server;
}

/** PostgreSQL refuses to run as root: as root, run its binaries as the `postgres` user. */
interface PgRunner {
  prepare(dirs: string[]): Promise<void>;
  run(cmd: string, args: string[]): Promise<void>;
}

async function pgRunner(): Promise<PgRunner> {
  const isRoot = process.getuid?.() === 0;
  if (!isRoot) {
    return { prepare: async () => {}, run: async (cmd, args) => void (await run(cmd, args)) };
  }
  const ids = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gids = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (ids.status !== 0) throw new MissingBinariesError('running as root but no `postgres` user exists to run PostgreSQL');
  const uid = Number(ids.stdout.trim());
  const gid = Number(gids.stdout.trim());
  return {
    async prepare(dirs) {
      for (const d of dirs) {
        await chown(d, uid, gid);
        if (spawnSync('runuser', ['-u', 'postgres', '--', 'test', '-w', d]).status !== 0) {
          throw new MissingBinariesError(
            `PostgreSQL runs as the postgres user, who cannot reach ${d}: make its parent folders traversable (chmod o+x) or choose another folder`,
          );
        }
      }
    },
    async run(cmd, args) {
      await run('runuser', ['-u', 'postgres', '--', cmd, ...args], { cwd: '/' });
    },
  };
}

/** The pid in a pid file, if it holds one. */
export async function readPid(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** SIGTERM, then wait until the process is gone. */
export async function killAndWait(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  await waitFor(async () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }, `process ${pid} to exit`);
}

/** Polls `check` (its errors count as "not yet") until it is true, or fails naming `what`. */
export async function waitFor(check: () => Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not ready yet
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
