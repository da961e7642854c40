// --invite against real Redis and PostgreSQL on the band schemas: Dify's token for every person a
// batch creates, stored in Dify's own Redis (another database than our queue's, under
// REDIS_KEY_PREFIX from 1.14) exactly as that release's invite flow stores it; links sealed and
// revealed once; nothing of them in our Redis, logs or reports; --resend revokes.
import { generateKeyPairSync } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { InvitationSettings } from '../../src/config/dify-env.js';
import { requireInvitations } from '../../src/config/config.js';
import { ConfigError } from '../../src/common/errors.js';
import { openInviter } from '../../src/invite/inviter.js';
import { pendingInvitations } from '../../src/store/invitations.js';
import { createProvisioner, type Provisioner, type WorkspaceInput } from '../../src/provisioner.js';
import { AlreadyRevealedError } from '../../src/secrets/reveal.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { envQueue, runLoggedUntilDone, waitUntilDone } from '../helpers/batch.js';
import { until } from '../helpers/cli-world.js';
import { DEFAULT_RETRY, jobFor, type JobData } from '../../src/queue/contract.js';
import { BANDS, type BandName } from '../helpers/dify-checks.js';
import { dumpRedis } from '../helpers/redis-dump.js';
import { startCluster, startSentinel, type TestCluster, type TestSentinel } from '../helpers/redis-topologies.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

const CONSOLE = 'https://dify.example.com';
const HOURS = 5;
/** Dify's Redis: the tests' Redis server, another logical database than our queue's (0). */
const DIFY_DB = 9;
const TOKEN_KEY = /member_invite:token:([0-9a-f-]{36})$/;
const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const operator = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PUBLIC = operator.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const PRIVATE = operator.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();

let env: TestEnv;
let provisioner: Provisioner | undefined;
let difyRedis: Redis | Redis[] | undefined;
let cluster: TestCluster | undefined;
let sentinel: TestSentinel | undefined;
afterEach(async () => {
  await provisioner?.close();
  provisioner = undefined;
  for (const r of [difyRedis ?? []].flat()) r.disconnect();
  difyRedis = undefined;
  await cluster?.stop();
  cluster = undefined;
  await sentinel?.stop();
  sentinel = undefined;
  await env?.cleanup();
});

function singleDify(prefix: string, hours = HOURS): InvitationSettings {
  const u = new URL(inject('redisUrl'));
  return {
    redis: { kind: 'node', host: u.hostname, port: Number(u.port || 6379), db: DIFY_DB },
    keyPrefix: prefix,
    expiryHours: hours,
    consoleWebUrl: CONSOLE,
  };
}

/** Every invitation token key in Dify's Redis (one node, or every master of a Cluster) with its value and TTL. */
async function difyTokens(nodes: Redis[]): Promise<{ key: string; token: string; value: string; ttl: number }[]> {
  const out = [];
  for (const n of nodes) {
    for (const key of await n.keys('*member_invite:token:*')) {
      const value = await n.get(key);
      if (value === null) continue;
      out.push({ key, token: TOKEN_KEY.exec(key)![1]!, value, ttl: await n.ttl(key) });
    }
  }
  return out;
}

/** What Dify's get_invitation_if_token_valid checks: the tenant is normal, the account found by email has the token's account_id. */
async function resolvesLikeDify(value: string): Promise<{ accountId: string; workspaceId: string } | undefined> {
  const data = JSON.parse(value) as { account_id: string; email: string; workspace_id: string };
  const { rows: t } = await env.db.query(`SELECT 1 FROM tenants WHERE id = $1 AND status = 'normal' LIMIT 1`, [data.workspace_id]);
  if (t.length === 0) return undefined;
  const { rows: a } = await env.db.query<{ id: string }>(`SELECT id FROM accounts WHERE email = $1 LIMIT 1`, [data.email]);
  if (a[0]?.id !== data.account_id) return undefined;
  return { accountId: data.account_id, workspaceId: data.workspace_id };
}

interface Run {
  logs: string;
  batchId: string;
}

async function runBatch(config: TestEnv['config'], csv: string, batchId: string, opts: { invitePending?: boolean } = {}): Promise<Run> {
  provisioner ??= await createProvisioner(config);
  await provisioner.enqueue(
    csv
      .trim()
      .split('\n')
      .slice(1)
      .map((l): WorkspaceInput => {
        const [workspaceName, ownerEmail, members] = l.split(',');
        return { workspace_name: workspaceName!, owner_email: ownerEmail!, ...(members ? { members } : {}) };
      }),
    { batchId, createMissingOwners: true, invite: true, sealTo: PUBLIC, ...(opts.invitePending ? { invitePending: true } : {}) },
  );
  return { logs: await runLoggedUntilDone(env, config, [batchId]), batchId };
}

async function reveal(batchId: string, name: string): Promise<Record<string, string>[]> {
  const out = join(env.dir, name);
  await provisioner!.revealInvitations(batchId, PRIVATE, out);
  expect((await stat(out)).mode & 0o777).toBe(0o600);
  const [header, ...lines] = (await readFile(out, 'utf8')).trim().split('\n');
  const cols = header!.split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v])));
}

const CSV = [
  'workspace_name,owner_email,members',
  // A new owner and a new member: both invited (owner as owner, the member with their role).
  'Acme,new-owner@example.com,new-member@example.com:editor',
  // An existing active owner, a new member: only the member.
  'Globex,owner1@example.com,second-new@example.com:normal',
  // An existing owner: nobody to invite.
  'Initech,owner2@example.com,',
].join('\n');

describe.each(['1.6', '1.13', 'latest'] as BandName[])('--invite on band %s', (bandName) => {
  it("stores one token per created person in Dify's Redis as the release does, reveals each link once, leaks none", async () => {
    const band = BANDS[bandName].band;
    env = await createTestEnv({ schema: bandName === 'latest' ? 'latest' : bandName });
    const prefix = `  dify-${env.name} `; // Dify strips the prefix's blanks
    const config = { ...env.config, invitations: singleDify(prefix) };
    const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    difyRedis = dify;
    const { logs, batchId } = await runBatch(config, CSV, `inv-${bandName.replace('.', '')}`);

    const { rows: people } = await env.db.query<{ id: string; email: string; status: string; tenant_id: string; role: string }>(
      `SELECT a.id, a.email, a.status, j.tenant_id, j.role FROM accounts a JOIN tenant_account_joins j ON j.account_id = a.id
        WHERE a.email IN ('new-owner@example.com', 'new-member@example.com', 'second-new@example.com') ORDER BY a.email`,
    );
    expect(people.map((p) => [p.email, p.status, p.role])).toEqual([
      ['new-member@example.com', 'pending', 'editor'],
      ['new-owner@example.com', 'pending', 'owner'],
      ['second-new@example.com', 'pending', 'normal'],
    ]);
    const workspaces = new Set(people.map((p) => p.tenant_id));
    const mine = (await difyTokens([dify])).filter((t) => workspaces.has((JSON.parse(t.value) as { workspace_id: string }).workspace_id));
    // Exactly one token per created person, under the prefix from 1.14 (band C holds 1.14), with Dify's TTL.
    expect(mine).toHaveLength(3);
    const applied = band === 'C' || band === 'D' ? `dify-${env.name}:` : '';
    for (const t of mine) {
      expect(t.key).toBe(`${applied}member_invite:token:${t.token}`);
      expect(t.token).toMatch(UUID4);
      expect(t.ttl).toBeGreaterThan(HOURS * 3600 - 600);
      expect(t.ttl).toBeLessThanOrEqual(HOURS * 3600);
    }
    for (const p of people) {
      const t = mine.find((m) => (JSON.parse(m.value) as { account_id: string }).account_id === p.id)!;
      // Byte for byte Python's json.dumps of the release's invitation_data.
      const base = `{"account_id": "${p.id}", "email": "${p.email}", "workspace_id": "${p.tenant_id}"`;
      expect(t.value).toBe(band === 'D' ? `${base}, "role": "${p.role}", "requires_setup": true}` : `${base}}`);
      expect(await resolvesLikeDify(t.value)).toEqual({ accountId: p.id, workspaceId: p.tenant_id });
    }
    // Not in our queue's database.
    const ours = await dumpRedis(env.redis);
    for (const t of mine) expect(ours).not.toContain(t.token);

    // The links, revealed once, each with its email and workspace; its token is that person's.
    const links = await reveal(batchId, 'links.csv');
    expect(links).toHaveLength(3);
    for (const l of links) {
      const url = new URL(l.link!);
      expect(`${url.origin}${url.pathname}`).toBe(`${CONSOLE}/activate`);
      expect(url.searchParams.get('email')).toBe(l.email);
      expect(l.link).toContain(`email=${l.email!.replace('@', '%40')}&`);
      const token = url.searchParams.get('token')!;
      const stored = mine.find((m) => m.token === token)!;
      const p = people.find((x) => x.email === l.email)!;
      expect(await resolvesLikeDify(stored.value)).toEqual({ accountId: p.id, workspaceId: p.tenant_id });
      expect(l.workspace_id).toBe(p.tenant_id);
      expect(l.role).toBe(p.role);
    }
    expect(links.map((l) => l.workspace_name).sort()).toEqual(['Acme', 'Acme', 'Globex']);
    await expect(provisioner!.revealInvitations(batchId, PRIVATE, join(env.dir, 'again.csv'))).rejects.toThrow(AlreadyRevealedError);

    // No token or link in our Redis, the logs, the report or our schema any more.
    const report = (await provisioner!.batch(batchId).report()).map((r) => JSON.stringify(r)).join('\n');
    let csv = '';
    for await (const c of provisioner!.batch(batchId).reportCsv()) csv += c;
    const { rows: kept } = await env.db.query(`SELECT * FROM dify_provision.invitations`);
    const stored = JSON.stringify(kept) + JSON.stringify((await env.db.query(`SELECT * FROM dify_provision.rows`)).rows);
    const ourRedis = await dumpRedis(env.redis);
    for (const t of mine) {
      for (const [where, text] of Object.entries({ ourRedis, logs, report, csv, stored })) {
        expect(text.includes(t.token), `${where} holds a token`).toBe(false);
      }
    }
    expect(logs).not.toContain('/activate');
  });
});

/** CSV run by a worker whose Dify Redis is down (nothing listens on port 1: every SETEX fails after the commit). */
async function batchWhileDifyRedisIsDown(batchId: string) {
  env = await createTestEnv();
  const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
  difyRedis = dify;
  const good = singleDify(`dify-${env.name}`);
  const down = { ...env.config, invitations: { ...good, redis: { kind: 'node' as const, host: '127.0.0.1', port: 1, db: DIFY_DB } } };
  await runBatch(down, CSV, batchId);
  return { dify, good, batchId };
}

describe('--invite, what must not happen and what must converge', () => {
  it('a failed workspace leaves no token; a batch without Dify settings is refused before anything is recorded', async () => {
    env = await createTestEnv();
    const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    difyRedis = dify;
    // Refused at ingest: no CONSOLE_WEB_URL.
    const { consoleWebUrl: _, ...noConsole } = singleDify(`dify-${env.name}`);
    provisioner = await createProvisioner({ ...env.config, invitations: noConsole });
    await expect(
      provisioner.enqueue([{ workspace_name: 'X', owner_email: 'x@example.com' }], { batchId: 'refused', invite: true, sealTo: PUBLIC }),
    ).rejects.toThrow(ConfigError);
    await expect(
      provisioner.enqueue([{ workspace_name: 'X', owner_email: 'x@example.com' }], { batchId: 'refused', invite: true, sealTo: PUBLIC }),
    ).rejects.toThrow(/CONSOLE_WEB_URL/);
    expect((await env.db.query(`SELECT 1 FROM dify_provision.batches WHERE id = 'refused'`)).rows).toHaveLength(0);
    await provisioner.close();
    provisioner = undefined;

    // A row whose workspace id is taken fails (permanently) after its new account was drawn, and
    // one fails at COMMIT itself (a deferred check on the ledger), after its tokens were drawn:
    // both roll back, no token.
    const { rows } = await env.db.query<{ id: string }>(`INSERT INTO tenants (name) VALUES ('taken') RETURNING id`);
    const config = { ...env.config, invitations: singleDify(`dify-${env.name}`) };
    provisioner = await createProvisioner(config);
    await env.db.query(`
      CREATE FUNCTION refuse_line_3() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.line = 3 THEN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation'; END IF;
        RETURN NEW;
      END $$;
      CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON dify_provision.ledger
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_line_3();`);
    await provisioner.enqueue(
      [
        { workspace_name: 'Fails', owner_email: 'doomed@example.com', workspace_id: rows[0]!.id },
        { workspace_name: 'Works', owner_email: 'fine@example.com' },
        { workspace_name: 'Fails at commit', owner_email: 'doomed-too@example.com', members: 'doomed-member@example.com:admin' },
      ],
      { batchId: 'one-fails', createMissingOwners: true, invite: true, sealTo: PUBLIC },
    );
    const worker = await runWorker(config, {
      concurrency: 2,
      logger: pino({ level: 'silent' }),
      sweep: { intervalMs: 200, idleSeconds: 0 },
    });
    try {
      await waitUntilDone(env, ['one-fails']);
    } finally {
      await worker.close();
    }
    const report = await provisioner.batch('one-fails').report();
    expect(report.map((r) => r.outcome)).toEqual(['failed', 'created', 'failed']);
    expect(report[2]!.error).toContain('refused at commit');
    const tokens = (await difyTokens([dify])).map((t) => JSON.parse(t.value) as { email: string; workspace_id: string });
    const { rows: line3 } = await env.db.query<{ id: string }>(
      `SELECT tenant_id AS id FROM dify_provision.rows WHERE batch_id = 'one-fails' AND line = 3`,
    );
    const failed = [rows[0]!.id, line3[0]!.id];
    expect(tokens.filter((t) => failed.includes(t.workspace_id) || t.email.startsWith('doomed'))).toEqual([]);
    expect(tokens.filter((t) => t.email === 'fine@example.com')).toHaveLength(1);
    expect((await env.db.query(`SELECT email FROM dify_provision.invitations`)).rows).toEqual([{ email: 'fine@example.com' }]);
  });

  it("Dify's Redis down when the workspace commits: the workspace is created, its tokens wait, and the sweep stores exactly those", async () => {
    const { dify, good, batchId } = await batchWhileDifyRedisIsDown('redis-down');
    expect((await provisioner!.batch(batchId).report()).map((r) => r.outcome)).toEqual(['created', 'created', 'created']);
    const { rows: waiting } = await env.db.query(`SELECT 1 FROM dify_provision.invitations WHERE pending_token IS NOT NULL`);
    expect(waiting).toHaveLength(3);
    const { rows: tenants } = await env.db.query<{ id: string }>(`SELECT tenant_id AS id FROM dify_provision.rows`);
    const ids = new Set(tenants.map((t) => t.id));
    const ofBatch = async () =>
      (await difyTokens([dify])).filter((t) => ids.has((JSON.parse(t.value) as { workspace_id: string }).workspace_id));
    expect(await ofBatch()).toEqual([]);
    await expect(provisioner!.revealInvitations(batchId, PRIVATE, join(env.dir, 'early.csv'))).rejects.toThrow(/not in Dify's Redis yet/);

    // A worker that reaches Dify's Redis: its sweep stores the recorded tokens (the ones the sealed links carry).
    const worker = await runWorker(
      { ...env.config, invitations: good },
      { logger: pino({ level: 'silent' }), sweep: { intervalMs: 200, idleSeconds: 0 } },
    );
    try {
      for (let i = 0; (await ofBatch()).length < 3; i++) {
        if (i > 600) throw new Error('the sweep did not store the waiting tokens');
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await worker.close();
    }
    const stored = await ofBatch();
    expect(stored).toHaveLength(3);
    const links = await reveal(batchId, 'links.csv');
    expect(links.map((l) => new URL(l.link!).searchParams.get('token')).sort()).toEqual(stored.map((s) => s.token).sort());
    expect((await env.db.query(`SELECT 1 FROM dify_provision.invitations WHERE pending_token IS NOT NULL`)).rows).toHaveLength(0);
  });

  it("the row's job taken up again after a crash between COMMIT and SETEX stores the waiting tokens (no sweep needed)", async () => {
    const { dify, good, batchId } = await batchWhileDifyRedisIsDown('rerun');
    const worker = await runWorker({ ...env.config, invitations: good }, { logger: pino({ level: 'silent' }), sweep: false });
    const queue = await envQueue(env);
    try {
      // What BullMQ does with a job whose worker died: the same job (id, data) runs again.
      const { rows } = await env.db.query<{ spec: JobData; round: number }>(
        `SELECT spec, round FROM dify_provision.rows WHERE batch_id = $1`,
        [batchId],
      );
      for (const r of rows) {
        const job = jobFor(r.spec, DEFAULT_RETRY, r.round);
        await queue.add(job.name, job.data, job.opts);
      }
      await until(
        async () => (await env.db.query(`SELECT 1 FROM dify_provision.invitations WHERE pending_token IS NOT NULL`)).rows.length === 0,
        'the reruns to store the tokens',
      );
    } finally {
      await queue.close();
      await worker.close();
    }
    const links = await reveal(batchId, 'links.csv');
    const tokens = (await difyTokens([dify])).filter((t) => links.some((l) => l.link!.endsWith(t.token)));
    expect(tokens).toHaveLength(3);
    expect((await provisioner!.batch(batchId).report()).map((r) => r.outcome)).toEqual(['created', 'created', 'created']);
  });

  it('a resend that overtakes a completion: the replaced token, stored late, is deleted again', async () => {
    const { dify, good, batchId } = await batchWhileDifyRedisIsDown('overtaken');
    // A sweep reads the waiting records …
    const page = await pendingInvitations(env.db, {});
    expect(page).toHaveLength(3);
    // … a resend replaces them and stores fresh tokens …
    await provisioner!.close();
    provisioner = await createProvisioner({ ...env.config, invitations: good });
    expect(await provisioner.resendInvitations(batchId)).toEqual({ resent: 3, skipped: 0, withheld: 0 });
    // … then the sweep stores what it read.
    const { inviter, close } = openInviter(requireInvitations({ ...env.config, invitations: good }), 'D');
    try {
      expect(await inviter.completeRecorded(env.db, page)).toBe(0);
    } finally {
      close();
    }
    const ids = new Set(page.map((p) => p.tenant_id));
    const tokens = (await difyTokens([dify])).filter((t) => ids.has((JSON.parse(t.value) as { workspace_id: string }).workspace_id));
    const links = await reveal(batchId, 'links.csv');
    expect(tokens.map((t) => t.token).sort()).toEqual(links.map((l) => new URL(l.link!).searchParams.get('token')).sort());
    for (const p of page) expect(tokens.map((t) => t.token)).not.toContain(p.pending_token);
  });

  it('a completion that moved nothing hands no link on: a second completion, or one a resend overtook, mails nothing', async () => {
    const { good, batchId } = await batchWhileDifyRedisIsDown('moved-nothing');
    const page = await pendingInvitations(env.db, {});
    expect(page).toHaveLength(3);
    const handed: string[] = [];
    const { inviter, close } = openInviter(requireInvitations({ ...env.config, invitations: good }), 'D', {
      onIssued: (i) => void handed.push(i.email),
    });
    try {
      // The sweep and the row's rerun both read the same pending records: the first moves them.
      expect(await inviter.completeRecorded(env.db, page)).toBe(3);
      expect(handed.sort()).toEqual(['new-member@example.com', 'new-owner@example.com', 'second-new@example.com']);
      expect(await inviter.completeRecorded(env.db, page)).toBe(0);
      expect(handed).toHaveLength(3);
      // A resend replaces them; a completion of what was read before hands on nothing either.
      await provisioner!.close();
      provisioner = await createProvisioner({ ...env.config, invitations: good });
      const page2 = await pendingInvitations(env.db, {});
      expect(page2).toHaveLength(0);
      expect(await provisioner.resendInvitations(batchId)).toEqual({ resent: 3, skipped: 0, withheld: 0 });
      expect(await inviter.completeRecorded(env.db, page)).toBe(0);
      expect(handed).toHaveLength(3);
    } finally {
      close();
    }
  });

  it("Dify's Redis behind a Sentinel, in its REDIS_DB: one token per created person on the master", async () => {
    env = await createTestEnv();
    sentinel = await startSentinel(join(env.dir, 'sentinel'));
    const master = new Redis({ host: '127.0.0.1', port: await sentinel.masterPort(), db: 4 });
    difyRedis = master;
    const invitations: InvitationSettings = {
      redis: { kind: 'sentinel', sentinels: [{ host: '127.0.0.1', port: sentinel.sentinel.port }], name: sentinel.name, db: 4 },
      keyPrefix: '',
      expiryHours: HOURS,
      consoleWebUrl: CONSOLE,
    };
    const { batchId } = await runBatch({ ...env.config, invitations }, CSV, 'sentinel');
    const tokens = await difyTokens([master]);
    expect(tokens).toHaveLength(3);
    expect(tokens.every((t) => t.key === `member_invite:token:${t.token}`)).toBe(true);
    const links = await reveal(batchId, 'links.csv');
    expect(links.map((l) => new URL(l.link!).searchParams.get('token')).sort()).toEqual(tokens.map((t) => t.token).sort());
    for (const t of tokens) expect(await resolvesLikeDify(t.value)).toBeDefined();
  });

  it("--resend on a Redis Cluster: fresh tokens for people still pending, their old ones (ours and Dify's) deleted, activated people left alone", async () => {
    env = await createTestEnv({
      seedSql: `INSERT INTO accounts (name, email, status) VALUES ('p', 'still-pending@example.com', 'pending');`,
    });
    cluster = await startCluster(join(env.dir, 'cluster'));
    const nodes = cluster.nodes.map((n) => new Redis({ port: n.port, host: '127.0.0.1' }));
    difyRedis = nodes;
    const invitations: InvitationSettings = {
      redis: { kind: 'cluster', nodes: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })) },
      keyPrefix: 'acme',
      expiryHours: HOURS,
      consoleWebUrl: CONSOLE,
    };
    const config = { ...env.config, invitations };
    const csv = [CSV, 'Umbrella,still-pending@example.com,'].join('\n');
    const { batchId } = await runBatch(config, csv, 'resend', { invitePending: true });
    const first = await difyTokens(nodes);
    // Spread over the cluster's masters, one per person (the existing pending owner too, with --invite-pending).
    expect(first).toHaveLength(4);
    expect(first.every((t) => t.key.startsWith('acme:member_invite:token:'))).toBe(true);
    const links = await reveal(batchId, 'first.csv');
    expect(links).toHaveLength(4);

    // One person activates; for another, Dify's console issued a token of its own meanwhile.
    await env.db.query(`UPDATE accounts SET status = 'active' WHERE email = 'new-member@example.com'`);
    const activated = first.find((t) => t.value.includes('new-member@example.com'))!;
    const other = first.find((t) => t.value.includes('second-new@example.com'))!;
    const consoleKey = 'acme:member_invite:token:00000000-0000-4000-8000-000000000000';
    const clusterClient = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
    try {
      await clusterClient.setex(consoleKey, 3600, other.value);
      const resent = await provisioner!.resendInvitations(batchId);
      expect(resent).toEqual({ resent: 3, skipped: 1, withheld: 0 });
      const after = await difyTokens(nodes);
      // The activated person's token is untouched; everyone else has exactly one, a new one.
      expect(after).toHaveLength(4);
      expect(after.map((t) => t.token)).toContain(activated.token);
      for (const t of first.filter((f) => f.token !== activated.token)) expect(after.map((a) => a.token)).not.toContain(t.token);
      expect(await clusterClient.exists(consoleKey)).toBe(0);
      const fresh = await reveal(batchId, 'fresh.csv');
      expect(fresh.map((l) => l.email).sort()).toEqual(['new-owner@example.com', 'second-new@example.com', 'still-pending@example.com']);
      for (const l of fresh) {
        const token = new URL(l.link!).searchParams.get('token')!;
        const t = after.find((a) => a.token === token)!;
        expect(await resolvesLikeDify(t.value)).toBeDefined();
        // The fields Dify 1.15+ reads from a resent token: still a set-password link with the
        // person's role (requires_setup false would use the link up without activating them).
        const value = JSON.parse(t.value) as { email: string; role: string; requires_setup: boolean };
        expect(value.email).toBe(l.email);
        expect(value.requires_setup).toBe(true);
        expect(value.role).toBe(l.role);
        expect(t.value).toMatch(/, "role": "(owner|editor|normal|admin)", "requires_setup": true\}$/);
      }
    } finally {
      clusterClient.disconnect();
    }
  });
});

/**
 * Two customers' batches on one Dify (accounts are global: a link sets the person's password for
 * every workspace they are in). A link goes only with the person's home workspace — the only one
 * they are in, or the one they own (docs/security.md) — whatever the other customer's rows say.
 */
describe('invitations never cross customers', () => {
  async function world() {
    env = await createTestEnv();
    const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    difyRedis = dify;
    const config = { ...env.config, invitations: singleDify(`dify-${env.name}`) };
    return { dify, config };
  }
  const account = async (email: string) =>
    (await env.db.query<{ id: string }>(`SELECT id FROM accounts WHERE email = $1`, [email])).rows[0]!.id;
  const workspace = async (batchId: string, line: number) =>
    (
      await env.db.query<{ id: string }>(`SELECT tenant_id AS id FROM dify_provision.rows WHERE batch_id = $1 AND line = $2`, [
        batchId,
        line,
      ])
    ).rows[0]!.id;
  /** The (account, workspace) of every token in Dify's Redis. */
  const tokensOf = async (dify: Redis, accountId: string) =>
    (await difyTokens([dify]))
      .map((t) => ({ token: t.token, ...(JSON.parse(t.value) as { account_id: string; workspace_id: string }) }))
      .filter((t) => t.account_id === accountId);
  /** `secrets --invites --by-workspace`: each file's rows, by workspace id. */
  async function revealByWorkspace(batchId: string, name: string): Promise<Map<string, Record<string, string>[]>> {
    const dir = join(env.dir, name);
    await provisioner!.revealInvitations(batchId, PRIVATE, dir, { byWorkspace: true });
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const out = new Map<string, Record<string, string>[]>();
    for (const f of await readdir(dir)) {
      expect((await stat(join(dir, f))).mode & 0o777).toBe(0o600);
      const [header, ...lines] = (await readFile(join(dir, f), 'utf8')).trim().split('\n');
      const cols = header!.split(',');
      out.set(
        f.replace(/\.csv$/, ''),
        lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v]))),
      );
    }
    return out;
  }

  it("--invite-pending: customer B's rows naming A's pending owner and member get no link for them (links file, resend, Dify's Redis), A's links for them are revoked, and the rows say so", async () => {
    const { dify, config } = await world();
    // Customer A: a new owner and a new member, each with their link (revealed later, by A).
    await runBatch(config, 'workspace_name,owner_email,members\nA Corp,a-owner@example.com,a-member@example.com:editor', 'cust-a');
    const aOwner = await account('a-owner@example.com');
    const aMember = await account('a-member@example.com');
    const wA = await workspace('cust-a', 1);
    expect((await tokensOf(dify, aOwner)).map((t) => t.workspace_id)).toEqual([wA]);

    // Customer B's batch re-invites still-pending people: A's owner as a member, A's member as owner.
    await runBatch(
      config,
      'workspace_name,owner_email,members\nB Corp,b-owner@example.com,a-owner@example.com:admin\nB Two,a-member@example.com,',
      'cust-b',
      { invitePending: true },
    );
    const wB = await workspace('cust-b', 1);
    const wB2 = await workspace('cust-b', 2);
    // Both joined B's workspaces (B asked for it) …
    const { rows: joins } = await env.db.query<{ account_id: string; tenant_id: string; role: string }>(
      `SELECT account_id, tenant_id, role FROM tenant_account_joins WHERE account_id = ANY($1::uuid[]) ORDER BY role`,
      [[aOwner, aMember]],
    );
    expect(joins).toContainEqual({ account_id: aOwner, tenant_id: wB, role: 'admin' });
    expect(joins).toContainEqual({ account_id: aMember, tenant_id: wB2, role: 'owner' });
    // … but no token of theirs names a workspace of B, and B's links are B's owner's only.
    for (const id of [aOwner, aMember]) expect((await tokensOf(dify, id)).filter((t) => t.workspace_id !== wA)).toEqual([]);
    const bFiles = await revealByWorkspace('cust-b', 'b-links');
    expect([...bFiles.keys()]).toEqual([wB]);
    expect(bFiles.get(wB)!.map((l) => l.email)).toEqual(['b-owner@example.com']);
    // The rows say so.
    const bReport = await provisioner!.batch('cust-b').report();
    expect(bReport[0]!.invitations).toMatch(/^a-owner@example\.com: no link — in another workspace too/);
    expect(bReport[1]!.invitations).toMatch(/^a-member@example\.com: no link — in another workspace too/);
    // invite --resend of B: a fresh link for B's owner only.
    expect(await provisioner!.resendInvitations('cust-b')).toEqual({ resent: 1, skipped: 0, withheld: 0 });
    for (const id of [aOwner, aMember]) expect((await tokensOf(dify, id)).filter((t) => t.workspace_id !== wA)).toEqual([]);
    expect((await reveal('cust-b', 'b-resent.csv')).map((l) => l.email)).toEqual(['b-owner@example.com']);

    // A's owner and member are each in a workspace of B now: neither has a home, so A's links for
    // them are revoked too (B can cancel a link, never obtain one): none left in Dify's Redis, none
    // to reveal, and A's row says why.
    expect(await tokensOf(dify, aMember)).toEqual([]);
    expect(await tokensOf(dify, aOwner)).toEqual([]);
    await expect(revealByWorkspace('cust-a', 'a-links')).rejects.toThrow();
    const aRow = (await provisioner!.batch('cust-a').report())[0]!.invitations;
    expect(aRow).toMatch(/a-owner@example\.com: revoked: the person was added to another workspace \(batch cust-b, line 1\)/);
    expect(aRow).toMatch(/a-member@example\.com: revoked: the person was added to another workspace \(batch cust-b, line 2\)/);
  });

  it("pre-hijack: B's row creating a future owner's account loses that link (in Dify's Redis too) when the owner's own batch comes; B can't get it back", async () => {
    const { dify, config } = await world();
    // B creates the account of A's future owner as a member, and reveals its link at once.
    await runBatch(config, 'workspace_name,owner_email,members\nB Corp,b-owner@example.com,future@example.com:normal', 'b-1');
    const future = await account('future@example.com');
    const bLinks = await reveal('b-1', 'b-1.csv');
    const stolen = bLinks.find((l) => l.email === 'future@example.com')!;
    const stolenToken = new URL(stolen.link!).searchParams.get('token')!;
    expect(stolen.workspace_id).toBe(await workspace('b-1', 1));
    expect((await tokensOf(dify, future)).map((t) => t.token)).toEqual([stolenToken]);
    // And one as the owner of another workspace of B (its link not revealed yet).
    await runBatch(config, 'workspace_name,owner_email,members\nB Two,future-owner@example.com,b-two@example.com:normal', 'b-2');
    const futureOwner = await account('future-owner@example.com');
    expect(await tokensOf(dify, futureOwner)).toHaveLength(1);

    // A's own batch makes both owners of A's workspaces (their accounts exist: nothing created).
    await runBatch(config, 'workspace_name,owner_email,members\nA Corp,future@example.com,\nA Two,future-owner@example.com,', 'cust-a');
    const wA = await workspace('cust-a', 1);
    expect(
      (await env.db.query(`SELECT 1 FROM tenant_account_joins WHERE account_id = $1 AND tenant_id = $2 AND role = 'owner'`, [future, wA]))
        .rows,
    ).toHaveLength(1);
    // B's links for them no longer work: their tokens are gone from Dify's Redis …
    expect(await tokensOf(dify, future)).toEqual([]);
    expect(await tokensOf(dify, futureOwner)).toEqual([]);
    expect(await dify.exists(`dify-${env.name}:member_invite:token:${stolenToken}`, `member_invite:token:${stolenToken}`)).toBe(0);
    // … B's unrevealed one is never revealed, and B's resend issues none again.
    const b2 = await revealByWorkspace('b-2', 'b-2');
    expect([...b2.values()].flat().map((l) => l.email)).toEqual(['b-two@example.com']);
    expect(await provisioner!.resendInvitations('b-1')).toEqual({ resent: 1, skipped: 0, withheld: 0 });
    expect(await provisioner!.resendInvitations('b-2')).toEqual({ resent: 1, skipped: 0, withheld: 0 });
    expect(await tokensOf(dify, future)).toEqual([]);
    expect(await tokensOf(dify, futureOwner)).toEqual([]);
    expect((await reveal('b-1', 'b-1-resent.csv')).map((l) => l.email)).toEqual(['b-owner@example.com']);
    // B's reports say what was revoked; A's rows say why they got no link (not in a file: in
    // B's workspace too, a link would open it as well).
    const b1 = await provisioner!.batch('b-1').report();
    expect(b1[0]!.invitations).toMatch(/^future@example\.com: revoked: the person was added to another workspace \(batch cust-a, line 1\)/);
    const a = await provisioner!.batch('cust-a').report();
    expect(a.map((r) => r.outcome)).toEqual(['created', 'created']);
    expect(a[0]!.invitations).toMatch(/^future@example\.com: no link — in another workspace too/);
    expect(a[1]!.invitations).toMatch(/^future-owner@example\.com: no link — in another workspace too/);
    await expect(provisioner!.revealInvitations('cust-a', PRIVATE, join(env.dir, 'a.csv'))).rejects.toThrow(/no invitations/);
  });
});
