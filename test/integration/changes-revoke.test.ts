// apply's remove_member and the removed person's invitation tokens in Dify's Redis, against real
// Redis and PostgreSQL:
// - a worker with Dify's Redis but no CONSOLE_WEB_URL (invitation settings otherwise unusable)
//   removes and deletes the tokens;
// - a worker with no Dify Redis at all removes, records the revocation and says so; the sweep of
//   a worker that has Dify's Redis deletes the tokens later;
// - a batch of removals scans Dify's token keys once, not once per removal (Redis's own count of
//   SCAN commands), and deletes only the removed people's tokens for those workspaces.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { describe, expect, inject, it } from 'vitest';
import type { InvitationSettings } from '../../src/config/dify-env.js';
import { createProvisioner, type ChangeInput, type Provisioner } from '../../src/provisioner.js';
import { runWorker } from '../../src/worker/run-worker.js';
import type { ReportRow } from '../../src/store/report.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { until } from '../helpers/cli-world.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { difyInvitationSettings } from '../helpers/dify-invitations.js';
import { closeEachTest } from '../helpers/world.js';

/** Dify's Redis: the tests' Redis server, a logical database of its own. */
const DIFY_DB = 13;

let env: TestEnv | undefined;
let provisioner: Provisioner | undefined;
let dify: Redis | undefined;
closeEachTest(
  () => ({ provisioner, dify, env }),
  (none) => ({ provisioner, dify, env } = none),
);

/** Where Dify keeps tokens, and nothing else: no CONSOLE_WEB_URL (so no invitations can be issued). */
function difyRedisOnly(e: TestEnv): InvitationSettings {
  return difyInvitationSettings(DIFY_DB, `dify-${e.name}`, { consoleWebUrl: undefined });
}

const W = Object.fromEntries(['W1', 'W2', 'W3'].map((w) => [w, randomUUID()])) as Record<string, string>;

async function provisionWorld(e: TestEnv): Promise<void> {
  await ingestCsv(
    e,
    csvOf([
      {
        workspace_name: 'One',
        owner_email: 'owner1@example.com',
        members: 'm1@example.com:normal;m2@example.com:normal',
        workspace_id: W.W1!,
      },
      {
        workspace_name: 'Two',
        owner_email: 'owner2@example.com',
        members: 'm1@example.com:normal;m3@example.com:editor',
        workspace_id: W.W2!,
      },
      {
        workspace_name: 'Three',
        owner_email: 'owner3@example.com',
        members: 'm4@example.com:normal;m5@example.com:normal',
        workspace_id: W.W3!,
      },
    ]),
    'world',
    { createMissingOwners: true },
  );
  const [s] = await runUntilDone(e, ['world']);
  expect(s!.counts.created).toBe(3);
  // People who signed in already (a removal would delete a still-pending account with no workspace left).
  await e.db.query(`UPDATE accounts SET status = 'active'`);
}

const idOf = async (e: TestEnv, email: string) =>
  (await e.db.query<{ id: string }>(`SELECT id FROM accounts WHERE email = $1`, [email])).rows[0]!.id;

/** A token as Dify's console stores it (band D: with role and requires_setup), for this person and workspace. */
async function difyToken(e: TestEnv, email: string, workspace: string): Promise<string> {
  const key = `dify-${e.name}:member_invite:token:${randomUUID()}`;
  const value = JSON.stringify({ account_id: await idOf(e, email), email, workspace_id: workspace, role: 'normal', requires_setup: false });
  await dify!.setex(key, 3600, value);
  return key;
}

const existing = async (keys: string[]) => (await Promise.all(keys.map((k) => dify!.exists(k)))).map((n) => n === 1);

async function removeAndRun(e: TestEnv, config: TestEnv['config'], rows: ChangeInput[], batchId: string): Promise<ReportRow[]> {
  provisioner ??= await createProvisioner(config);
  await provisioner.apply(rows, { batchId, retry: { attempts: 2, backoffMs: 50 } });
  const [s] = await runUntilDone(e, [batchId], { config });
  expect(s!.done).toBe(true);
  return provisioner.batch(batchId).report();
}

describe("remove_member and the person's invitation tokens", () => {
  it("a worker with Dify's Redis but no CONSOLE_WEB_URL removes the person and deletes their tokens for that workspace", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    await provisionWorld(e);
    const config = { ...e.config, invitations: difyRedisOnly(e) };
    const doomed = [await difyToken(e, 'm1@example.com', W.W1!), await difyToken(e, 'm1@example.com', W.W1!)];
    const kept = [await difyToken(e, 'm1@example.com', W.W2!), await difyToken(e, 'm2@example.com', W.W1!)];
    const report = await removeAndRun(e, config, [{ action: 'remove_member', workspace_id: W.W1, email: 'm1@example.com' }], 'no-console');
    expect(report.map((r) => `${r.outcome} ${r.detail}`)).toEqual(["applied 2 invitation token(s) deleted from Dify's Redis"]);
    expect(await existing(doomed)).toEqual([false, false]);
    expect(await existing(kept)).toEqual([true, true]);
  });

  it("a worker without Dify's Redis removes the person and records the revocation; a worker with it deletes the tokens in its sweep", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    await provisionWorld(e);
    const doomed = [await difyToken(e, 'm1@example.com', W.W1!), await difyToken(e, 'm4@example.com', W.W3!)];
    const kept = [await difyToken(e, 'm1@example.com', W.W2!)];
    // This worker knows no Dify Redis at all (our queue's REDIS_URL is never taken for Dify's).
    const bare = { ...e.config, invitations: undefined, difyTokenStore: undefined };
    const report = await removeAndRun(
      e,
      bare,
      [
        { action: 'remove_member', workspace_id: W.W1, email: 'm1@example.com' },
        { action: 'remove_member', workspace_id: W.W3, email: 'm4@example.com' },
      ],
      'no-redis',
    );
    expect(report.map((r) => r.outcome)).toEqual(['applied', 'applied']);
    for (const r of report)
      expect(r.detail).toMatch(
        /^their invitation tokens for this workspace are left to the sweep of a worker with Dify's Redis \(this one has none: .*\): recorded$/,
      );
    expect(Object.keys(await joinsOf(e, W.W1!))).not.toContain('m1@example.com');
    // Nothing deleted yet: the revocations wait in our ledger.
    expect(await existing(doomed)).toEqual([true, true]);
    const due = async () =>
      (await e.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM dify_provision.revocations WHERE done_at IS NULL`)).rows[0]!.n;
    expect(await due()).toBe(2);

    // A worker with Dify's Redis (and no rows to run): its sweep does them.
    const worker = await runWorker(
      { ...e.config, invitations: difyRedisOnly(e) },
      { concurrency: 1, logger: pino({ level: 'silent' }), sweep: { intervalMs: 200, idleSeconds: 0 } },
    );
    try {
      await until(async () => (await due()) === 0, 'the sweep doing the recorded revocations');
    } finally {
      await worker.close();
    }
    expect(await existing(doomed)).toEqual([false, false]);
    expect(await existing(kept)).toEqual([true]);
  });

  it("a batch of removals scans Dify's token keys once, not once per removal, and deletes only the removed people's tokens", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    await provisionWorld(e);
    const config = { ...e.config, invitations: difyRedisOnly(e) };
    // Other people's tokens: enough that one pass over the keys takes several SCAN calls.
    const others = 3000;
    const pipe = dify.pipeline();
    for (let i = 0; i < others; i++)
      pipe.setex(
        `dify-${e.name}:member_invite:token:${randomUUID()}`,
        3600,
        JSON.stringify({ account_id: randomUUID(), email: `x${i}@example.com`, workspace_id: W.W1 }),
      );
    await pipe.exec();
    const removed: [string, string][] = [
      ['m1@example.com', W.W1!],
      ['m2@example.com', W.W1!],
      ['m1@example.com', W.W2!],
      ['m3@example.com', W.W2!],
      ['m4@example.com', W.W3!],
      ['m5@example.com', W.W3!],
    ];
    const doomed = [];
    for (const [email, ws] of removed) doomed.push(await difyToken(e, email, ws));
    const kept = [await difyToken(e, 'owner1@example.com', W.W1!), await difyToken(e, 'm4@example.com', W.W1!)];
    // How many SCAN calls one pass over Dify's keys takes (as the worker scans: COUNT 1000).
    let pass = 0;
    let cursor = '0';
    do {
      [cursor] = await dify.scan(cursor, 'MATCH', `dify-${e.name}:member_invite:token:*`, 'COUNT', 1000);
      pass++;
    } while (cursor !== '0');
    expect(pass).toBeGreaterThan(1);
    const scans = async () => Number(/cmdstat_scan:calls=(\d+)/.exec(await dify!.info('commandstats'))?.[1] ?? 0);

    const before = await scans();
    const report = await removeAndRun(
      e,
      config,
      removed.map(([email, ws]) => ({ action: 'remove_member', workspace_id: ws, email })),
      'removals',
    );
    const after = await scans();
    expect(report.map((r) => `${r.outcome} ${r.detail}`)).toEqual(Array(6).fill("applied 1 invitation token(s) deleted from Dify's Redis"));
    // One pass for the batch (a pass more if a key moved under it), never one per removal.
    expect(after - before).toBeGreaterThanOrEqual(pass);
    expect(after - before).toBeLessThan(2 * pass);
    expect(await existing(doomed)).toEqual(Array(6).fill(false));
    expect(await existing(kept)).toEqual([true, true]);
    expect(await dify.dbsize()).toBeGreaterThanOrEqual(others + kept.length);
  });
});

async function joinsOf(e: TestEnv, tenantId: string): Promise<Record<string, string>> {
  const { rows } = await e.db.query<{ email: string; role: string }>(
    `SELECT a.email, j.role FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.tenant_id = $1 ORDER BY a.email`,
    [tenantId],
  );
  return Object.fromEntries(rows.map((r) => [r.email, r.role]));
}
