import { chmod, mkdir, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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
