// Knowledge-base (dataset) API keys exactly as Dify mints them (api/models/model.py ApiToken):
// "dataset-" + 24 characters of [A-Za-z0-9] from a CSPRNG, stored in api_tokens, workspace-wide
// unless bound to knowledge bases. The full token leaves this module only to be sealed or
// handed to the caller once; everywhere else it is masked the way Dify's console masks it.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Db, Tx } from '../db/pool.js';
import { RowError } from '../common/errors.js';
import { lockApiKeys } from '../store/locks.js';
import { isStrictUuid } from '../common/types.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
export const DATASET_KEY_PREFIX = 'dataset-';
export const MAX_DATASET_KEYS = 10;

/** `prefix` + n characters of [A-Za-z0-9], uniformly (rejection sampling: no modulo bias). */
export function generateToken(prefix = DATASET_KEY_PREFIX, n = 24): string {
  let out = prefix;
  while (out.length < prefix.length + n) {
    for (const b of randomBytes(32)) {
      if (b < 248 && out.length < prefix.length + n) out += ALPHABET[b % 62];
    }
  }
  return out;
}

/** Dify's mask: first 5 + "..." + last 4; 8 characters or fewer become "***". */
export function maskToken(token: string): string {
  return token.length <= 8 ? '***' : `${token.slice(0, 5)}...${token.slice(-4)}`;
}

/** How this Dify scopes a dataset key to knowledge bases. */
export type Scoping = 'bindings' | 'column' | 'none';

export async function detectScoping(db: Db | Tx): Promise<Scoping> {
  const { rows } = await db.query<{ bindings: boolean; column: boolean }>(
    `SELECT to_regclass('dataset_api_token_bindings') IS NOT NULL AS bindings,
            EXISTS (SELECT 1 FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = 'api_tokens' AND column_name = 'dataset_id') AS column`,
  );
  return rows[0]!.bindings ? 'bindings' : rows[0]!.column ? 'column' : 'none';
}

export interface MintedKey {
  id: string;
  tenantId: string;
  /** The full secret: seal it or hand it over once, never store or log it. */
  token: string;
  masked: string;
  datasetIds: string[];
}

/**
 * Inserts one dataset API key for a workspace, in the caller's transaction: workspace-wide with
 * no datasets, else bound to them (each must be a strict UUID of a knowledge base of this tenant).
 */
export async function mintDatasetKey(tx: Tx, tenantId: string, datasetIds: string[], scoping: Scoping): Promise<MintedKey> {
  const ids = [...new Set(datasetIds.map((d) => d.trim().toLowerCase()))];
  const bad = ids.find((d) => !isStrictUuid(d));
  if (bad !== undefined) throw new RowError('dataset', `"${bad}" is not a strict UUID`);
  if (ids.length > 0 && scoping === 'none') {
    throw new RowError(
      'dataset',
      'this Dify database has neither dataset_api_token_bindings nor api_tokens.dataset_id: it cannot scope a key to knowledge bases',
    );
  }
  if (ids.length > 1 && scoping === 'column') {
    throw new RowError('dataset', 'this Dify scopes a key with api_tokens.dataset_id: one knowledge base per key');
  }
  // One key at a time per workspace, so the limit holds against concurrent minting.
  await lockApiKeys(tx, tenantId);
  if (ids.length > 0) {
    const { rows } = await tx.query<{ id: string }>(`SELECT id FROM datasets WHERE id = ANY($1::uuid[]) AND tenant_id = $2`, [
      ids,
      tenantId,
    ]);
    const mine = new Set(rows.map((r) => r.id));
    const foreign = ids.filter((d) => !mine.has(d));
    if (foreign.length > 0) throw new RowError('dataset', `knowledge base(s) ${foreign.join(', ')} do not belong to workspace ${tenantId}`);
  }
  const { rows: count } = await tx.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM api_tokens WHERE tenant_id = $1 AND type = 'dataset'`,
    [tenantId],
  );
  if (count[0]!.n >= MAX_DATASET_KEYS) {
    throw new RowError('dataset', `workspace ${tenantId} has ${count[0]!.n} dataset API keys already (Dify allows ${MAX_DATASET_KEYS})`);
  }
  const token = await uniqueToken(tx);
  const id = randomUUID();
  if (scoping === 'column') {
    await tx.query(`INSERT INTO api_tokens (id, app_id, type, token, tenant_id, dataset_id) VALUES ($1, NULL, 'dataset', $2, $3, $4)`, [
      id,
      token,
      tenantId,
      ids[0] ?? null,
    ]);
  } else {
    await tx.query(`INSERT INTO api_tokens (id, app_id, type, token, tenant_id) VALUES ($1, NULL, 'dataset', $2, $3)`, [
      id,
      token,
      tenantId,
    ]);
    if (ids.length > 0) {
      await tx.query(
        `INSERT INTO dataset_api_token_bindings (id, api_token_id, dataset_id) SELECT gen_random_uuid(), $1, d FROM unnest($2::uuid[]) AS d`,
        [id, ids],
      );
    }
  }
  return { id, tenantId, token, masked: maskToken(token), datasetIds: ids };
}

// As Dify does: draw again while any existing row has the token.
async function uniqueToken(tx: Tx): Promise<string> {
  for (;;) {
    const token = generateToken();
    const { rows } = await tx.query(`SELECT 1 FROM api_tokens WHERE token = $1`, [token]);
    if (rows.length === 0) return token;
  }
}

export interface ListedKey {
  id: string;
  type: string;
  masked: string;
  scope: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}

/** A workspace's API keys, masked, with their scope (workspace or knowledge base ids). */
export async function listKeys(db: Db, tenantId: string): Promise<ListedKey[]> {
  const scoping = await detectScoping(db);
  const scopeSql =
    scoping === 'bindings'
      ? `(SELECT string_agg(b.dataset_id::text, ';' ORDER BY b.dataset_id) FROM dataset_api_token_bindings b WHERE b.api_token_id = t.id)`
      : scoping === 'column'
        ? `t.dataset_id::text`
        : `NULL`;
  const { rows } = await db.query<{
    id: string;
    type: string;
    token: string;
    app_id: string | null;
    scope: string | null;
    created_at: Date;
    last_used_at: Date | null;
  }>(
    `SELECT t.id, t.type, t.token, t.app_id, ${scopeSql} AS scope, t.created_at, t.last_used_at
       FROM api_tokens t WHERE t.tenant_id = $1 ORDER BY t.created_at, t.id`,
    [tenantId],
  );
  return rows.map((r) => ({
    id: r.id,
    type: r.type,
    masked: maskToken(r.token),
    scope: r.type === 'app' ? `app ${r.app_id}` : r.scope ? `knowledge bases ${r.scope}` : 'workspace',
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
  }));
}
