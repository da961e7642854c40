// Each test performs an attack or a race from the hardening review and checks it fails safely.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { chown, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { rsaKeySource, type KeySource } from '../../src/crypto/rsa-keys.js';
import { readRows } from '../../src/input/read-rows.js';
import { probeDifySchema } from '../../src/dify/schema-probe.js';
import { workspaceWriter, type WorkspaceWriter } from '../../src/dify/workspace-writer.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import { RowError, UsageError } from '../../src/common/errors.js';
import { createProvisioner } from '../../src/provisioner.js';
import { localKeyStorage } from '../../src/storage/local.js';
import { inlined } from '../../src/db/pool.js';
import { migrate } from '../../src/store/schema.js';
import { provisionWorkspace } from '../../src/worker/provision-workspace.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { waitForBatch } from '../../src/store/batches.js';
import { csvOf, envQueue, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { keyFile, keyPairWorks } from '../helpers/dify-checks.js';
import { type TestEnv } from '../helpers/test-env.js';
import { freshEnvEachTest } from '../helpers/world.js';

let env: TestEnv;
freshEnvEachTest((e) => (env = e));

const isRoot = process.getuid?.() === 0;
const rowsOf = async (batch: string) =>
  (await env.db.query(`SELECT line, outcome, tenant_id, error FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`, [batch])).rows;
const tenants = async () => Number((await env.db.query<{ n: string }>(`SELECT count(*) AS n FROM tenants`)).rows[0]!.n);

describe('key folders are never followed through symbolic links', () => {
  it('a privkeys/<uuid> link to any folder fails that row; the target keeps its owner, mode and contents', async () => {
    const victim = join(env.dir, 'victim');
    await mkdir(victim, { mode: 0o755 });
    await writeFile(join(victim, 'keep.txt'), 'mine');
    if (isRoot) await chown(env.config.storageDir, 1001, 1001); // Dify's user owns the storage, the worker is root
    const before = await stat(victim);
    const id = randomUUID();
    await mkdir(join(env.config.storageDir, 'privkeys'), { recursive: true });
    await symlink(victim, join(env.config.storageDir, 'privkeys', id));

    await ingestCsv(env, csvOf([{ workspace_name: 'Linked', owner_email: 'owner1@example.com', workspace_id: id }]), 'link');
    const [status] = await runUntilDone(env, ['link']);
    expect(status!.counts).toMatchObject({ failed: 1, created: 0 });
    expect((await rowsOf('link'))[0]!.error).toMatch(/is a symbolic link: refusing/);
    const after = await stat(victim);
    expect({ uid: after.uid, gid: after.gid, mode: after.mode }).toEqual({ uid: before.uid, gid: before.gid, mode: before.mode });
    expect((await readdir(victim)).sort()).toEqual(['keep.txt']);
    expect(await tenants()).toBe(0);
  });

  it("a link to another tenant's folder never overwrites that tenant's key, and doctor reports the link", async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Real', owner_email: 'owner1@example.com' }]), 'real');
    await runUntilDone(env, ['real']);
    const real = (await rowsOf('real'))[0]!.tenant_id as string;
    const original = await readFile(keyFile(env, real), 'utf8');
    const id = randomUUID();
    await symlink(join(env.config.storageDir, 'privkeys', real), join(env.config.storageDir, 'privkeys', id));

    await ingestCsv(env, csvOf([{ workspace_name: 'Thief', owner_email: 'owner2@example.com', workspace_id: id }]), 'thief');
    const [status] = await runUntilDone(env, ['thief']);
    expect(status!.counts.failed).toBe(1);
    expect(await readFile(keyFile(env, real), 'utf8')).toBe(original);
    expect(await keyPairWorks(env, real)).toBe(true);
    const findings = await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0 });
    expect(findings.map((f) => `${f.kind}:${f.tenantId}`)).toEqual([`orphan-key:${id}`]);
    // --fix removes the link itself, never what it points to
    await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0, fix: true });
    await expect(lstat(join(env.config.storageDir, 'privkeys', id))).rejects.toThrow(/ENOENT/);
    expect(await readFile(keyFile(env, real), 'utf8')).toBe(original);
  });

  it('a tenant folder holding something that is not ours is refused', async () => {
    const id = randomUUID();
    await mkdir(join(env.config.storageDir, 'privkeys', id), { recursive: true });
    await writeFile(join(env.config.storageDir, 'privkeys', id, 'planted.sh'), 'echo hi');
    await ingestCsv(env, csvOf([{ workspace_name: 'Planted', owner_email: 'owner1@example.com', workspace_id: id }]), 'planted');
    await runUntilDone(env, ['planted']);
    expect((await rowsOf('planted'))[0]).toMatchObject({
      outcome: 'failed',
      error: expect.stringMatching(/holds "planted.sh", which is not ours/),
    });
  });

  it('privkeys itself as a link stops the worker at start', async () => {
    const elsewhere = join(env.dir, 'elsewhere');
    await mkdir(elsewhere);
    await symlink(elsewhere, join(env.config.storageDir, 'privkeys'));
    await expect(runWorker(env.config, { concurrency: 1, logger: pino({ level: 'silent' }) })).rejects.toThrow(
      /is a symbolic link, not a plain folder: refusing/,
    );
    await expect(runDoctor(env.db, { storageDir: env.config.storageDir })).rejects.toThrow(/does not follow it/);
  });
});

describe('the operator key for sealing', () => {
  it('refuses a private key for --seal-to and keeps only the public key in the batch', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const provisioner = await createProvisioner(env.config);
    try {
      const rows = [{ workspace_name: 'Sealed', owner_email: 'owner1@example.com' }];
      const err = await provisioner.enqueue(rows, { batchId: 'priv', mintDatasetKeys: true, sealTo: privatePem }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(/was given a PRIVATE key: give the public key only/);
      expect(await provisioner.batches()).toEqual([]);

      // A public key given with extra text around it: only the SPKI PEM is stored.
      const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
      await provisioner.enqueue(rows, { batchId: 'pub', mintDatasetKeys: true, sealTo: publicPem });
      const { rows: stored } = await env.db.query<{ options: string }>(`SELECT options::text FROM dify_provision.batches`);
      expect(stored.map((r) => r.options).join('')).not.toMatch(/PRIVATE/);
      expect(stored[0]!.options).toContain('BEGIN PUBLIC KEY');
    } finally {
      await provisioner.close();
    }
  });
});

describe('jobs that ingest did not record', () => {
  const queue = () => envQueue(env);

  it('a job added in Redis by someone else creates nothing and answers no real row', async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Real', owner_email: 'owner1@example.com' }]), 'real');
    const recorded = (await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'real'`)).rows[0]!.spec;
    const q = await queue();
    // A forged row of its own, and a copy of the real row's job that makes someone else an admin.
    await q.add('workspace', { ...recorded, line: 99, workspaceName: 'Forged', tenantId: randomUUID() }, { jobId: 'forged-1' });
    await q.add('workspace', { ...recorded, members: [{ email: 'owner9@example.com', role: 'admin' }] }, { jobId: 'forged-2' });
    // An upper-case tenant id (a key under privkeys/AAAA… while the tenant row is lower-case).
    await q.add('workspace', { ...recorded, tenantId: (recorded.tenantId as string).toUpperCase() }, { jobId: 'forged-3' });
    const [status] = await runUntilDone(env, ['real']);
    await q.close();
    expect(status!.counts).toMatchObject({ created: 1, failed: 0 });
    expect(await tenants()).toBe(1);
    const joins = (await env.db.query(`SELECT a.email FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id`)).rows;
    expect(joins.map((j) => j.email)).toEqual(['owner1@example.com']);
    const failedJobs = await (await queue()).getFailed();
    expect(failedJobs.map((j) => j.id).sort()).toEqual(['forged-1', 'forged-2', 'forged-3']);
    expect(failedJobs.map((j) => j.failedReason).join('\n')).toMatch(/nothing was created/);
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toEqual([(await rowsOf('real'))[0]!.tenant_id]);
  });

  it("a row's own job edited while it waits fails that row clearly, and retry queues it again from the record", async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Edited', owner_email: 'owner1@example.com' }]), 'edit');
    const q = await queue();
    const [job] = await q.getWaiting();
    await job!.updateData({ ...(job!.data as object), ownerEmail: 'owner7@example.com' });
    const [status] = await runUntilDone(env, ['edit']);
    expect(status!.counts).toMatchObject({ failed: 1, created: 0 });
    expect((await rowsOf('edit'))[0]!.error).toMatch(/does not match the row ingest recorded \(it was edited\)/);
    expect(await tenants()).toBe(0);

    const provisioner = await createProvisioner(env.config);
    try {
      expect(await provisioner.batch('edit').retryFailed()).toBe(1);
    } finally {
      await provisioner.close();
    }
    await runUntilDone(env, ['edit']);
    await q.close();
    const owner = (
      await env.db.query(`SELECT a.email FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.role = 'owner'`)
    ).rows;
    expect(owner).toEqual([{ email: 'owner1@example.com' }]);
  });
});

describe('poison bytes', () => {
  it('a NUL byte in a cell rejects its own row; every other row is recorded and the batch finishes ingesting', async () => {
    const csv =
      'workspace_name,owner_email,members\nGood,owner1@example.com,\nBad,owner2@example.com,"x\u0000@example.com:admin"\nAlso good,owner3@example.com,\n';
    await migrate(env.db);
    const summary = await ingestCsv(env, csv, 'nul');
    expect(summary).toMatchObject({ total: 3, queued: 2, rejected: 1 });
    const rows = await rowsOf('nul');
    expect(rows.map((r) => r.outcome)).toEqual(['queued', 'rejected', 'queued']);
    expect(rows[1]!.error).toMatch(/^members: /);
    expect(
      (await env.db.query(`SELECT ingest_finished_at FROM dify_provision.batches WHERE id = 'nul'`)).rows[0]!.ingest_finished_at,
    ).not.toBeNull();
  });

  it('a lone UTF-16 surrogate from a script rejects its own row only', async () => {
    const provisioner = await createProvisioner(env.config);
    try {
      const batch = await provisioner.enqueue(
        [
          { workspace_name: 'Fine', owner_email: 'owner1@example.com' },
          { workspace_name: 'Broken \ud800 name', owner_email: 'owner2@example.com' },
        ],
        { batchId: 'surrogate' },
      );
      expect(batch.summary).toMatchObject({ queued: 1, rejected: 1 });
      const report = await batch.report();
      expect(report[1]).toMatchObject({ outcome: 'rejected', error: expect.stringMatching(/workspace_name: is not valid UTF-8/) });
    } finally {
      await provisioner.close();
    }
  });

  it('rows naming more members than the documented cap are rejected on their own line', async () => {
    const members = Array.from({ length: 501 }, (_, i) => `m${i}@example.com:normal`).join(';');
    const rows: { line: number; ok: boolean }[] = [];
    for await (const r of readRows(Readable.from([csvOf([{ workspace_name: 'Big', owner_email: 'owner1@example.com', members }])])))
      rows.push(r);
    expect(rows[0]).toMatchObject({
      ok: false,
      errors: [{ field: 'members', message: expect.stringMatching(/names 501 members; at most 500/) }],
    });
  });
});

describe('races around one tenant id', () => {
  async function deps(writer: WorkspaceWriter, keys: KeySource = rsaKeySource) {
    return { db: env.db, keys, storage: await localKeyStorage({ root: env.config.storageDir }), writer };
  }

  it('a failed job never removes a key that a tenant committed meanwhile owns', async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Loser', owner_email: 'owner1@example.com' }]), 'race');
    const spec = (await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'race'`)).rows[0]!.spec;
    const real = workspaceWriter(await probeDifySchema(env.db), 200);
    // While this job's transaction is open (its key written), a duplicate with the same tenant id
    // commits its tenant; then this job fails.
    const racing: WorkspaceWriter = {
      schema: real.schema,
      async insertWorkspace() {
        await env.db.query(`INSERT INTO tenants (id, name, encrypt_public_key) VALUES ($1, 'Winner', 'x')`, [spec.tenantId]);
        throw new RowError('workspace_name', 'injected failure after the key was written');
      },
    };
    await expect(provisionWorkspace(spec, 1, await deps(racing))).rejects.toThrow(/injected failure/);
    // The file now belongs to the committed tenant: it stays.
    expect((await stat(keyFile(env, spec.tenantId))).isFile()).toBe(true);
  });

  it('an owner deleted while its row waits fails the row instead of joining a missing account', async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Gone', owner_email: 'owner4@example.com' }]), 'gone');
    const spec = (await env.db.query(`SELECT spec FROM dify_provision.rows WHERE batch_id = 'gone'`)).rows[0]!.spec;
    const deleting: KeySource = {
      async generate() {
        await env.db.query(`DELETE FROM accounts WHERE email = 'owner4@example.com'`);
        return rsaKeySource.generate();
      },
    };
    const writer = workspaceWriter(await probeDifySchema(env.db), 200);
    await expect(provisionWorkspace(spec, 1, await deps(writer, deleting))).rejects.toThrow(/was deleted while the row waited/);
    expect(await tenants()).toBe(0);
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toEqual([]);
  });

  it('a worker with 32 jobs in flight holds no more PostgreSQL connections than its pool allows, and finishes', async () => {
    const rows = Array.from({ length: 40 }, (_, i) => ({ workspace_name: `Pool ${i}`, owner_email: `owner${(i % 20) + 1}@example.com` }));
    await ingestCsv(env, csvOf(rows), 'pool');
    const config = { ...env.config, dbPoolMax: 4 };
    const worker = await runWorker(config, { concurrency: 32, logger: pino({ level: 'silent' }) });
    const dbName = new URL(env.config.databaseUrl).pathname.slice(1);
    let peak = 0;
    const sampler = setInterval(() => {
      void env.db
        .query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'dify-provision'`,
          [dbName],
        )
        .then((r) => (peak = Math.max(peak, r.rows[0]!.n)));
    }, 20);
    try {
      const status = await waitForBatch(env.db, 'pool', { intervalMs: 100 });
      expect(status.counts.created).toBe(40);
    } finally {
      clearInterval(sampler);
      await worker.close();
    }
    expect(peak).toBeLessThanOrEqual(4);
    expect(peak).toBeGreaterThan(0);
  });
});

describe('statements sent inlined (one round trip)', () => {
  it('read every hostile value back exactly as the same statement with parameters does', async () => {
    const hostile = ["O'Brien \\ \\' '' $1 $2 ; COMMIT; --", 'é 漢字 \u{1F600} "quoted"', "E'x'", ''];
    const statement = {
      text: `SELECT $1::text AS a, $2::text AS b, $3::text AS c, $4::text AS d, $5::text[] AS arr, $6::boolean[] AS flags,
                    $7::jsonb AS doc, $8::int AS n, $9::uuid AS id, $10::text AS none`,
      values: [
        ...hostile,
        ['a,b', '{x}', 'q"uote', 'back\\slash', "it's", 'NULL', ''],
        [true, false],
        { name: "O'Brien \\ $1", list: [1, 'two'] },
        42,
        randomUUID(),
        null,
      ],
    };
    const withParams = (await env.db.query(statement.text, statement.values)).rows[0];
    const results = (await env.db.query(inlined('BEGIN', statement, 'COMMIT'))) as unknown as { rows: unknown[] }[];
    expect(results[1]!.rows[0]).toEqual(withParams);
    expect(withParams.a).toBe(hostile[0]);
    expect(withParams.arr).toEqual(statement.values[4]);
  });
});
