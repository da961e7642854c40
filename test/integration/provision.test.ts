import { chown, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { probeDifySchema } from '../../src/dify/schema-probe.js';
import { localKeyStorage } from '../../src/storage/local.js';
import { provisionWorkspace } from '../../src/worker/provision-workspace.js';
import { upgradeTimeOfDay, workspaceWriter } from '../../src/dify/workspace-writer.js';
import { rsaKeySource } from '../../src/crypto/rsa-keys.js';
import { migrate } from '../../src/store/schema.js';
import { waitForBatch } from '../../src/store/batches.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { keyFile, keyPairWorks, modes } from '../helpers/dify-checks.js';
import { type TestEnv } from '../helpers/test-env.js';
import { freshEnvEachTest } from '../helpers/world.js';

let env: TestEnv;
freshEnvEachTest((e) => (env = e));

const count = async (sql: string, params: unknown[] = []) => Number((await env.db.query<{ n: string }>(sql, params)).rows[0]!.n);
const rowsOf = async (batch: string) =>
  (
    await env.db.query(`SELECT line, outcome, tenant_id, attempts, error FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`, [
      batch,
    ])
  ).rows;

describe('provisioning a batch', () => {
  it("writes every row Dify's create_tenant writes, and a private.pem that matches the public key", async () => {
    const csv = csvOf([
      {
        workspace_name: 'Acme',
        owner_email: 'Owner1@example.com',
        plan: 'team',
        members: 'owner2@example.com:admin;owner3@example.com:dataset_operator',
        workspace_id: '',
      },
      {
        workspace_name: 'Globex',
        owner_email: 'owner1@example.com',
        plan: '',
        members: '',
        workspace_id: '6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20',
      },
    ]);
    const ingested = await ingestCsv(env, csv, 'b1');
    expect(ingested).toMatchObject({ total: 2, queued: 2, rejected: 0 });
    const [status] = await runUntilDone(env, ['b1']);
    expect(status!.counts).toMatchObject({ created: 2, failed: 0 });

    const results = await rowsOf('b1');
    const acme = results[0]!.tenant_id as string;
    expect(results[1]!.tenant_id).toBe('6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20');

    const tenant = (await env.db.query(`SELECT * FROM tenants WHERE id = $1`, [acme])).rows[0];
    expect(tenant).toMatchObject({ name: 'Acme', plan: 'team', status: 'normal', custom_config: null });
    expect(tenant.encrypt_public_key).toMatch(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+\n-----END PUBLIC KEY-----$/);
    expect((await env.db.query(`SELECT plan FROM tenants WHERE id = $1`, [results[1]!.tenant_id])).rows[0].plan).toBe('basic');

    const strategies = (
      await env.db.query(
        `SELECT category, strategy_setting, upgrade_mode, upgrade_time_of_day, exclude_plugins::text AS ex, include_plugins::text AS inc
           FROM tenant_plugin_auto_upgrade_strategies WHERE tenant_id = $1 ORDER BY category`,
        [acme],
      )
    ).rows;
    const slot = upgradeTimeOfDay(acme);
    expect(strategies).toEqual(
      ['agent-strategy', 'datasource', 'extension', 'model', 'tool', 'trigger'].map((category) => ({
        category,
        strategy_setting: category === 'model' ? 'latest' : 'fix_only',
        upgrade_mode: 'exclude',
        upgrade_time_of_day: slot,
        ex: '[]',
        inc: '[]',
      })),
    );

    const pools = (await env.db.query(`SELECT pool_type, quota_limit, quota_used FROM tenant_credit_pools WHERE tenant_id = $1`, [acme]))
      .rows;
    expect(pools).toEqual([{ pool_type: 'trial', quota_limit: '200', quota_used: '0' }]);

    // As Dify writes joins for existing accounts: invited_by NULL, not current (create_tenant_member).
    const joins = (
      await env.db.query(
        `SELECT a.email, j.role, j.current, j.invited_by, j.last_opened_at
           FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id
          WHERE j.tenant_id = $1 ORDER BY a.email`,
        [acme],
      )
    ).rows;
    expect(joins).toEqual([
      { email: 'owner1@example.com', role: 'owner', current: false, invited_by: null, last_opened_at: null },
      { email: 'owner2@example.com', role: 'admin', current: false, invited_by: null, last_opened_at: null },
      { email: 'owner3@example.com', role: 'dataset_operator', current: false, invited_by: null, last_opened_at: null },
    ]);
    expect(await count(`SELECT count(*) AS n FROM tenant_account_joins WHERE current`)).toBe(0);

    for (const r of results) {
      expect(await keyPairWorks(env, r.tenant_id as string)).toBe(true);
      expect(await modes(env, r.tenant_id as string)).toEqual({ dir: '700', file: '600' });
    }
  });

  it('re-ingesting the same CSV queues nothing twice, and another batch with the same rows finds them existing', async () => {
    const csv = csvOf(Array.from({ length: 6 }, (_, i) => ({ workspace_name: `WS ${i}`, owner_email: `owner${i + 1}@example.com` })));
    await ingestCsv(env, csv, 'first');
    await runUntilDone(env, ['first']);
    expect(await count(`SELECT count(*) AS n FROM tenants`)).toBe(6);

    const again = await ingestCsv(env, csv, 'first');
    expect(again).toMatchObject({ total: 6, queued: 0, alreadyInBatch: 6 });
    const other = await ingestCsv(env, csv, 'second');
    expect(other.queued).toBe(6);
    const [, second] = await runUntilDone(env, ['first', 'second']);
    expect(second!.counts).toMatchObject({ existing: 6, created: 0 });
    expect(await count(`SELECT count(*) AS n FROM tenants`)).toBe(6);
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toHaveLength(6);
    const firstIds = (await rowsOf('first')).map((r) => r.tenant_id);
    expect((await rowsOf('second')).map((r) => r.tenant_id)).toEqual(firstIds);
  });

  it('two batches racing on the same keys create one tenant per key', async () => {
    const csv = csvOf(
      Array.from({ length: 10 }, (_, i) => ({
        workspace_name: `Race ${i}`,
        owner_email: `owner${(i % 3) + 1}@example.com`,
        external_id: `ext-${i}`,
      })),
    );
    await ingestCsv(env, csv, 'race-a');
    await ingestCsv(env, csv, 'race-b');
    const [a, b] = await runUntilDone(env, ['race-a', 'race-b'], { concurrency: 8 });
    expect(a!.counts.created + b!.counts.created).toBe(10);
    expect(a!.counts.existing + b!.counts.existing).toBe(10);
    expect(await count(`SELECT count(*) AS n FROM tenants`)).toBe(10);
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toHaveLength(10);
    // No join is marked current: Dify's create path leaves that to login (or its invite's switch).
    expect(await count(`SELECT count(*) AS n FROM tenant_account_joins WHERE current`)).toBe(0);
  });

  it('a job that runs twice at once (a lost lock) creates the workspace once', async () => {
    await migrate(env.db);
    await ingestCsv(env, csvOf([{ workspace_name: 'Twice', owner_email: 'owner1@example.com' }]), 'twice');
    // The job exactly as ingest recorded it (a worker refuses anything else), run twice at once.
    const { rows } = await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'twice'`);
    const job = rows[0].spec;
    const storage = await localKeyStorage({ root: env.config.storageDir });
    const writer = workspaceWriter(await probeDifySchema(env.db), 200);
    const deps = { db: env.db, keys: rsaKeySource, storage, writer };
    const outcomes = await Promise.all([provisionWorkspace(job, 1, deps), provisionWorkspace(job, 1, deps)]);
    expect(outcomes.map((o) => o.kind).sort()).toEqual(['created', 'existing']);
    const ids = outcomes.map((o) => (o.kind === 'cancelled' ? undefined : o.tenantId));
    expect(ids[0]).toBe(ids[1]);
    expect(await count(`SELECT count(*) AS n FROM tenants`)).toBe(1);
    expect(await keyPairWorks(env, job.tenantId)).toBe(true);
  });

  it('a new workspace whose accounts exist costs three PostgreSQL round trips, and is written whole', async () => {
    await migrate(env.db);
    await ingestCsv(
      env,
      csvOf([{ workspace_name: 'Three', owner_email: 'owner1@example.com', members: 'owner2@example.com:admin' }]),
      'three',
    );
    const { rows } = await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'three'`);
    const job = rows[0].spec;
    const storage = await localKeyStorage({ root: env.config.storageDir });
    const writer = workspaceWriter(await probeDifySchema(env.db), 200);
    // Every query sent, on the pool or on a connection taken from it.
    const sent: string[] = [];
    const counted = (q: { query: (...a: any[]) => any }) => {
      const query = q.query.bind(q);
      return (...a: any[]) => (sent.push(String(typeof a[0] === 'string' ? a[0] : a[0]?.text).slice(0, 40)), query(...a));
    };
    const db = new Proxy(env.db, {
      get: (t, p) =>
        p === 'query'
          ? counted(t)
          : p === 'connect'
            ? async () => {
                const c = await t.connect();
                return new Proxy(c, { get: (ct, cp) => (cp === 'query' ? counted(ct) : Reflect.get(ct, cp)) });
              }
            : Reflect.get(t, p),
    });
    const outcome = await provisionWorkspace(job, 1, { db, keys: rsaKeySource, storage, writer });
    expect(outcome.kind).toBe('created');
    expect(sent).toHaveLength(3);
    expect(await count(`SELECT count(*) AS n FROM tenant_account_joins WHERE tenant_id = $1`, [job.tenantId])).toBe(2);
    expect(await count(`SELECT count(*) AS n FROM dify_provision.ledger WHERE tenant_id = $1`, [job.tenantId])).toBe(1);
    expect((await rowsOf('three'))[0]).toMatchObject({ outcome: 'created', tenant_id: job.tenantId });
    expect(await keyPairWorks(env, job.tenantId)).toBe(true);
  });

  it('a missing owner fails that row only, at once, with a clear reason', async () => {
    const csv = csvOf([
      { workspace_name: 'Good', owner_email: 'owner1@example.com' },
      { workspace_name: 'Orphan', owner_email: 'nobody@example.com' },
      { workspace_name: 'Also good', owner_email: 'owner2@example.com' },
    ]);
    await ingestCsv(env, csv, 'missing', { attempts: 5 });
    const [status] = await runUntilDone(env, ['missing']);
    expect(status!.counts).toMatchObject({ created: 2, failed: 1 });
    const failed = (await rowsOf('missing')).find((r) => r.outcome === 'failed')!;
    expect(failed).toMatchObject({ line: 3, attempts: 1 });
    // The way forward from a queued batch: create the account and retry, or retry creating it.
    expect(failed.error).toBe(
      'owner_email: no Dify account has the email "nobody@example.com" — create the account or fix the address; ' +
        'once the account exists, `dify-provision retry missing` queues this row again ' +
        "(or `dify-provision retry missing --create-missing-owners` creates it as Dify's invite does)",
    );
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toHaveLength(2);
  });

  it('retries a transient database error and succeeds, leaving no stray key files', async () => {
    // A real PostgreSQL error: the first two tenant inserts fail with serialization_failure (40001).
    await env.db.query(`
      CREATE SEQUENCE fault_seq;
      CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('fault_seq') <= 2 THEN RAISE EXCEPTION 'injected transient fault' USING ERRCODE = '40001'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER fault BEFORE INSERT ON tenants FOR EACH ROW EXECUTE FUNCTION fault();`);
    await ingestCsv(env, csvOf([{ workspace_name: 'Flaky', owner_email: 'owner1@example.com' }]), 'flaky', { attempts: 5, backoffMs: 20 });
    const [status] = await runUntilDone(env, ['flaky']);
    expect(status!.counts).toMatchObject({ created: 1, failed: 0 });
    const [row] = await rowsOf('flaky');
    expect(row).toMatchObject({ outcome: 'created', attempts: 3, error: null });
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toEqual([row!.tenant_id]);
    expect(await keyPairWorks(env, row!.tenant_id as string)).toBe(true);
  });

  it('fails a row after its attempts run out, removing the key file it wrote', async () => {
    await env.db.query(`
      CREATE FUNCTION always_fail() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'database says no' USING ERRCODE = '40001'; END $$;
      CREATE TRIGGER always_fail BEFORE INSERT ON tenant_credit_pools FOR EACH ROW EXECUTE FUNCTION always_fail();`);
    await ingestCsv(env, csvOf([{ workspace_name: 'Doomed', owner_email: 'owner1@example.com' }]), 'doomed', {
      attempts: 2,
      backoffMs: 20,
    });
    const [status] = await runUntilDone(env, ['doomed']);
    expect(status!.counts).toMatchObject({ failed: 1 });
    expect((await rowsOf('doomed'))[0]).toMatchObject({ attempts: 2, error: 'database says no (40001)' });
    expect(await count(`SELECT count(*) AS n FROM tenants`)).toBe(0);
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toEqual([]);
  });

  it('writes key files 0600 in 0700 folders whatever the umask', async () => {
    const old = process.umask(0o000);
    try {
      await ingestCsv(env, csvOf([{ workspace_name: 'Umask', owner_email: 'owner1@example.com' }]), 'umask');
      await runUntilDone(env, ['umask']);
    } finally {
      process.umask(old);
    }
    const [row] = await rowsOf('umask');
    expect(await modes(env, row!.tenant_id as string)).toEqual({ dir: '700', file: '600' });
    expect(keyFile(env, row!.tenant_id as string)).toContain(`privkeys/${row!.tenant_id}/private.pem`);
  });
});

describe('who owns the key files', () => {
  // Not skipped when not root: a skipped test can't fail. It fails at once instead, having
  // changed nothing, and says how to run it.
  it("defaults to the storage folder's owner (Dify's container runs as 1001), and KEY_FILE_OWNER overrides it", async () => {
    if (process.getuid?.() !== 0)
      throw new Error(
        `this test gives key files to uid 1001 (Dify's container user), which needs root; it runs as uid ${process.getuid?.()}: run the tests as root (as CI does), nothing was changed`,
      );
    await chown(env.config.storageDir, 1001, 1001);
    await ingestCsv(env, csvOf([{ workspace_name: 'Owned', owner_email: 'owner1@example.com' }]), 'owned');
    await runUntilDone(env, ['owned']);
    const [row] = await rowsOf('owned');
    const file = keyFile(env, row!.tenant_id as string);
    for (const path of [file, join(file, '..')]) expect(await stat(path)).toMatchObject({ uid: 1001, gid: 1001 });

    await ingestCsv(env, csvOf([{ workspace_name: 'Owned 2', owner_email: 'owner2@example.com' }]), 'owned2');
    const w = await runWorker(
      { ...env.config, keyFileOwner: { uid: 1002, gid: 1003 } },
      { concurrency: 1, logger: pino({ level: 'silent' }) },
    );
    await waitForBatch(env.db, 'owned2', { intervalMs: 100 }).finally(() => w.close());
    const [row2] = await rowsOf('owned2');
    expect(await stat(keyFile(env, row2!.tenant_id as string))).toMatchObject({ uid: 1002, gid: 1003, mode: expect.any(Number) });
  });
});

describe('checking the database before the first job', () => {
  it("refuses a database that isn't Dify's, and creates nothing of ours in it", async () => {
    await env.db.query(`DROP TABLE tenant_account_joins`);
    await expect(runWorker(env.config, { concurrency: 1, logger: pino({ level: 'silent' }) })).rejects.toThrow(
      /does not look like Dify's \(missing tenant_account_joins\.tenant_id/,
    );
    const { rows } = await env.db.query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = 'dify_provision'`);
    expect(rows).toEqual([]);
  });

  it('refuses a schema no Dify release has, naming what it found and what is supported', async () => {
    await env.db.query(`DROP TABLE tenant_credit_pools`);
    await expect(runWorker(env.config, { concurrency: 1, logger: pino({ level: 'silent' }) })).rejects.toThrow(
      /not one dify-provision knows \(tenant_plugin_auto_upgrade_strategies has a category column but there is no tenant_credit_pools\): Dify 0\.15\.0 to 1\.16/,
    );
  });

  it('refuses a Dify whose tenant keys live in a key vault', async () => {
    await env.db.query(`INSERT INTO tenants (name, encrypt_public_key) VALUES ('vaulted', 'projects/x/keys/tenant-1')`);
    await expect(runWorker(env.config, { concurrency: 1, logger: pino({ level: 'silent' }) })).rejects.toThrow(/key vault/);
  });
});
