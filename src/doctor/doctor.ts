// `dify-provision doctor`: checks Dify's tenants, the key files under privkeys/ and our ledger
// against each other. --fix removes orphan keys (only the files we write, never recursively) and
// repairs modes; it never touches the key of a tenant that exists.
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Db } from '../db/pool.js';
import { removeUnlessTenantExists } from '../store/locks.js';
import { ledgerWithoutTenant } from '../store/ledger.js';
import { PreflightError } from '../common/errors.js';
import { isStrictUuid } from '../common/types.js';
import { probeDifySchema, type DifySchema } from '../dify/schema-probe.js';
import type { KeyStorage } from '../storage/key-storage.js';
import {
  FolderRefused,
  KEY_FILE,
  LeftAlone,
  changedMs,
  entriesOf,
  inside,
  lstatInside,
  newestChangeOf,
  openChild,
  openFolder,
  readKeyText,
  removeOurNames,
  type Folder,
} from '../storage/key-folders.js';

export type FindingKind =
  | 'missing-key'
  | 'key-mismatch'
  | 'unreadable-key'
  | 'linked-key-folder'
  | 'orphan-key'
  | 'bad-mode'
  | 'ledger-without-tenant'
  | 'missing-dify-rows';

export interface Finding {
  kind: FindingKind;
  tenantId: string;
  detail: string;
  /** What --fix does about it, or why it doesn't. */
  fix: string;
  fixed?: boolean;
}

export interface DoctorOptions {
  /** A local storage root (Dify's storage folder): links and modes are checked too. */
  storageDir?: string;
  /** Or any key storage (object stores): keys listed, read and removed through it. */
  storage?: KeyStorage;
  /** The Dify release band: which rows every workspace must have (probed when not given). */
  schema?: DifySchema;
  fix?: boolean;
  /** Key folders younger than this are left alone (a tenant may be mid-creation). Default 600 s. */
  minOrphanAgeSeconds?: number;
}

const spkiOf = (pem: string) => createPublicKey(pem).export({ type: 'spki', format: 'der' });

export async function runDoctor(db: Db, opts: DoctorOptions): Promise<Finding[]> {
  const findings: Finding[] = opts.storageDir
    ? await localFindings(db, opts.storageDir, opts)
    : await storeFindings(db, opts.storage!, opts);
  findings.push(...(await missingDifyRows(db, opts.schema ?? (await probeDifySchema(db)))));
  for (const l of await ledgerWithoutTenant(db)) {
    findings.push({
      kind: 'ledger-without-tenant',
      tenantId: l.tenant_id,
      detail: `the ledger says ${l.idempotency_key} made this tenant, which no longer exists`,
      fix: 'none: if the workspace was deleted on purpose, delete its ledger row so that a new ingest may create it again',
    });
  }
  return findings;
}

const missingKey = (tenantId: string, where: string): Finding => ({
  kind: 'missing-key',
  tenantId,
  detail: `no ${where}`,
  fix: "none: Dify can't decrypt this workspace's credentials; restore the key from a backup, or reset its key pair with Dify's own `flask reset-encrypt-key-pair` (which drops saved credentials)",
});

const tenantsOf = async (db: Db) =>
  (await db.query<{ id: string; encrypt_public_key: string | null }>(`SELECT id, encrypt_public_key FROM tenants`)).rows;

/** Keys in an object store: listed, read and removed through the backend. */
async function storeFindings(db: Db, storage: KeyStorage, opts: DoctorOptions): Promise<Finding[]> {
  const findings: Finding[] = [];
  const stored = await storage.list();
  const keyed = new Set(stored.filter((s) => s.name === 'private.pem').map((s) => s.tenantId));
  const tenants = await tenantsOf(db);
  const tenantIds = new Set(tenants.map((t) => t.id));
  for (const t of tenants) {
    const where = `${storage.description}: privkeys/${t.id}/private.pem`;
    if (!keyed.has(t.id)) findings.push(missingKey(t.id, where));
    else await checkKey(t.id, t.encrypt_public_key, where, async () => (await storage.read(t.id)) ?? '', findings);
  }
  const orphans = new Map<string, Date>();
  for (const s of stored) {
    // Dify names a tenant's folder by its id: anything else is not ours to judge or remove.
    if (tenantIds.has(s.tenantId) || !isStrictUuid(s.tenantId)) continue;
    const newest = orphans.get(s.tenantId);
    if (!newest || s.modified > newest) orphans.set(s.tenantId, s.modified);
  }
  for (const [id, modified] of orphans) {
    if ((Date.now() - modified.getTime()) / 1000 < (opts.minOrphanAgeSeconds ?? 600)) continue;
    const finding: Finding = {
      kind: 'orphan-key',
      tenantId: id,
      detail: `${storage.description}: privkeys/${id}/ belongs to no tenant`,
      fix: 'remove its objects',
    };
    if (opts.fix) finding.fixed = await removeUnlessTenantExists(db, id, () => storage.removeTenant(id));
    findings.push(finding);
  }
  return findings;
}

/**
 * A local storage root, which Dify's user can write while doctor runs as root: privkeys/ is opened
 * once without following links and every step goes through that handle and each tenant folder's
 * own handle (key-folders.ts); links are findings, never paths to read or fix; --fix removes only
 * the names dify-provision writes, and an orphan's age is its newest change (ctime included), which
 * the storage's user can make younger but never older.
 */
async function localFindings(db: Db, storageDir: string, opts: DoctorOptions): Promise<Finding[]> {
  const privkeysPath = join(storageDir, 'privkeys');
  const privkeys = await openFolder(privkeysPath).catch((err: unknown) => {
    if (err instanceof FolderRefused && err.reason === 'absent') return undefined;
    if (err instanceof FolderRefused && (err.reason === 'link' || err.reason === 'not-folder'))
      throw new PreflightError(`${privkeysPath} is not a plain folder (${err.detail}): doctor does not follow it`);
    throw err;
  });
  try {
    return await folderFindings(db, privkeys, opts);
  } finally {
    await privkeys?.fh.close();
  }
}

async function folderFindings(db: Db, privkeys: Folder | undefined, opts: DoctorOptions): Promise<Finding[]> {
  const findings: Finding[] = [];
  const entries = privkeys ? await entriesOf(privkeys) : [];
  const uuids = entries.filter((e) => isStrictUuid(e.name));
  const present = new Set(uuids.map((e) => e.name));
  const links = new Set(uuids.filter((e) => e.isSymbolicLink()).map((e) => e.name));
  const tenants = await tenantsOf(db);
  const tenantIds = new Set(tenants.map((t) => t.id));
  const shown = (id: string, name?: string) => join(privkeys?.path ?? '', id, ...(name ? [name] : []));

  for (const t of tenants) {
    if (!privkeys || !present.has(t.id)) {
      findings.push(missingKey(t.id, shown(t.id, KEY_FILE)));
      continue;
    }
    if (links.has(t.id)) {
      findings.push({
        kind: 'linked-key-folder',
        tenantId: t.id,
        detail: `${shown(t.id)} is a symbolic link, not a folder: whoever made it can point Dify at any key`,
        fix: 'none automatically: remove the link and restore the folder from a backup',
      });
      continue;
    }
    const folder = await openChild(privkeys, t.id).catch((err: unknown) => err as Error);
    if (folder instanceof Error) {
      findings.push({ kind: 'unreadable-key', tenantId: t.id, detail: folder.message, fix: 'none: check the folder by hand' });
      continue;
    }
    try {
      await checkKey(t.id, t.encrypt_public_key, shown(t.id, KEY_FILE), () => readKeyText(folder), findings);
      await checkModes(t.id, privkeys, folder, findings, opts.fix ?? false);
    } finally {
      await folder.fh.close();
    }
  }
  for (const id of present) {
    if (tenantIds.has(id)) continue;
    const age = (Date.now() - (await newestChange(privkeys!, id))) / 1000;
    if (age < (opts.minOrphanAgeSeconds ?? 600)) continue;
    const what = links.has(id)
      ? 'link (removed itself, never its target)'
      : 'folder (only the files dify-provision writes; anything else is left)';
    const finding: Finding = { kind: 'orphan-key', tenantId: id, detail: `${shown(id)} belongs to no tenant`, fix: `remove the ${what}` };
    if (opts.fix) {
      finding.fixed = await removeUnlessTenantExists(db, id, () => removeOurNames(privkeys!, id)).catch((err: unknown) => {
        if (!(err instanceof LeftAlone)) throw err;
        finding.detail += `; ${err.message}`;
        return false;
      });
    }
    findings.push(finding);
  }
  return findings;
}

/** The newest change under privkeys/<id>, ctime included: the storage's user cannot backdate it (touch moves ctime to now). */
async function newestChange(privkeys: Folder, id: string): Promise<number> {
  const st = await lstatInside(privkeys, id);
  if (!st) return Date.now();
  if (!st.isDirectory()) return changedMs(st);
  const folder = await openChild(privkeys, id).catch(() => undefined);
  if (!folder) return Date.now();
  try {
    return await newestChangeOf(folder, await entriesOf(folder));
  } finally {
    await folder.fh.close();
  }
}

async function checkKey(
  tenantId: string,
  publicPem: string | null,
  file: string,
  read: () => Promise<string>,
  findings: Finding[],
): Promise<void> {
  try {
    const text = await read();
    const privateKey = createPrivateKey(text);
    const derived = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
    if (!publicPem || !derived.equals(spkiOf(publicPem))) {
      findings.push({
        kind: 'key-mismatch',
        tenantId,
        detail: `${file} does not match tenants.encrypt_public_key`,
        fix: 'none: never replaced automatically; restore the right file from a backup',
      });
    }
  } catch (err) {
    findings.push({
      kind: 'unreadable-key',
      tenantId,
      detail: `${file} cannot be read as an RSA private key (${(err as Error).message})`,
      fix: 'none: restore the file from a backup',
    });
  }
}

/**
 * Modes of a tenant's folder and key, checked and fixed on the opened handles; a file with other
 * hard links or of another owner than its folder is never changed, nor anything under the key's
 * name that is not a regular file (a FIFO, opened without blocking, or a folder: checkKey reports it).
 */
async function checkModes(tenantId: string, privkeys: Folder, folder: Folder, findings: Finding[], fix: boolean): Promise<void> {
  const opened = await open(inside(folder, KEY_FILE), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(
    () => undefined,
  );
  const file =
    opened &&
    (await opened.stat().then(
      (st) => st.isFile(),
      () => false,
    ))
      ? opened
      : undefined;
  if (opened && !file) await opened.close();
  try {
    const targets = [
      { path: join(privkeys.path, tenantId), fh: folder.fh, want: 0o700 },
      ...(file ? [{ path: join(privkeys.path, tenantId, KEY_FILE), fh: file, want: 0o600 }] : []),
    ];
    for (const { path, fh, want } of targets) {
      const st = await fh.stat();
      const mode = st.mode & 0o777;
      if (mode === want) continue;
      const finding: Finding = {
        kind: 'bad-mode',
        tenantId,
        detail: `${path} has mode ${mode.toString(8)}, not ${want.toString(8)}`,
        fix: `chmod ${want.toString(8)}`,
      };
      if (st.isFile() && st.nlink > 1) {
        finding.fix = `none: the file has ${st.nlink} hard links, so it may be another file: check it by hand`;
      } else if (st.isFile() && st.uid !== folder.uid) {
        // The storage's user can move any file of another owner that sits in a folder it can
        // write (anywhere in Dify's storage) to this name: it is that owner's file, not a key of ours.
        finding.fix = `none: the file is owned by uid ${st.uid}, not by its folder's owner (uid ${folder.uid}), so it may be another file: check it by hand`;
      } else if (fix) {
        await fh.chmod(want); // on the opened file or folder, never through a name that changed meanwhile
        finding.fixed = true;
      }
      findings.push(finding);
    }
  } finally {
    await file?.close();
  }
}

/** Rows this Dify's create_tenant writes for every workspace, missing from some workspace. */
async function missingDifyRows(db: Db, schema: DifySchema): Promise<Finding[]> {
  const wantStrategies = schema.strategies === 'per-category' ? 6 : schema.strategies === 'one' ? 1 : 0;
  if (wantStrategies === 0 && !schema.creditPool) return [];
  const { rows } = await db.query<{ id: string; strategies: number; pools: number }>(
    `SELECT t.id,
            ${wantStrategies > 0 ? '(SELECT count(*)::int FROM tenant_plugin_auto_upgrade_strategies s WHERE s.tenant_id = t.id)' : '0'} AS strategies,
            ${schema.creditPool ? "(SELECT count(*)::int FROM tenant_credit_pools p WHERE p.tenant_id = t.id AND p.pool_type = 'trial')" : '1'} AS pools
       FROM tenants t`,
  );
  const fix = "none automatically: Dify's own `flask backfill-plugin-auto-upgrade` (strategies) or a trial pool row written by hand";
  return rows.flatMap((r) => {
    const gaps = [
      ...(r.strategies < wantStrategies ? [`${r.strategies} of ${wantStrategies} plugin auto-upgrade strategy row(s)`] : []),
      ...(r.pools < 1 ? ['no trial credit pool'] : []),
    ];
    return gaps.length === 0
      ? []
      : [{ kind: 'missing-dify-rows' as const, tenantId: r.id, detail: `has ${gaps.join(' and ')} (${schema.releases} writes them)`, fix }];
  });
}
