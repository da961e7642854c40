// Dify's invitation settings from its .env, and the token's value and link in Dify's own format
// (pinned values computed outside this code base with Python: json.dumps, urllib.parse.quote).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, requireInvitations } from '../../src/config/config.js';
import { inviteKey, inviteLink, inviteValue, pyQuote, type TokenFormat } from '../../src/dify/invitations.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-invitations-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const configOf = async (lines: string, env: NodeJS.ProcessEnv = {}) => {
  const file = join(dir, `${Math.random().toString(36).slice(2)}.env`);
  await writeFile(file, lines);
  return loadConfig({ DIFY_ENV_FILE: file, ...env });
};

describe("Dify's invitation settings", () => {
  it("are Dify's own Redis (not REDIS_URL, ours), REDIS_KEY_PREFIX trimmed, INVITE_EXPIRY_HOURS and CONSOLE_WEB_URL", async () => {
    const config = await configOf(
      'REDIS_HOST=10.0.0.5\nREDIS_PORT=6380\nREDIS_PASSWORD=p%w\nREDIS_DB=3\nREDIS_KEY_PREFIX=" acme "\nINVITE_EXPIRY_HOURS=24\nCONSOLE_WEB_URL=https://dify.example.com/\n',
      { REDIS_URL: 'redis://queue.example.com:6379/0' },
    );
    expect(requireInvitations(config)).toEqual({
      redis: { kind: 'node', host: '10.0.0.5', port: 6380, password: 'p%w', db: 3, tls: undefined },
      keyPrefix: 'acme',
      expiryHours: 24,
      consoleWebUrl: 'https://dify.example.com',
    });
    const sentinel = await configOf(
      'REDIS_USE_SENTINEL=true\nREDIS_SENTINELS=s1:26379,s2:26379\nREDIS_SENTINEL_SERVICE_NAME=mymaster\nREDIS_SENTINEL_PASSWORD=sp\nREDIS_DB=2\nCONSOLE_WEB_URL=http://localhost\n',
    );
    expect(requireInvitations(sentinel).redis).toMatchObject({ kind: 'sentinel', name: 'mymaster', sentinelPassword: 'sp', db: 2 });
    expect(requireInvitations(sentinel).expiryHours).toBe(72);
    const cluster = await configOf(
      'REDIS_USE_CLUSTERS=true\nREDIS_CLUSTERS=c1:6379,c2:6379\nREDIS_CLUSTERS_PASSWORD=cp\nCONSOLE_WEB_URL=http://x\n',
    );
    expect(requireInvitations(cluster).redis).toMatchObject({ kind: 'cluster', password: 'cp', nodes: [{ host: 'c1' }, { host: 'c2' }] });
  });

  it('asks for CONSOLE_WEB_URL and for Dify’s Redis instead of guessing; a malformed setting is said only when invitations are used', async () => {
    const stock = await configOf('REDIS_HOST=redis\nCONSOLE_WEB_URL=\n');
    expect(() => requireInvitations(stock)).toThrow(/CONSOLE_WEB_URL: the address people open Dify's console at/);
    const noRedis = await configOf('CONSOLE_WEB_URL=https://dify.example.com\n', { REDIS_URL: 'redis://127.0.0.1:6379' });
    expect(() => requireInvitations(noRedis)).toThrow(/Dify's own Redis .*REDIS_URL is our queue's/);
    const bad = await configOf('REDIS_HOST=r\nINVITE_EXPIRY_HOURS=0\nCONSOLE_WEB_URL=https://d\n');
    expect(bad.redis?.kind).toBe('node');
    expect(() => requireInvitations(bad)).toThrow(/INVITE_EXPIRY_HOURS \(in .*\): "0" is not a positive number of hours/);
    const query = await configOf('REDIS_HOST=r\nCONSOLE_WEB_URL=https://d/?x=1\n');
    expect(() => requireInvitations(query)).toThrow(/CONSOLE_WEB_URL/);
  });
});

describe("the token in Dify's format", () => {
  const account = '6f1c3a52-95b4-4a5b-8f0e-6a2a1d3c4b5e';
  const tenant = '0b9e8d7c-6a5b-4c3d-8e2f-1a0b9c8d7e6f';
  const invitee = { accountId: account, email: 'zoë+1@example.com', workspaceId: tenant, role: 'editor', requiresSetup: true };
  const f = (band: TokenFormat['band'], keyPrefix = 'acme'): TokenFormat => ({ band, keyPrefix, expiryHours: 72 });

  it('is json.dumps of the release’s fields (ensure_ascii, ", " and ": "), keyed under the prefix from 1.14', () => {
    // python3 -c 'import json; print(json.dumps({"account_id": a, "email": "zoë+1@example.com", "workspace_id": t, "role": "editor", "requires_setup": True}))'
    expect(inviteValue(f('D'), invitee)).toBe(
      `{"account_id": "${account}", "email": "zo\\u00eb+1@example.com", "workspace_id": "${tenant}", "role": "editor", "requires_setup": true}`,
    );
    expect(inviteValue(f('B'), invitee)).toBe(
      `{"account_id": "${account}", "email": "zo\\u00eb+1@example.com", "workspace_id": "${tenant}"}`,
    );
    expect(inviteKey(f('D'), 't')).toBe('acme:member_invite:token:t');
    expect(inviteKey(f('C'), 't')).toBe('acme:member_invite:token:t');
    expect(inviteKey(f('B'), 't')).toBe('member_invite:token:t');
    expect(inviteKey(f('D', '  '), 't')).toBe('member_invite:token:t');
  });

  it("is linked as Dify's console links it (urllib.parse.quote of the email)", () => {
    // python3 -c 'from urllib.parse import quote; print(quote("a+b/c!(x)@ex ample.com"))' → a%2Bb/c%21%28x%29%40ex%20ample.com
    expect(pyQuote('a+b/c!(x)@ex ample.com')).toBe('a%2Bb/c%21%28x%29%40ex%20ample.com');
    expect(inviteLink('https://d.example.com', 'zoë+1@example.com', 'tok')).toBe(
      'https://d.example.com/activate?email=zo%C3%AB%2B1%40example.com&token=tok',
    );
  });
});
