// Sealed API tokens, kept until the operator reveals them once. Only the JWE and the masked form
// are stored; revealing writes the tokens to a 0600 file and drops the seals.
import type { KeyObject } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { withTransaction, type Db, type Tx } from '../db/pool.js';
import { loadSealKey, unseal } from '../provision/sealing.js';
import { SCHEMA } from './migrate.js';

export async function storeSealed(tx: Tx, s: { apiTokenId: string; batchId: string; line: number; tenantId: string; masked: string; jwe: string }): Promise<void> {
  await tx.query(
    `INSERT INTO ${SCHEMA}.sealed_secrets (api_token_id, batch_id, line, tenant_id, masked, jwe) VALUES ($1, $2, $3, $4, $5, $6)`,
    [s.apiTokenId, s.batchId, s.line, s.tenantId, s.masked, s.jwe],
  );
}

/** The operator key a batch seals to, read once per batch per worker. */
export function sealKeyCache(db: Db): { get(batchId: string): Promise<KeyObject | undefined> } {
  const cache = new Map<string, Promise<KeyObject | undefined>>();
  return {
    get(batchId) {
      let hit = cache.get(batchId);
      if (!hit) {
        hit = db
          .query<{ pem: string | null }>(`SELECT options ->> 'sealTo' AS pem FROM ${SCHEMA}.batches WHERE id = $1`, [batchId])
          .then((r) => (r.rows[0]?.pem ? loadSealKey(r.rows[0].pem) : undefined));
        hit.catch(() => cache.delete(batchId));
        cache.set(batchId, hit);
      }
      return hit;
    },
  };
}

export class AlreadyRevealedError extends Error {
  override readonly name = 'AlreadyRevealedError';
}

/**
 * Opens every sealed token of the batch with the operator's private key, writes them to `out`
 * (created new, mode 0600) and marks them revealed, all or nothing: a wrong key, an existing file
 * or a second call reveals nothing.
 */
export async function revealSecrets(db: Db, batchId: string, privateKey: KeyObject, out: string): Promise<number> {
  return withTransaction(db, async (tx) => {
    const { rows } = await tx.query<{ api_token_id: string; line: number | null; tenant_id: string; jwe: string | null; revealed_at: Date | null }>(
      `SELECT api_token_id, line, tenant_id, jwe, revealed_at FROM ${SCHEMA}.sealed_secrets WHERE batch_id = $1 ORDER BY line FOR UPDATE`,
      [batchId],
    );
    if (rows.length === 0) throw new Error(`batch "${batchId}" has no sealed API keys`);
    const pending = rows.filter((r) => r.jwe !== null && r.revealed_at === null);
    if (pending.length === 0) {
      const when = rows[0]!.revealed_at?.toISOString() ?? 'earlier';
      throw new AlreadyRevealedError(`the API keys of batch "${batchId}" were revealed already (${when}); they are shown once — mint new keys if they were lost`);
    }
    const opened = [];
    for (const r of pending) opened.push({ ...r, token: await unseal(r.jwe!, privateKey) });
    const fh = await open(out, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EEXIST' ? new Error(`${out} exists already: choose a new file (secrets are never written over another file)`) : err;
    });
    try {
      await fh.chmod(0o600);
      await fh.writeFile(`line,tenant_id,api_token_id,token\n${opened.map((o) => `${o.line ?? ''},${o.tenant_id},${o.api_token_id},${o.token}`).join('\n')}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await tx.query(`UPDATE ${SCHEMA}.sealed_secrets SET jwe = NULL, revealed_at = now() WHERE api_token_id = ANY($1::uuid[])`, [opened.map((o) => o.api_token_id)]);
    return opened.length;
  });
}
