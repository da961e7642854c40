// Sealed API tokens, kept until the operator reveals them once. Only the JWE and the masked form
// are stored; the seal is dropped once revealed.
import type { KeyObject } from 'node:crypto';
import { loadSealKey } from '../crypto/sealing.js';
import type { Db, Tx } from '../db/pool.js';
import { SCHEMA } from './schema.js';

export async function storeSealed(
  tx: Tx,
  s: { apiTokenId: string; batchId: string; line: number; tenantId: string; masked: string; jwe: string },
): Promise<void> {
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

export interface SealedRow {
  api_token_id: string;
  line: number | null;
  tenant_id: string;
  jwe: string | null;
  revealed_at: Date | null;
}

/** Every seal of the batch, locked until the caller's transaction ends. */
export async function lockSealed(tx: Tx, batchId: string): Promise<SealedRow[]> {
  const { rows } = await tx.query<SealedRow>(
    `SELECT api_token_id, line, tenant_id, jwe, revealed_at FROM ${SCHEMA}.sealed_secrets WHERE batch_id = $1 ORDER BY line FOR UPDATE`,
    [batchId],
  );
  return rows;
}

export async function markRevealed(tx: Tx, apiTokenIds: string[]): Promise<void> {
  await tx.query(`UPDATE ${SCHEMA}.sealed_secrets SET jwe = NULL, revealed_at = now() WHERE api_token_id = ANY($1::uuid[])`, [apiTokenIds]);
}
