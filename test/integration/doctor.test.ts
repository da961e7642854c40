import { chmod, mkdir, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { localKeyStorage } from '../../src/storage/local.js';
import { lockTenant } from '../../src/store/locks.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/doctor/doctor.js';
import { rsaKeySource } from '../../src/crypto/rsa-keys.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { keyFile } from '../helpers/dify-checks.js';
import { runCli } from '../helpers/cli.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

let env: TestEnv;
beforeEach(async () => {
  env = await createTestEnv();
});
afterEach(async () => {
  await env.cleanup();
});

const kinds = (f: { kind: string; tenantId: string }[]) => f.map((x) => `${x.kind} ${x.tenantId}`).sort();

describe('doctor', () => {
  it('finds nothing after a clean batch, and each kind of damage after it; --fix repairs only what is safe', async () => {
    await ingestCsv(
      env,
      csvOf(Array.from({ length: 5 }, (_, i) => ({ workspace_name: `Doc ${i}`, owner_email: `owner${i + 1}@example.com` }))),
      'doc',
    );
    await runUntilDone(env, ['doc']);
    const opts = { storageDir: env.config.storageDir, minOrphanAgeSeconds: 60 };
    expect(await runDoctor(env.db, opts)).toEqual([]);
    expect((await runCli(['doctor'], env.env)).code).toBe(0);

    const ids = (await env.db.query<{ id: string }>(`SELECT id FROM tenants ORDER BY id`)).rows.map((r) => r.id);
    const [missing, mismatched, loose, dropped] = ids as [string, string, string, string];
    await rm(join(env.config.storageDir, 'privkeys', missing), { recursive: true });
    await writeFile(keyFile(env, mismatched), (await rsaKeySource.generate()).privatePem);
    await chmod(keyFile(env, loose), 0o644);
    await env.db.query(`DELETE FROM tenants WHERE id = $1`, [dropped]); // its key folder is now an orphan, its ledger row dangles
    const young = '11111111-2222-4333-8444-555555555555';
    const old = '66666666-7777-4888-8999-aaaaaaaaaaaa';
    for (const id of [young, old]) {
      await mkdir(join(env.config.storageDir, 'privkeys', id));
      await writeFile(join(env.config.storageDir, 'privkeys', id, 'private.pem'), 'x');
    }
    const past = new Date(Date.now() - 3600_000);
    await utimes(join(env.config.storageDir, 'privkeys', old), past, past);
    await utimes(join(env.config.storageDir, 'privkeys', dropped), past, past);

    const before = await runDoctor(env.db, opts);
    expect(kinds(before)).toEqual(
      [
        `missing-key ${missing}`,
        `key-mismatch ${mismatched}`,
        `bad-mode ${loose}`,
        `orphan-key ${old}`,
        `orphan-key ${dropped}`,
        `ledger-without-tenant ${dropped}`,
      ].sort(),
    );
    const cli = await runCli(['doctor', '--min-age', '60'], env.env);
    expect(cli.code).toBe(1);
    expect(cli.stdout).toContain(`key-mismatch           tenant ${mismatched}`);

    const fixed = await runDoctor(env.db, { ...opts, fix: true });
    expect(kinds(fixed.filter((f) => f.fixed))).toEqual([`bad-mode ${loose}`, `orphan-key ${dropped}`, `orphan-key ${old}`].sort());
    const left = await runDoctor(env.db, opts);
    expect(kinds(left)).toEqual([`missing-key ${missing}`, `key-mismatch ${mismatched}`, `ledger-without-tenant ${dropped}`].sort());
    const folders = await readdir(join(env.config.storageDir, 'privkeys'));
    expect(folders).toContain(mismatched); // never removes the key of a tenant that exists
    expect(folders).toContain(young); // too young to call an orphan
    expect(folders).not.toContain(old);
  });
});

describe('doctor --fix racing a worker', () => {
  it("waits for the tenant's lock a worker holds between writing a key and committing, and then leaves the committed key alone", async () => {
    const id = randomUUID();
    const pair = await rsaKeySource.generate();
    // What a worker does: take the tenant's lock, write the key, (later) commit the tenant.
    const worker = await env.db.connect();
    await worker.query('BEGIN');
    await lockTenant(worker, id);
    const storage = await localKeyStorage({ root: env.config.storageDir });
    await storage.deploy(id, pair.privatePem, pair.publicPem);
    // The key folder looks like an orphan (no tenant yet) and is old enough for --fix.
    const old = new Date(Date.now() - 3600_000);
    await utimes(join(env.config.storageDir, 'privkeys', id), old, old);

    const fixing = runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 60, fix: true });
    await new Promise((r) => setTimeout(r, 500));
    // doctor is waiting on the lock: the key is still there; now the worker commits its tenant.
    expect((await readdir(join(env.config.storageDir, 'privkeys'))).includes(id)).toBe(true);
    await worker.query(`INSERT INTO tenants (id, name, encrypt_public_key) VALUES ($1, 'Raced', $2)`, [id, pair.publicPem]);
    await worker.query('COMMIT');
    worker.release();

    const findings = await fixing;
    expect(findings.find((f) => f.tenantId === id)).toMatchObject({ kind: 'orphan-key', fixed: false });
    expect(await storage.read(id)).toBe(pair.privatePem);
    // The key is the committed tenant's now (this hand-made tenant has none of Dify's other rows).
    const after = await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 60 });
    expect(after.map((f) => f.kind)).toEqual(['missing-dify-rows']);
  });
});
