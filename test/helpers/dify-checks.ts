// What a correctly provisioned tenant looks like, checked against the database and the disk.
import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { hybridDecrypt, hybridEncrypt } from '../../src/crypto/rsa-keys.js';
import type { TestEnv } from './test-env.js';

export const keyFile = (env: TestEnv, tenantId: string) => join(env.config.storageDir, 'privkeys', tenantId, 'private.pem');

/** Encrypts with the stored public key, decrypts with the deployed private key, Dify's way. */
export async function keyPairWorks(env: TestEnv, tenantId: string): Promise<boolean> {
  const { rows } = await env.db.query<{ encrypt_public_key: string }>(`SELECT encrypt_public_key FROM tenants WHERE id = $1`, [tenantId]);
  const publicPem = rows[0]?.encrypt_public_key;
  if (!publicPem) return false;
  const secret = randomBytes(40);
  const privatePem = await readFile(keyFile(env, tenantId), 'utf8');
  return hybridDecrypt(hybridEncrypt(secret, publicPem), privatePem).equals(secret);
}

export async function modes(env: TestEnv, tenantId: string): Promise<{ dir: string; file: string }> {
  const file = keyFile(env, tenantId);
  return {
    dir: ((await stat(join(file, '..'))).mode & 0o777).toString(8),
    file: ((await stat(file)).mode & 0o777).toString(8),
  };
}

/** The release bands as the tests name them: schema file → band and what create_tenant writes there. */
export const BANDS = {
  '1.6': { band: 'A', strategies: 0, lists: null, pool: false, lastOpenedAt: false, normalizedEmail: false },
  '1.9': { band: 'B', strategies: 1, lists: 'array', pool: false, lastOpenedAt: false, normalizedEmail: false },
  '1.11': { band: 'B', strategies: 1, lists: 'json', pool: false, lastOpenedAt: false, normalizedEmail: false },
  '1.13': { band: 'C', strategies: 1, lists: 'json', pool: true, lastOpenedAt: false, normalizedEmail: false },
  '1.16': { band: 'D', strategies: 6, lists: 'json', pool: true, lastOpenedAt: true, normalizedEmail: false },
  latest: { band: 'D', strategies: 6, lists: 'json', pool: true, lastOpenedAt: true, normalizedEmail: true },
} as const;
export type BandName = keyof typeof BANDS;

// Pinned, computed outside this code base (Python: int.from_bytes(hashlib.sha256(id.encode()).digest()[:8], 'big') % 96 * 900).
export const KNOWN_SLOTS: Record<string, number> = {
  '6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20': 19800,
  '0d024308-a14f-4742-8762-bb48869bf67a': 25200,
  '155d1c69-97d4-437a-ab79-813a5b4de2a6': 0,
  '8c1ab4a9-e6d8-4fcf-8bb2-f48465789f7e': 9900,
};

async function tableExists(env: TestEnv, table: string): Promise<boolean> {
  const { rows } = await env.db.query(`SELECT to_regclass($1) IS NOT NULL AS e`, [table]);
  return rows[0].e as boolean;
}

/**
 * Every row that release's TenantService.create_tenant writes for this tenant, and nothing else:
 * the tenant, the joins (owner first, every column as Dify sets it; `invited`: a member account the
 * batch created, as Dify's invite does), the strategy rows of the band
 * (exact values, lists in the column's own type), the trial pool of the band, and a key that works.
 */
export async function expectDifyWorkspace(
  env: TestEnv,
  name: BandName,
  tenantId: string,
  want: { name: string; plan?: string; owner: string; members?: { email: string; role: string; invited?: boolean }[]; credits?: number },
): Promise<void> {
  const band = BANDS[name];
  const { rows: tenants } = await env.db.query(`SELECT name, plan, status, encrypt_public_key, custom_config FROM tenants WHERE id = $1`, [
    tenantId,
  ]);
  expect(tenants).toHaveLength(1);
  expect(tenants[0]).toMatchObject({ name: want.name, plan: want.plan ?? 'basic', status: 'normal', custom_config: null });
  expect(tenants[0].encrypt_public_key).toMatch(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+\n-----END PUBLIC KEY-----$/);

  // The joins value by value, as Dify writes them: invited_by NULL, `current` false, except the
  // join of an account Dify's invite registers (switch_tenant: current, and from 1.15 opened then).
  const opened = band.lastOpenedAt ? `COALESCE(j.last_opened_at = a.initialized_at, false)` : 'NULL::boolean';
  const { rows: joins } = await env.db.query(
    `SELECT a.email, j.role, j.invited_by, j.current, ${band.lastOpenedAt ? 'j.last_opened_at IS NOT NULL' : 'NULL::boolean'} AS opened,
            ${opened} AS opened_at_registration
       FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.tenant_id = $1 ORDER BY j.role = 'owner' DESC, a.email`,
    [tenantId],
  );
  const members = [...(want.members ?? [])].sort((a, b) => a.email.localeCompare(b.email));
  const join = (email: string, role: string, invited: boolean) => ({
    email,
    role,
    invited_by: null,
    current: invited,
    opened: band.lastOpenedAt ? invited : null,
    opened_at_registration: band.lastOpenedAt ? invited : null,
  });
  expect(joins).toEqual([join(want.owner, 'owner', false), ...members.map((m) => join(m.email, m.role, m.invited ?? false))]);

  if (band.strategies === 0) {
    expect(await tableExists(env, 'tenant_plugin_auto_upgrade_strategies')).toBe(false);
  } else {
    const { rows: strategies } = await env.db.query(
      `SELECT to_jsonb(s) - 'id' - 'created_at' - 'updated_at' - 'tenant_id' AS s FROM tenant_plugin_auto_upgrade_strategies s WHERE tenant_id = $1`,
      [tenantId],
    );
    if (band.strategies === 1) {
      expect(strategies.map((r) => r.s)).toEqual([
        { strategy_setting: 'fix_only', upgrade_time_of_day: 0, upgrade_mode: 'exclude', exclude_plugins: [], include_plugins: [] },
      ]);
    } else {
      // Pinned where the test chose the id; else at least one slot shared by all six rows.
      const slot = KNOWN_SLOTS[tenantId] ?? strategies[0]?.s.upgrade_time_of_day;
      const byCategory = Object.fromEntries(strategies.map((r) => [r.s.category, r.s]));
      expect(Object.keys(byCategory).sort()).toEqual(['agent-strategy', 'datasource', 'extension', 'model', 'tool', 'trigger']);
      for (const [category, s] of Object.entries(byCategory)) {
        expect(s).toEqual({
          category,
          strategy_setting: category === 'model' ? 'latest' : 'fix_only',
          upgrade_time_of_day: slot,
          upgrade_mode: 'exclude',
          exclude_plugins: [],
          include_plugins: [],
        });
      }
    }
    if (band.lists === 'array') {
      const { rows } = await env.db.query(
        `SELECT exclude_plugins::text AS e FROM tenant_plugin_auto_upgrade_strategies WHERE tenant_id = $1`,
        [tenantId],
      );
      expect(rows).toEqual([{ e: '{}' }]);
    }
  }

  if (!band.pool) {
    expect(await tableExists(env, 'tenant_credit_pools')).toBe(false);
  } else {
    const { rows: pools } = await env.db.query(
      `SELECT pool_type, quota_limit::int, quota_used::int FROM tenant_credit_pools WHERE tenant_id = $1`,
      [tenantId],
    );
    expect(pools).toEqual([{ pool_type: 'trial', quota_limit: want.credits ?? 200, quota_used: 0 }]);
  }
  expect(await keyPairWorks(env, tenantId)).toBe(true);
}

/**
 * An account a batch created, column by column as Dify's invite registers one: pending, no
 * password, named after the address, en-US / light / America/New_York, initialized_at set (naive
 * UTC, as RegisterService.register writes it) and, where the band keeps it, Dify's normalised email.
 */
export async function expectCreatedAccount(env: TestEnv, name: BandName, email: string, normalized: string = email): Promise<void> {
  const band = BANDS[name];
  const { rows } = await env.db.query(
    `SELECT name, email, status, password, password_salt, avatar, interface_language, interface_theme, timezone,
            last_login_at, last_login_ip, initialized_at IS NOT NULL AS initialized,
            abs(extract(epoch FROM initialized_at - (now() AT TIME ZONE 'UTC'))) < 86400 AS initialized_utc,
            ${band.normalizedEmail ? 'normalized_email' : 'NULL::text AS normalized_email'}
       FROM accounts WHERE lower(email) = lower($1)`,
    [email],
  );
  expect(rows).toEqual([
    {
      name: email.slice(0, email.lastIndexOf('@')),
      email,
      status: 'pending',
      password: null,
      password_salt: null,
      avatar: null,
      interface_language: 'en-US',
      interface_theme: 'light',
      timezone: 'America/New_York',
      last_login_at: null,
      last_login_ip: null,
      initialized: true,
      initialized_utc: true,
      normalized_email: band.normalizedEmail ? normalized : null,
    },
  ]);
  const { rows: columns } = await env.db.query(
    `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'accounts' AND column_name = 'normalized_email'`,
  );
  expect(columns[0].n).toBe(band.normalizedEmail ? 1 : 0);
}
