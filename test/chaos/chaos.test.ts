// Kill workers with SIGKILL, restart Redis (appendonly) and PostgreSQL, make key-file writes fail,
// all during one 300-row batch; then prove DESIGN.md's invariants.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Db } from '../../src/db/pool.js';
import { projectFile } from '../../src/common/project-files.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import { hybridDecrypt, hybridEncrypt } from '../../src/crypto/rsa-keys.js';
import { getBatchStatus } from '../../src/store/batches.js';
import { createDifyDatabase } from '../../src/services/dify-database.js';
import { startLocalServices, type LocalServices } from '../../src/services/local-services.js';
import { readFile, stat } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { operatorKeyFiles } from '../helpers/dify-invitations.js';
import { dumpRedis } from '../helpers/redis-dump.js';

const ROWS = Number(process.env.CHAOS_ROWS ?? 300);
const CLI = projectFile('dist', 'src', 'cli', 'main.js');
let services: LocalServices;
let db: Db;
let tmp: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'dify-provision-chaos-'));
  await chmod(tmp, 0o755);
  services = await startLocalServices({ dir: join(tmp, 'services'), redisAppendOnly: true });
  const databaseUrl = await createDifyDatabase(services.databaseUrl, 'chaos', {
    seedSql: `INSERT INTO accounts (name, email, status) SELECT 'Owner ' || i, 'owner' || i || '@example.com', 'active' FROM generate_series(1, 100) i`,
  });
  await mkdir(join(tmp, 'storage'));
  env = {
    ...process.env,
    REDIS_URL: services.redisUrl,
    DATABASE_URL: databaseUrl,
    DIFY_STORAGE_DIR: join(tmp, 'storage'),
    DIFY_PROVISION_LOG_LEVEL: 'warn',
  };
  db = createPool(databaseUrl, 2);
});
afterAll(async () => {
  // A test that failed mid-batch leaves its workers running: none outlives the run.
  for (const w of spawned) if (w.exit === undefined) w.child.kill('SIGKILL');
  await db?.end();
  await services?.stop();
  await rm(tmp, { recursive: true, force: true });
});

function run(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    c.on('close', (code) => resolve({ code, out }));
  });
}

/** Worker processes started so far, each with its log (stdout and stderr) in a file of its own. */
const spawned: { child: ChildProcess; log: string; exit?: string; stopping?: boolean }[] = [];

function startWorker(kind: 'cli' | 'faulty', faultUntil = 0, extraEnv: NodeJS.ProcessEnv = {}): ChildProcess {
  const args =
    kind === 'cli'
      ? [CLI, 'worker', '--concurrency', '4', '--lock-duration-ms', '3000']
      : ['--import', 'tsx', projectFile('test', 'chaos', 'faulty-worker.ts'), '4'];
  const log = join(tmp, `worker-${spawned.length + 1}-${kind}.log`);
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, args, {
    env: { ...env, FAULT_UNTIL: String(faultUntil), FAULT_LOG: faultLog, ...extraEnv },
    stdio: ['ignore', fd, fd],
    cwd: projectFile(),
  });
  closeSync(fd);
  const entry: (typeof spawned)[number] = { child, log };
  child.once('exit', (code, signal) => (entry.exit = signal ?? `exit code ${code}`));
  spawned.push(entry);
  return child;
}

/**
 * A worker that refused to start because PostgreSQL or Redis did not answer then (one started
 * while a server restarts): it says so and exits 1, for its supervisor to start it again, as the
 * tests here do (restartRefused). Not a crash.
 */
const refusedToStart = (w: (typeof spawned)[number]) =>
  w.exit === 'exit code 1' && /cannot use PostgreSQL at |cannot reach Redis at /.test(readFileSync(w.log, 'utf8'));

/** Starts again, as a supervisor would, each worker of `workers` that refused to start (refusedToStart). */
function restartRefused(workers: ChildProcess[], start: (i: number) => ChildProcess): void {
  workers.forEach((child, i) => {
    const w = spawned.find((e) => e.child === child);
    if (w && !w.stopping && refusedToStart(w)) workers[i] = start(i);
  });
}

/**
 * Fails at once when a worker exited on its own (an exit code, not a signal: a crash such as an
 * unhandled error) while faults were applied, naming it and quoting the end of its log; killing
 * workers by signal (SIGKILL, here or by themselves) is the test's, and so is a worker that
 * refused to start while a server restarted (refusedToStart).
 */
function failOnCrashedWorker(): void {
  const crashed = spawned.find((w) => !w.stopping && w.exit !== undefined && w.exit.startsWith('exit code') && !refusedToStart(w));
  if (crashed)
    throw new Error(`a worker crashed (${crashed.exit}), which no fault here should cause; the end of its log:\n${tailOf(crashed)}`);
}

/** The last lines of a worker's log, named by the file. */
const tailOf = (w: (typeof spawned)[number]) => `${w.log}:\n${readFileSync(w.log, 'utf8').trim().split('\n').slice(-15).join('\n')}`;

/** Stops every worker still running (SIGTERM: they finish what they hold and exit 0). */
function stopWorkers(): void {
  for (const w of spawned) {
    w.stopping = true;
    if (w.exit === undefined) w.child.kill('SIGTERM');
  }
}

/**
 * Fails when nothing progressed for STALLED_MS: a slow machine gets all the time it needs while
 * rows keep finishing, and a stuck batch fails with what is left of it. `progress` is any figure
 * that moves when work is done (rows finished; invitations left).
 */
function stallWatch(what: string) {
  let last: number | undefined;
  let at = Date.now();
  return (progress: number, counts: unknown) => {
    if (progress !== last) {
      last = progress;
      at = Date.now();
    } else if (Date.now() - at > STALLED_MS)
      throw new Error(
        `${what}: no progress for ${STALLED_MS / 1000} s (at ${progress}): ${JSON.stringify(counts)}; the running workers' logs end:\n` +
          spawned
            .filter((w) => w.exit === undefined)
            .map(tailOf)
            .join('\n'),
      );
  };
}
/** Each fault here is over within seconds (a killed worker's jobs return within 3 × its 3 s lock; a restarted server is waited for at most 30 s): three minutes without a row finished is a stuck batch. */
const STALLED_MS = 180_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Figures {
  kills: number;
  redisRestarts: number;
  postgresRestarts: number;
}
/** Applies (and counts) the scheduled faults due at `pct` percent done; `kill(i)` kills worker i (of `n`, in turn). */
async function applyDue(
  schedule: { at: number; what: 'kill' | 'redis' | 'postgres' }[],
  pct: number,
  figures: Figures,
  kill: (i: number) => void,
  n: number,
) {
  while (schedule.length > 0 && schedule[0]!.at <= pct) {
    const fault = schedule.shift()!;
    if (fault.what === 'kill') {
      kill(figures.kills % n);
      figures.kills++;
    } else if (fault.what === 'redis') {
      await services.restartRedis(); // a failed restart fails the test
      figures.redisRestarts++;
    } else {
      await services.restartPostgres();
      figures.postgresRestarts++;
    }
  }
}
let faultLog = '';

describe(`chaos: ${ROWS} rows while workers die and services restart`, () => {
  it('ends with one answer per row, one tenant per key, a matching key file per tenant, no orphans', async () => {
    const started = Date.now();
    const csv = join(tmp, 'chaos.csv');
    await writeFile(
      csv,
      `workspace_name,owner_email,external_id\n${Array.from({ length: ROWS }, (_, i) => `Chaos ${i},owner${(i % 100) + 1}@example.com,chaos-${i}`).join('\n')}\n`,
    );
    const ingest = await run(['ingest', csv, '--batch-id', 'chaos', '--attempts', '25', '--backoff-ms', '200']);
    expect(ingest.code, ingest.out).toBe(0);

    const faultUntil = Date.now() + 15_000; // key-file writes fail in the third worker for 15 s
    faultLog = join(tmp, 'faults.log');
    const workers: ChildProcess[] = [startWorker('cli'), startWorker('cli'), startWorker('faulty', faultUntil)];
    const figures = { kills: 0, redisRestarts: 0, postgresRestarts: 0 };
    // Faults are scheduled by progress, not by time, so each happens while rows are still open
    // whatever the machine's speed: 8 kills from 5% to 75%, Redis at 30%, PostgreSQL at 55%.
    const schedule: { at: number; what: 'kill' | 'redis' | 'postgres' }[] = [
      ...[5, 12, 20, 28, 40, 50, 62, 75].map((at) => ({ at, what: 'kill' as const })),
      { at: 30, what: 'redis' as const },
      { at: 55, what: 'postgres' as const },
    ].sort((a, b) => a.at - b.at);
    const current = async () => getBatchStatus(db, 'chaos').catch(() => undefined);
    const stalled = stallWatch('chaos batch');
    for (;;) {
      const s = await current();
      if (s?.done) break;
      failOnCrashedWorker();
      restartRefused(workers, (i) => startWorker(i === 2 ? 'faulty' : 'cli', faultUntil));
      stalled(s?.finished ?? -1, s?.counts);
      const pct = s ? (s.finished / s.total) * 100 : 0;
      await applyDue(
        schedule,
        pct,
        figures,
        (i) => {
          workers[i]!.kill('SIGKILL');
          workers[i] = startWorker(i === 2 ? 'faulty' : 'cli', faultUntil);
        },
        workers.length,
      );
      await sleep(300);
    }
    // Every fault happened while the batch ran (none skipped because it finished first).
    expect(figures).toEqual({ kills: 8, redisRestarts: 1, postgresRestarts: 1 });
    const injected = Number((await readFile(faultLog, 'utf8').catch(() => '')).split('\n').filter(Boolean).length);
    expect(injected).toBeGreaterThan(0); // key writes really failed in the faulty worker
    stopWorkers();
    await sleep(500);

    const status = (await getBatchStatus(db, 'chaos'))!;
    const seconds = (Date.now() - started) / 1000;
    const { rows: retried } = await db.query<{ n: number; max: number }>(
      `SELECT count(*) FILTER (WHERE attempts > 1)::int AS n, max(attempts)::int AS max FROM dify_provision.rows`,
    );
    console.log(
      `chaos figures: ${JSON.stringify({ rows: ROWS, ...figures, retriedRows: retried[0]!.n, maxAttempts: retried[0]!.max, seconds: Math.round(seconds), counts: status.counts })}`,
    );
    expect(retried[0]!.n).toBeGreaterThan(0); // the faults were felt, and survived
    // Every row has exactly one outcome, and here every one succeeded.
    expect(status.total).toBe(ROWS);
    expect(status.counts.created + status.counts.existing).toBe(ROWS);
    // One tenant per idempotency key.
    const { rows: tenants } = await db.query<{ id: string; name: string; encrypt_public_key: string }>(
      `SELECT id, name, encrypt_public_key FROM tenants`,
    );
    expect(tenants).toHaveLength(ROWS);
    expect(new Set(tenants.map((t) => t.name)).size).toBe(ROWS);
    expect((await db.query(`SELECT count(*)::int AS n FROM dify_provision.ledger`)).rows[0].n).toBe(ROWS);
    expect((await db.query(`SELECT count(*)::int AS n FROM tenant_account_joins WHERE role = 'owner'`)).rows[0].n).toBe(ROWS);
    // Every tenant's key file matches, with the right modes; no folder without a tenant.
    const folders = await readdir(join(tmp, 'storage', 'privkeys'));
    expect(folders.sort()).toEqual(tenants.map((t) => t.id).sort());
    for (const t of tenants) {
      const file = join(tmp, 'storage', 'privkeys', t.id, 'private.pem');
      const secret = Buffer.from(`secret for ${t.id}`);
      expect(hybridDecrypt(hybridEncrypt(secret, t.encrypt_public_key), await readFile(file, 'utf8'))).toEqual(secret);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
    }
    expect(await runDoctor(db, { storageDir: join(tmp, 'storage'), minOrphanAgeSeconds: 0 })).toEqual([]);
    const doctor = await run(['doctor', '--min-age', '0']);
    expect(doctor.code, doctor.out).toBe(0);
  });
});

// The same kind of run with --create-missing-owners --invite: every row creates its owner, whose
// token goes to Dify's Redis (here database 5 of the same server, keys under a prefix) after the
// workspace's COMMIT. Two workers die by SIGKILL exactly between that COMMIT and the SETEX (their
// n-th token store, n drawn anew at each restart), the CLI worker is killed at random moments,
// and Redis (ours and Dify's) and PostgreSQL restart. At the end each person has exactly one token.
describe(`chaos with invitations: ${ROWS} rows, workers killed between COMMIT and SETEX`, () => {
  it("ends with exactly one token per created person in Dify's Redis, each revealed once, none in ours", async () => {
    const started = Date.now();
    const DIFY_DB = 5;
    const prefix = 'chaosdify';
    const dir = join(tmp, 'invite');
    await mkdir(join(dir, 'storage'), { recursive: true });
    const op = await operatorKeyFiles(dir);
    const redisAt = new URL(services.redisUrl);
    const inviteEnv: NodeJS.ProcessEnv = {
      DATABASE_URL: await createDifyDatabase(services.databaseUrl, 'chaosinv'),
      DIFY_STORAGE_DIR: join(dir, 'storage'),
      REDIS_HOST: redisAt.hostname,
      REDIS_PORT: redisAt.port,
      REDIS_DB: String(DIFY_DB),
      REDIS_KEY_PREFIX: prefix,
      CONSOLE_WEB_URL: 'https://dify.example.com',
    };
    const idb = createPool(inviteEnv.DATABASE_URL!, 2);
    // Opened once the restarts are over (so they don't report its outage).
    let dify: Redis | undefined;
    let ours: Redis | undefined;
    try {
      const csv = join(dir, 'invite.csv');
      await writeFile(
        csv,
        `workspace_name,owner_email,external_id\n${Array.from({ length: ROWS }, (_, i) => `Invite ${i},person${i}@example.com,inv-${i}`).join('\n')}\n`,
      );
      const ingest = await run(
        [
          'ingest',
          csv,
          '--batch-id',
          'inv',
          '--attempts',
          '25',
          '--backoff-ms',
          '200',
          '--create-missing-owners',
          '--invite',
          '--seal-to',
          op.pub,
        ],
        inviteEnv,
      );
      expect(ingest.code, ingest.out).toBe(0);

      const crashLog = join(dir, 'crashes.log');
      const MAX_CRASHES = 16;
      let crashStarts = 0;
      const crashing = () => {
        const n = crashStarts < MAX_CRASHES ? 1 + Math.floor(Math.random() * 6) : 0;
        if (n > 0) crashStarts++;
        return startWorker('faulty', 0, { ...inviteEnv, CRASH_AT_STORE: String(n), CRASH_LOG: crashLog, SWEEP_MS: '3000' });
      };
      const workers: ChildProcess[] = [startWorker('cli', 0, inviteEnv), crashing(), crashing()];
      const exited = workers.map(() => false);
      const watchExit = (i: number) => workers[i]!.once('exit', () => (exited[i] = true));
      workers.forEach((_, i) => watchExit(i));
      const figures = { kills: 0, redisRestarts: 0, postgresRestarts: 0 };
      const schedule: { at: number; what: 'kill' | 'redis' | 'postgres' }[] = [
        ...[8, 22, 45, 70].map((at) => ({ at, what: 'kill' as const })),
        { at: 35, what: 'redis' as const },
        { at: 55, what: 'postgres' as const },
      ].sort((a, b) => a.at - b.at);
      const restart = (i: number) => {
        workers[i] = i === 0 ? startWorker('cli', 0, inviteEnv) : crashing();
        exited[i] = false;
        watchExit(i);
      };
      const stalled = stallWatch('invite chaos batch');
      for (;;) {
        const s = await getBatchStatus(idb, 'inv').catch(() => undefined);
        if (s?.done) break;
        failOnCrashedWorker();
        stalled(s?.finished ?? -1, s?.counts);
        // A worker that killed itself between COMMIT and SETEX is replaced, as a supervisor would.
        for (let i = 0; i < workers.length; i++) if (exited[i]) restart(i);
        const pct = s ? (s.finished / s.total) * 100 : 0;
        await applyDue(schedule, pct, figures, (i) => workers[i]!.kill('SIGKILL'), workers.length);
        await sleep(300);
      }
      expect(figures).toEqual({ kills: 4, redisRestarts: 1, postgresRestarts: 1 });
      // Tokens a crash or Dify's Redis restart left pending are stored by a re-run job or the sweep.
      const pendingLeft = async () =>
        (await idb.query(`SELECT count(*)::int AS n FROM dify_provision.invitations WHERE pending_token IS NOT NULL`)).rows[0].n as number;
      const pendingStalled = stallWatch('invitations still pending');
      for (let left = await pendingLeft(); left > 0; left = await pendingLeft()) {
        failOnCrashedWorker();
        pendingStalled(left, { pending: left });
        for (let i = 0; i < workers.length; i++) if (exited[i]) restart(i);
        await sleep(500);
      }
      stopWorkers();
      await sleep(500);
      dify = new Redis(`${services.redisUrl}/${DIFY_DB}`);
      ours = new Redis(services.redisUrl);
      const crashes = (await readFile(crashLog, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;

      const status = (await getBatchStatus(idb, 'inv'))!;
      const { rows: retried } = await idb.query<{ n: number }>(
        `SELECT count(*) FILTER (WHERE attempts > 1)::int AS n FROM dify_provision.rows`,
      );
      console.log(
        `invite chaos figures: ${JSON.stringify({ rows: ROWS, ...figures, crashesBetweenCommitAndSetex: crashes, retriedRows: retried[0]!.n, seconds: Math.round((Date.now() - started) / 1000), counts: status.counts })}`,
      );
      expect(crashes).toBeGreaterThanOrEqual(5); // the window was really hit, several times
      expect(status.total).toBe(ROWS);
      expect(status.counts.created).toBe(ROWS);
      // One person created per row, owner of its workspace.
      const { rows: people } = await idb.query<{ account_id: string; email: string; tenant_id: string }>(
        `SELECT a.id AS account_id, a.email, j.tenant_id FROM accounts a JOIN tenant_account_joins j ON j.account_id = a.id AND j.role = 'owner'`,
      );
      expect(people).toHaveLength(ROWS);
      expect(new Set(people.map((p) => p.tenant_id)).size).toBe(ROWS);
      const byAccount = new Map(people.map((p) => [p.account_id, p]));

      // Dify's Redis: exactly one token per person, naming them and their workspace, with a TTL.
      const keys = await dify.keys('*member_invite:token:*');
      expect(keys).toHaveLength(ROWS);
      const tokenOfAccount = new Map<string, string>();
      for (const k of keys) {
        expect(k.startsWith(`${prefix}:member_invite:token:`), k).toBe(true);
        const v = JSON.parse((await dify.get(k))!) as { account_id: string; email: string; workspace_id: string };
        const p = byAccount.get(v.account_id);
        expect(p, `token ${k} names an account the batch did not create`).toBeDefined();
        expect(v.workspace_id).toBe(p!.tenant_id);
        expect(v.email).toBe(p!.email);
        expect(tokenOfAccount.has(v.account_id), `two tokens for ${v.email}`).toBe(false);
        tokenOfAccount.set(v.account_id, k.slice(k.lastIndexOf(':') + 1));
        expect(await dify.ttl(k)).toBeGreaterThan(0);
      }
      expect(tokenOfAccount.size).toBe(ROWS);

      // secrets --invites: one link per person, whose token is that person's key in Dify's Redis.
      const out = join(dir, 'links.csv');
      const shown = await run(['secrets', 'inv', '--invites', '--key', op.key, '--out', out], inviteEnv);
      expect(shown.code, shown.out).toBe(0);
      const lines = (await readFile(out, 'utf8')).trim().split('\n').slice(1);
      expect(lines).toHaveLength(ROWS);
      const linked = new Set<string>();
      for (const line of lines) {
        const m = /\/activate\?email=([^&,]+)&token=([0-9a-f-]{36})/.exec(line)!;
        expect(m, line).not.toBeNull();
        const email = decodeURIComponent(m[1]!);
        const p = people.find((x) => x.email === email)!;
        expect(tokenOfAccount.get(p.account_id)).toBe(m[2]);
        linked.add(p.account_id);
      }
      expect(linked.size).toBe(ROWS);

      // No token in our Redis.
      const dump = await dumpRedis(ours);
      for (const t of tokenOfAccount.values()) expect(dump).not.toContain(t);
      expect(dump).not.toContain('/activate?');
    } finally {
      dify?.disconnect();
      ours?.disconnect();
      await idb.end();
    }
  });
});
