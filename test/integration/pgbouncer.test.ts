// PgBouncer in transaction pooling mode between workers and PostgreSQL (as many Dify installs run
// it): a batch completes exactly as it does direct. Our locks are transaction-scoped and we use no
// session state, which is what transaction pooling requires.
import { execFile, spawnSync } from 'node:child_process';
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/services/local-services.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const run = promisify(execFile);
let env: TestEnv;
let dir: string;
let bouncerUrl: string;
let pidFile: string;

beforeAll(async () => {
  env = await createTestEnv({ accounts: 30 });
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-pgbouncer-'));
  const db = new URL(env.config.databaseUrl);
  const port = await freePort();
  pidFile = join(dir, 'pgbouncer.pid');
  const ini = join(dir, 'pgbouncer.ini');
  await writeFile(join(dir, 'users.txt'), '"postgres" ""\n');
  await writeFile(
    ini,
    [
      '[databases]',
      `* = host=${db.hostname} port=${db.port}`,
      '[pgbouncer]',
      `listen_addr = 127.0.0.1`,
      `listen_port = ${port}`,
      'auth_type = trust',
      `auth_file = ${join(dir, 'users.txt')}`,
      'pool_mode = transaction',
      'default_pool_size = 5',
      'max_client_conn = 200',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      `pidfile = ${pidFile}`,
      'ignore_startup_parameters = application_name,extra_float_digits',
      '',
    ].join('\n'),
  );
  // PgBouncer will not run as root: as root, run it as the postgres user.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout);
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout);
    await chown(dir, uid, gid);
  }
  const cmd = asRoot ? ['runuser', '-u', 'postgres', '--', 'pgbouncer', '-d', ini] : ['pgbouncer', '-d', ini];
  await run(cmd[0]!, cmd.slice(1));
  db.host = `127.0.0.1:${port}`;
  bouncerUrl = db.toString();
  for (let i = 0; i < 100; i++) {
    if (spawnSync('pg_isready', ['-d', bouncerUrl]).status === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
});
afterAll(async () => {
  spawnSync('sh', ['-c', `kill $(cat ${pidFile}) 2>/dev/null`]);
  await env?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('through PgBouncer (transaction pooling)', () => {
  it('provisions a batch with duplicates and a re-run, each workspace exactly once', async () => {
    const viaBouncer = { ...env, config: { ...env.config, databaseUrl: bouncerUrl } };
    const rows = Array.from({ length: 30 }, (_, i) => ({
      workspace_name: `Bounced ${i % 25}`,
      owner_email: `owner${(i % 25) + 1}@example.com`,
    }));
    const summary = await ingestCsv(viaBouncer, csvOf(rows), 'bounce');
    expect(summary).toMatchObject({ queued: 25, rejected: 5 }); // the last 5 repeat earlier rows
    const [status] = await runUntilDone(viaBouncer, ['bounce'], { concurrency: 8 });
    expect(status!.counts).toMatchObject({ created: 25, rejected: 5, failed: 0 });
    await ingestCsv(viaBouncer, csvOf(rows.slice(0, 25)), 'bounce-again');
    const [again] = await runUntilDone(viaBouncer, ['bounce-again'], { concurrency: 8 });
    expect(again!.counts).toMatchObject({ existing: 25 });
    const { rows: n } = await env.db.query(`SELECT count(*)::int AS n FROM tenants`);
    expect(n).toEqual([{ n: 25 }]);
  });
});
