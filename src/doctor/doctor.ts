// `dify-provision doctor`: checks Dify's tenants, the key files under privkeys/ and our ledger
// against each other. --fix removes orphan key folders and repairs modes; it never touches the
// key of a tenant that exists.
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Db } from '../db/pool.js';
import { removeUnlessTenantExists } from '../store/locks.js';
import { ledgerWithoutTenant } from '../store/ledger.js';
import { PreflightError } from '../errors.js';
import { isStrictUuid } from '../types.js';
import { probeDifySchema, type DifySchema } from '../dify/schema-probe.js';
import type { KeyStorage } from '../storage/key-storage.js';

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

/** A local storage root: links are findings, never paths to read or fix; modes are checked. */
async function localFindings(db: Db, storageDir: string, opts: DoctorOptions): Promise<Finding[]> {
  const findings: Finding[] = [];
  const privkeys = join(storageDir, 'privkeys');
  // Nothing under the storage root is followed: links are findings, never paths to read or fix.
  const top = await lstat(privkeys).catch(() => undefined);
  if (top && !top.isDirectory())
    throw new PreflightError(`${privkeys} is not a plain folder (a symbolic link?): doctor does not follow it`);
  const entries = top ? await readdir(privkeys, { withFileTypes: true }) : [];
  const folders = new Set(entries.filter((e) => isStrictUuid(e.name)).map((e) => e.name));
  const links = new Set(entries.filter((e) => e.isSymbolicLink()).map((e) => e.name));
  const tenants = await tenantsOf(db);
  const tenantIds = new Set(tenants.map((t) => t.id));

  for (const t of tenants) {
    const file = join(privkeys, t.id, 'private.pem');
    if (!folders.has(t.id)) {
      findings.push(missingKey(t.id, file));
      continue;
    }
    if (links.has(t.id)) {
      findings.push({
        kind: 'linked-key-folder',
        tenantId: t.id,
        detail: `${join(privkeys, t.id)} is a symbolic link, not a folder: whoever made it can point Dify at any key`,
        fix: 'none automatically: remove the link and restore the folder from a backup',
      });
      continue;
    }
    await checkKey(t.id, t.encrypt_public_key, file, () => readNoFollow(file), findings);
    await checkModes(t.id, join(privkeys, t.id), file, findings, opts.fix ?? false);
  }
  for (const id of folders) {
    if (tenantIds.has(id)) continue;
    const dir = join(privkeys, id);
    const age = (Date.now() - (await lstat(dir)).mtimeMs) / 1000;
    if (age < (opts.minOrphanAgeSeconds ?? 600)) continue;
    const what = links.has(id) ? 'link (removed itself, never its target)' : 'folder';
    const finding: Finding = { kind: 'orphan-key', tenantId: id, detail: `${dir} belongs to no tenant`, fix: `remove the ${what}` };
    if (opts.fix) finding.fixed = await removeUnlessTenantExists(db, id, () => rm(dir, { recursive: true, force: true }));
    findings.push(finding);
  }
  return findings;
}

async function readNoFollow(file: string): Promise<string> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  return fh.readFile('utf8').finally(() => fh.close());
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

async function checkModes(tenantId: string, dir: string, file: string, findings: Finding[], fix: boolean): Promise<void> {
  for (const [path, want] of [
    [dir, 0o700],
    [file, 0o600],
  ] as const) {
    const st = await lstat(path).catch(() => undefined);
    if (!st) continue;
    const mode = st.mode & 0o777;
    if (mode === want) continue;
    const finding: Finding = {
      kind: 'bad-mode',
      tenantId,
      detail: `${path} has mode ${mode.toString(8)}, not ${want.toString(8)}`,
      fix: `chmod ${want.toString(8)}`,
    };
    if (fix && !st.isSymbolicLink()) {
      // On the opened file, never through a link that replaced it meanwhile.
      const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      await fh.chmod(want).finally(() => fh.close());
      finding.fixed = true;
    }
    findings.push(finding);
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
