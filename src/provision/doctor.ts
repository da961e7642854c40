// `dify-provision doctor`: checks Dify's tenants, the key files under privkeys/ and our ledger
// against each other. --fix removes orphan key folders and repairs modes; it never touches the
// key of a tenant that exists.
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { chmod, lstat, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { withTransaction, type Db } from '../db/pool.js';
import { SCHEMA } from '../results/migrate.js';
import { isStrictUuid } from '../types.js';

export type FindingKind = 'missing-key' | 'key-mismatch' | 'unreadable-key' | 'orphan-key' | 'bad-mode' | 'ledger-without-tenant';

export interface Finding {
  kind: FindingKind;
  tenantId: string;
  detail: string;
  /** What --fix does about it, or why it doesn't. */
  fix: string;
  fixed?: boolean;
}

export interface DoctorOptions {
  storageDir: string;
  fix?: boolean;
  /** Key folders younger than this are left alone (a tenant may be mid-creation). Default 600 s. */
  minOrphanAgeSeconds?: number;
}

const spkiOf = (pem: string) => createPublicKey(pem).export({ type: 'spki', format: 'der' });

export async function runDoctor(db: Db, opts: DoctorOptions): Promise<Finding[]> {
  const findings: Finding[] = [];
  const privkeys = join(opts.storageDir, 'privkeys');
  const folders = new Set((await readdir(privkeys).catch(() => [] as string[])).filter((n) => isStrictUuid(n)));
  const { rows: tenants } = await db.query<{ id: string; encrypt_public_key: string | null }>(`SELECT id, encrypt_public_key FROM tenants`);
  const tenantIds = new Set(tenants.map((t) => t.id));

  for (const t of tenants) {
    const file = join(privkeys, t.id, 'private.pem');
    if (!folders.has(t.id)) {
      findings.push({ kind: 'missing-key', tenantId: t.id, detail: `no ${file}`, fix: "none: Dify can't decrypt this workspace's credentials; restore the file from a backup, or reset its key pair with Dify's own `flask reset-encrypt-key-pair` (which drops saved credentials)" });
      continue;
    }
    await checkKey(t.id, t.encrypt_public_key, file, findings);
    await checkModes(t.id, join(privkeys, t.id), file, findings, opts.fix ?? false);
  }
  for (const id of folders) {
    if (tenantIds.has(id)) continue;
    const dir = join(privkeys, id);
    const age = (Date.now() - (await stat(dir)).mtimeMs) / 1000;
    if (age < (opts.minOrphanAgeSeconds ?? 600)) continue;
    const finding: Finding = { kind: 'orphan-key', tenantId: id, detail: `${dir} belongs to no tenant`, fix: 'remove the folder' };
    if (opts.fix) finding.fixed = await removeOrphan(db, id, dir);
    findings.push(finding);
  }
  const { rows: ledger } = await db
    .query<{ tenant_id: string; idempotency_key: string }>(`SELECT l.tenant_id, l.idempotency_key FROM ${SCHEMA}.ledger l LEFT JOIN tenants t ON t.id = l.tenant_id WHERE t.id IS NULL`)
    .catch(() => ({ rows: [] as { tenant_id: string; idempotency_key: string }[] }));
  for (const l of ledger) {
    findings.push({ kind: 'ledger-without-tenant', tenantId: l.tenant_id, detail: `the ledger says ${l.idempotency_key} made this tenant, which no longer exists`, fix: 'none: if the workspace was deleted on purpose, delete its ledger row so that a new ingest may create it again' });
  }
  return findings;
}

async function checkKey(tenantId: string, publicPem: string | null, file: string, findings: Finding[]): Promise<void> {
  try {
    const privateKey = createPrivateKey(await readFile(file, 'utf8'));
    const derived = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
    if (!publicPem || !derived.equals(spkiOf(publicPem))) {
      findings.push({ kind: 'key-mismatch', tenantId, detail: `${file} does not match tenants.encrypt_public_key`, fix: 'none: never replaced automatically; restore the right file from a backup' });
    }
  } catch (err) {
    findings.push({ kind: 'unreadable-key', tenantId, detail: `${file} cannot be read as an RSA private key (${(err as Error).message})`, fix: 'none: restore the file from a backup' });
  }
}

async function checkModes(tenantId: string, dir: string, file: string, findings: Finding[], fix: boolean): Promise<void> {
  for (const [path, want] of [[dir, 0o700], [file, 0o600]] as const) {
    const st = await lstat(path).catch(() => undefined);
    if (!st) continue;
    const mode = st.mode & 0o777;
    if (mode === want) continue;
    const finding: Finding = { kind: 'bad-mode', tenantId, detail: `${path} has mode ${mode.toString(8)}, not ${want.toString(8)}`, fix: `chmod ${want.toString(8)}` };
    if (fix && !st.isSymbolicLink()) {
      await chmod(path, want);
      finding.fixed = true;
    }
    findings.push(finding);
  }
}

// Under the same advisory lock a worker holds from writing a key file until its commit: if no
// tenant exists while we hold it, no worker is about to commit one with this id.
async function removeOrphan(db: Db, tenantId: string, dir: string): Promise<boolean> {
  return withTransaction(db, async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended('dify-provision:tenant:' || $1, 0))`, [tenantId]);
    const { rows } = await tx.query(`SELECT 1 FROM tenants WHERE id = $1`, [tenantId]);
    if (rows.length > 0) return false;
    await rm(dir, { recursive: true, force: true });
    return true;
  });
}
