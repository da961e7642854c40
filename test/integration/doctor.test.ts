import { execFileSync, spawnSync } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { chmod, link, lstat, mkdir, open, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runDoctor, type Finding } from '../../src/doctor/doctor.js';
import { rsaKeySource } from '../../src/crypto/rsa-keys.js';
import { csvOf, ingestCsv, runUntilDone, waitUntilDone } from '../helpers/batch.js';
import { keyFile, keyPairWorks } from '../helpers/dify-checks.js';
import { runCli, startCli, type Background, type Ran } from '../helpers/cli.js';
import { until } from '../helpers/cli-world.js';
import { type TestEnv } from '../helpers/test-env.js';
import { storageOwnedByDifyUser, STORAGE_UID } from '../helpers/storage-user.js';
import { freshEnvEachTest } from '../helpers/world.js';

let env: TestEnv;
freshEnvEachTest((e) => (env = e));

const kinds = (f: { kind: string; tenantId: string }[]) => f.map((x) => `${x.kind} ${x.tenantId}`).sort();

describe('doctor', () => {
  it('finds nothing after a clean batch, and each kind of damage after it; --fix repairs only what is safe', async () => {
    await ingestCsv(
      env,
      csvOf(Array.from({ length: 5 }, (_, i) => ({ workspace_name: `Doc ${i}`, owner_email: `owner${i + 1}@example.com` }))),
      'doc',
    );
    await runUntilDone(env, ['doc']);
    const opts = { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0 };
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
    // Age comes from the newest change, ctime included, which nobody can set back: a backdated
    // mtime (what `touch -d` does) leaves the folder young, and --min-age 0 makes every orphan old.
    const past = new Date(Date.now() - 3600_000);
    await utimes(join(env.config.storageDir, 'privkeys', young), past, past);
    const youngOnes = await runDoctor(env.db, { ...opts, fix: true, minOrphanAgeSeconds: 3600 });
    expect(kinds(youngOnes.filter((f) => f.kind === 'orphan-key'))).toEqual([]);
    await chmod(keyFile(env, loose), 0o644);
    expect(await readdir(join(env.config.storageDir, 'privkeys'))).toEqual(expect.arrayContaining([young, old, dropped]));

    const before = await runDoctor(env.db, opts);
    expect(kinds(before)).toEqual(
      [
        `missing-key ${missing}`,
        `key-mismatch ${mismatched}`,
        `bad-mode ${loose}`,
        `orphan-key ${young}`,
        `orphan-key ${old}`,
        `orphan-key ${dropped}`,
        `ledger-without-tenant ${dropped}`,
      ].sort(),
    );
    const cli = await runCli(['doctor', '--min-age', '0'], env.env);
    expect(cli.code).toBe(1);
    expect(cli.stdout).toContain(`key-mismatch           tenant ${mismatched}`);

    const fixed = await runDoctor(env.db, { ...opts, fix: true });
    expect(kinds(fixed.filter((f) => f.fixed))).toEqual(
      [`bad-mode ${loose}`, `orphan-key ${dropped}`, `orphan-key ${old}`, `orphan-key ${young}`].sort(),
    );
    const left = await runDoctor(env.db, opts);
    expect(kinds(left)).toEqual([`missing-key ${missing}`, `key-mismatch ${mismatched}`, `ledger-without-tenant ${dropped}`].sort());
    const folders = await readdir(join(env.config.storageDir, 'privkeys'));
    expect(folders).toContain(mismatched); // never removes the key of a tenant that exists
    expect(folders).not.toContain(old);
  });
});

/** Three created tenants, by id order. */
async function threeTenants(): Promise<string[]> {
  await ingestCsv(
    env,
    csvOf(Array.from({ length: 3 }, (_, i) => ({ workspace_name: `Odd ${i}`, owner_email: `owner${i + 1}@example.com` }))),
    'odd',
  );
  await runUntilDone(env, ['odd']);
  return (await env.db.query<{ id: string }>(`SELECT id FROM tenants ORDER BY id`)).rows.map((r) => r.id);
}

const findingsOf = (ran: Ran): Finding[] => {
  expect(ran.stdout, `doctor printed no JSON: ${ran.stderr}`).toMatch(/^\{/);
  return (JSON.parse(ran.stdout) as { findings: Finding[] }).findings;
};

describe('doctor on key names that are not key files', () => {
  it('reports a FIFO and a sparse 1.9 GB file named private.pem without reading them, and finishes', async () => {
    const [fifoId, sparseId] = (await threeTenants()) as [string, string];
    await rm(keyFile(env, fifoId));
    execFileSync('mkfifo', ['-m', '0644', keyFile(env, fifoId)]);
    await rm(keyFile(env, sparseId));
    execFileSync('truncate', ['-s', '1900M', keyFile(env, sparseId)]);
    await chmod(keyFile(env, sparseId), 0o600);
    expect((await stat(keyFile(env, sparseId))).blocks).toBe(0); // really sparse: nothing on disk

    const doctor = startCli(['doctor', '--fix', '--json', '--min-age', '0'], env.env);
    let exited = false;
    void doctor.exited.then(() => (exited = true));
    // A doctor blocked opening or reading the FIFO waits for a writer forever: this test is that
    // writer (it opens the FIFO and closes it at once, so a blocked read sees its end), so a
    // doctor that reads the FIFO finishes too and fails below on what it says, not on a hang.
    await until(async () => {
      const writer = await open(keyFile(env, fifoId), constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined);
      await writer?.close();
      return exited;
    }, 'doctor to finish');
    const findings = findingsOf({ code: await doctor.exited, stdout: doctor.output(), stderr: '' });
    const about = (id: string) => findings.filter((f) => f.tenantId === id).map((f) => `${f.kind}: ${f.detail}`);
    expect(about(fifoId)).toEqual([
      expect.stringMatching(/^unreadable-key: .*private\.pem .*\(it is a FIFO, not a regular file: not read\)$/),
    ]);
    expect(about(sparseId)).toEqual([
      expect.stringMatching(/^unreadable-key: .*\(it is 1992294400 bytes, more than a key file can be \(65536\): not read\)$/),
    ]);
    // --fix changed neither (the FIFO's mode is no key file's mode to repair).
    const fifo = await lstat(keyFile(env, fifoId));
    expect({ fifo: fifo.isFIFO(), mode: fifo.mode & 0o777 }).toEqual({ fifo: true, mode: 0o644 });
    expect((await stat(keyFile(env, sparseId))).size).toBe(1900 * 1024 * 1024);
  });
});

describe('doctor --fix leaves what is not its own', () => {
  it('keeps an orphan folder holding a plain foreign file, with the file, and names it', async () => {
    await threeTenants();
    const [withNotes, plain] = ['11111111-2222-4333-8444-555555555555', '66666666-7777-4888-8999-aaaaaaaaaaaa'];
    for (const id of [withNotes, plain]) {
      await mkdir(join(env.config.storageDir, 'privkeys', id));
      await writeFile(join(env.config.storageDir, 'privkeys', id, 'private.pem'), 'orphan');
    }
    await writeFile(join(env.config.storageDir, 'privkeys', withNotes, 'notes.txt'), 'mine, not doctor’s');

    const findings = findingsOf(await runCli(['doctor', '--fix', '--json', '--min-age', '0'], env.env));
    expect(findings.find((f) => f.tenantId === plain)).toMatchObject({ kind: 'orphan-key', fixed: true }); // --fix did run
    expect(findings.find((f) => f.tenantId === withNotes)).toMatchObject({
      kind: 'orphan-key',
      fixed: false,
      detail: expect.stringMatching(/holds "notes\.txt", which dify-provision did not write: left alone/),
    });
    expect(await readFile(join(env.config.storageDir, 'privkeys', withNotes, 'notes.txt'), 'utf8')).toBe('mine, not doctor’s');
    expect(existsSync(join(env.config.storageDir, 'privkeys', plain))).toBe(false);
  });

  it('never changes the mode of a key file that has a second hard link (the other name is another file to someone)', async () => {
    const [linked, loose] = (await threeTenants()) as [string, string];
    const other = join(env.dir, 'someone-elses.pem');
    await link(keyFile(env, linked), other);
    await chmod(other, 0o644); // one inode: both names are 0644 now
    await chmod(keyFile(env, loose), 0o644);

    const findings = findingsOf(await runCli(['doctor', '--fix', '--json', '--min-age', '0'], env.env));
    expect(findings.find((f) => f.tenantId === loose)).toMatchObject({ kind: 'bad-mode', fixed: true }); // --fix did repair modes
    expect(findings.find((f) => f.tenantId === linked)).toMatchObject({
      kind: 'bad-mode',
      fix: expect.stringMatching(/^none: the file has 2 hard links/),
    });
    expect(findings.find((f) => f.tenantId === linked)?.fixed).toBeUndefined();
    expect({
      key: (await stat(keyFile(env, linked))).mode & 0o777,
      other: (await stat(other)).mode & 0o777,
      links: (await stat(other)).nlink,
    }).toEqual({
      key: 0o644,
      other: 0o644,
      links: 2,
    });
    expect((await stat(keyFile(env, loose))).mode & 0o777).toBe(0o600);
  });
});

describe('doctor --fix and a file the storage user moved in', () => {
  it("never changes the mode of another owner's file that uid 1001 moved to a key's name", async () => {
    await storageOwnedByDifyUser(env);
    const [moved, loose] = (await threeTenants()) as [string, string];
    expect((await stat(keyFile(env, moved))).uid).toBe(STORAGE_UID); // keys are the storage user's
    // A file of root's in a folder the storage user can write (its storage root): it can rename
    // it, though it cannot read it, to a key's name.
    const foreign = join(env.config.storageDir, 'root-file');
    await writeFile(foreign, 'root-owned, not a key');
    await chmod(foreign, 0o644);
    const mv = spawnSync(
      'setpriv',
      [`--reuid=${STORAGE_UID}`, `--regid=${STORAGE_UID}`, '--clear-groups', '--', 'mv', '-f', foreign, keyFile(env, moved)],
      { encoding: 'utf8' },
    );
    expect(mv.status, mv.stderr).toBe(0);
    await chmod(keyFile(env, loose), 0o644); // the storage user's own key, loose: --fix repairs it

    const findings = findingsOf(await runCli(['doctor', '--fix', '--json', '--min-age', '0'], env.env));
    expect(findings.find((f) => f.tenantId === loose)).toMatchObject({ kind: 'bad-mode', fixed: true });
    expect(findings.find((f) => f.tenantId === moved && f.kind === 'bad-mode')).toMatchObject({
      fix: expect.stringMatching(/^none: the file is owned by uid 0, not by its folder's owner \(uid 1001\)/),
    });
    expect(findings.find((f) => f.tenantId === moved && f.kind === 'bad-mode')?.fixed).toBeUndefined();
    const st = await stat(keyFile(env, moved));
    expect({ uid: st.uid, mode: st.mode & 0o777 }).toEqual({ uid: 0, mode: 0o644 });
    expect((await stat(keyFile(env, loose))).mode & 0o777).toBe(0o600);
  });
});

describe('doctor --fix racing a real worker', () => {
  it('cannot remove a key a worker wrote before its tenant commits; the tenant then commits with its key', async () => {
    await ingestCsv(env, csvOf([{ workspace_name: 'Raced', owner_email: 'owner1@example.com' }]), 'race');
    const { rows } = await env.db.query<{ tenant_id: string }>(`SELECT tenant_id FROM dify_provision.rows WHERE batch_id = 'race'`);
    const id = rows[0]!.tenant_id;
    // Waits on PostgreSQL's own view of who waits for what (no sleeps).
    const waiting = async (event: string, query: string) =>
      (
        await env.db.query(
          `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = $1 AND query ILIKE $2`,
          [event, query],
        )
      ).rows.length > 0;
    // The worker is held between writing the key and committing: this test holds a SHARE lock
    // on tenants, so the worker's INSERT of the tenant (in create_workspace_v1) waits, after its key is written.
    const holder = await env.db.connect();
    let holding = true;
    const release = async () => {
      if (!holding) return;
      holding = false;
      await holder.query('COMMIT');
    };
    let worker: Background | undefined;
    let doctor: Promise<Ran> | undefined;
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE tenants IN SHARE MODE');
      worker = startCli(['worker', '--concurrency', '1'], env.env);
      await until(
        async () => (await waiting('relation', '%create_workspace_v1%')) && existsSync(keyFile(env, id)),
        'the worker to wait with its key written',
      );

      // doctor --fix sees a key folder with no tenant: an orphan (--min-age 0), unless the worker holds the tenant's lock.
      doctor = runCli(['doctor', '--fix', '--json', '--min-age', '0'], env.env);
      let settled = false;
      doctor.then(
        () => (settled = true),
        () => (settled = true),
      );
      await until(async () => settled || (await waiting('advisory', '%')), "doctor to wait for the tenant's lock (or finish)");
      expect(settled, "doctor --fix finished while the worker's tenant was not committed: it did not wait for the tenant's lock").toBe(
        false,
      );
      await release();

      const [status] = await waitUntilDone(env, ['race']);
      expect(status!.counts.created).toBe(1);
      const ran = await doctor;
      expect(ran.stdout, `doctor printed no JSON: ${ran.stderr}`).toMatch(/^\{/);
      const finding = (JSON.parse(ran.stdout) as { findings: Finding[] }).findings.find((f) => f.tenantId === id);
      expect(finding?.fixed ?? false, `doctor: ${ran.stdout}${ran.stderr}`).toBe(false);
      expect(existsSync(keyFile(env, id)), 'the committed tenant lost its key').toBe(true);
      expect(await keyPairWorks(env, id)).toBe(true);
    } finally {
      await release().catch(() => {});
      holder.release();
      await doctor?.catch(() => undefined);
      await worker?.stop();
    }
  });
});
