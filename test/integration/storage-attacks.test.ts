// Whoever can write Dify's storage (its user, uid 1001) attacks a root worker and a root doctor
// --fix while they work there: a real second account runs the attack loops, races are real.
// What must hold: nothing outside the tenant's own folder is ever removed, changed or followed;
// a tenant folder holding anything else is left alone and its row fails naming it.
import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/doctor/doctor.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { keyPairWorks } from '../helpers/dify-checks.js';
import { attackAsStorageUser, isRoot, storageOwnedByDifyUser, STORAGE_UID } from '../helpers/storage-user.js';
import { type TestEnv } from '../helpers/test-env.js';
import { freshEnvEachTest } from '../helpers/world.js';

let env: TestEnv;
freshEnvEachTest((e) => (env = e));

/** A folder only root may change, holding files and a UUID folder that looks like an orphan key. */
async function makeVictim(): Promise<{ path: string; intact(): Promise<void> }> {
  const path = join(env.dir, 'victim');
  const decoy = join(path, randomUUID());
  await mkdir(decoy, { recursive: true, mode: 0o755 });
  await writeFile(join(path, 'precious.txt'), 'keep me', { mode: 0o644 });
  await writeFile(join(decoy, 'private.pem'), 'not yours', { mode: 0o644 });
  return {
    path,
    async intact() {
      expect(await readFile(join(path, 'precious.txt'), 'utf8')).toBe('keep me');
      expect(await readFile(join(decoy, 'private.pem'), 'utf8')).toBe('not yours');
      expect({ mode: (await stat(join(decoy, 'private.pem'))).mode & 0o777, uid: (await stat(path)).uid }).toEqual({ mode: 0o644, uid: 0 });
    },
  };
}

const rowsOf = async (batch: string) =>
  (await env.db.query(`SELECT line, outcome, tenant_id, error FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`, [batch])).rows;
const privkeys = () => join(env.config.storageDir, 'privkeys');

describe.skipIf(!isRoot)('a root worker against the storage user', () => {
  it('cannot be made to fail a key write on purpose: the new folder is the worker’s until the key is proven', async () => {
    await storageOwnedByDifyUser(env);
    const victim = await makeVictim();
    await mkdir(privkeys());
    const { chown } = await import('node:fs/promises');
    await chown(privkeys(), STORAGE_UID, STORAGE_UID);
    const ids = Array.from({ length: 6 }, () => randomUUID());
    // The attack of the review: a folder named private.pem in the new tenant folder (the rename then
    // fails), and its sub-folder swapped for a link to the victim while the failure is cleaned up.
    const attacker = attackAsStorageUser(
      privkeys(),
      `for id in ${ids.join(' ')}; do [ -d $id ] && mkdir $id/private.pem $id/private.pem/sub && touch $id/private.pem/sub/x && ` +
        `mv $id/private.pem/sub $id/private.pem/sub.x && ln -s ${victim.path} $id/private.pem/sub && ` +
        `rm -f $id/private.pem/sub && mv $id/private.pem/sub.x $id/private.pem/sub; done`,
    );
    try {
      const rows = ids.map((id, i) => ({ workspace_name: `Raced ${i}`, owner_email: `owner${i + 1}@example.com`, workspace_id: id }));
      await ingestCsv(env, csvOf(rows), 'raced', { attempts: 3, backoffMs: 10 });
      const [status] = await runUntilDone(env, ['raced']);
      // Every folder was the worker's (0700, root) from mkdir until the key was proven: the attacker
      // could put nothing inside, so no write failed and nothing was cleaned up.
      expect((await rowsOf('raced')).map((r) => `${r.outcome} ${r.error ?? ''}`)).toEqual(ids.map(() => 'created '));
      expect(status!.counts.created).toBe(ids.length);
    } finally {
      await attacker.stop();
    }
    for (const id of ids) {
      expect(await keyPairWorks(env, id)).toBe(true);
      const st = await lstat(join(privkeys(), id, 'private.pem'));
      expect({ file: st.isFile(), uid: st.uid, mode: st.mode & 0o777 }).toEqual({ file: true, uid: STORAGE_UID, mode: 0o600 });
      expect((await stat(join(privkeys(), id))).uid).toBe(STORAGE_UID); // handed to Dify's user at the end
    }
    await victim.intact();
  });

  it('leaves a planted tenant folder exactly as it is, even while its contents are swapped for links, and fails the row naming it', async () => {
    await storageOwnedByDifyUser(env);
    const victim = await makeVictim();
    const id = randomUUID();
    await mkdir(join(privkeys(), id, 'private.pem', 'sub'), { recursive: true });
    await writeFile(join(privkeys(), id, 'private.pem', 'sub', 'x'), 'x');
    const { chown } = await import('node:fs/promises');
    for (const p of [privkeys(), join(privkeys(), id), join(privkeys(), id, 'private.pem'), join(privkeys(), id, 'private.pem', 'sub')])
      await chown(p, STORAGE_UID, STORAGE_UID);
    const attacker = attackAsStorageUser(
      join(privkeys(), id, 'private.pem'),
      `mv sub sub.x && ln -s ${victim.path} sub && rm -f sub && mv sub.x sub`,
    );
    try {
      await ingestCsv(env, csvOf([{ workspace_name: 'Planted', owner_email: 'owner1@example.com', workspace_id: id }]), 'planted', {
        attempts: 3,
        backoffMs: 10,
      });
      await runUntilDone(env, ['planted']);
    } finally {
      await attacker.stop();
    }
    expect((await rowsOf('planted'))[0]).toMatchObject({
      outcome: 'failed',
      error: expect.stringMatching(new RegExp(`privkeys/${id} holds "private.pem", which is not ours`)),
    });
    const folder = await stat(join(privkeys(), id));
    expect({ uid: folder.uid, dir: folder.isDirectory() }).toEqual({ uid: STORAGE_UID, dir: true }); // handed back, not taken
    expect(await readdir(join(privkeys(), id, 'private.pem'))).toEqual(expect.arrayContaining(['sub']));
    await victim.intact();
  });
});

describe.skipIf(!isRoot)('a root doctor --fix against the storage user', () => {
  it('removes only the files dify-provision writes, never follows a swapped privkeys/ or sub-folder, and never trusts a backdated mtime', async () => {
    await storageOwnedByDifyUser(env);
    const victim = await makeVictim();
    await mkdir(privkeys());
    const [plain, planted, linkedKey, backdated] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    await mkdir(join(privkeys(), plain));
    await writeFile(join(privkeys(), plain, 'private.pem'), 'orphan');
    await mkdir(join(privkeys(), planted, 'sub'), { recursive: true });
    await writeFile(join(privkeys(), planted, 'private.pem'), 'orphan');
    await writeFile(join(privkeys(), planted, 'sub', 'x'), 'x');
    await mkdir(join(privkeys(), linkedKey));
    await symlink(join(victim.path, 'precious.txt'), join(privkeys(), linkedKey, 'private.pem'));
    await mkdir(join(privkeys(), backdated));
    await writeFile(join(privkeys(), backdated, 'private.pem'), 'fresh');
    const { chown } = await import('node:fs/promises');
    for (const p of [
      privkeys(),
      ...[plain, planted, linkedKey, backdated].map((i) => join(privkeys(), i)),
      join(privkeys(), planted, 'sub'),
    ])
      await chown(p, STORAGE_UID, STORAGE_UID);
    const past = new Date(Date.now() - 24 * 3600_000);
    await utimes(join(privkeys(), backdated), past, past); // what `touch -d yesterday` does
    await utimes(join(privkeys(), backdated, 'private.pem'), past, past);

    // A backdated mtime does not make a fresh folder old: its ctime says when it really changed.
    const young = await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 3600, fix: true });
    expect(young.filter((f) => f.kind === 'orphan-key')).toEqual([]);
    expect(await readFile(join(privkeys(), backdated, 'private.pem'), 'utf8')).toBe('fresh');

    // While doctor --fix works: privkeys/ itself swapped for a link to the victim (which holds a
    // UUID folder that looks like an orphan key), and the planted sub-folder swapped likewise.
    const attacker = attackAsStorageUser(
      env.config.storageDir,
      `mv privkeys privkeys.x && ln -s ${victim.path} privkeys && rm -f privkeys && mv privkeys.x privkeys; ` +
        `mv privkeys/${planted}/sub privkeys/${planted}/sub.x && ln -s ${victim.path} privkeys/${planted}/sub && ` +
        `rm -f privkeys/${planted}/sub && mv privkeys/${planted}/sub.x privkeys/${planted}/sub`,
    );
    try {
      for (let round = 0; round < 25; round++) {
        await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0, fix: true }).catch((err: Error) => {
          expect(err.message).toMatch(/is not a plain folder|was replaced/); // privkeys/ caught as a link: doctor stops
        });
      }
    } finally {
      await attacker.stop();
    }
    await victim.intact();

    const fixed = await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0, fix: true });
    const byId = new Map(fixed.map((f) => [f.tenantId, f]));
    expect(byId.get(planted)).toMatchObject({ kind: 'orphan-key', fixed: false, detail: expect.stringMatching(/holds "sub".*left alone/) });
    // The plain orphan, the one whose key was a link (the link removed itself) and the backdated one are gone.
    expect((await readdir(privkeys())).sort()).toEqual([planted]);
    expect(await readdir(join(privkeys(), planted))).toEqual(['sub']); // our name removed, theirs left
    await victim.intact();
  });
});
