// Attacks on "invitation links never cross customers" (docs/security.md) that the first reviews
// did not try: spellings of one person's email, two customers' batches at the same moment, a
// person who joins another workspace in Dify's console after B's link was revealed, and apply's
// paths. Customer B controls B's rows and changes files and receives B's links files; each test
// performs the attack against real Redis and PostgreSQL.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import type { PoolClient } from 'pg';
import { describe, expect, inject, it } from 'vitest';
import type { InvitationSettings } from '../../src/config/dify-env.js';
import { createProvisioner, type ChangeInput, type Provisioner, type WorkspaceInput } from '../../src/provisioner.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { runLoggedUntilDone, waitUntilDone } from '../helpers/batch.js';
import { until } from '../helpers/cli-world.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { difyInvitationSettings, operatorPems } from '../helpers/dify-invitations.js';
import { closeEachTest } from '../helpers/world.js';

const DIFY_DB = 13;
const { PUBLIC, PRIVATE } = operatorPems();

let env: TestEnv | undefined;
let provisioner: Provisioner | undefined;
let dify: Redis | undefined;
let held: PoolClient | undefined;
closeEachTest(
  () => ({ held, provisioner, dify, env }),
  (none) => ({ held, provisioner, dify, env } = none),
);

async function world(): Promise<TestEnv['config'] & { invitations: InvitationSettings }> {
  env = await createTestEnv();
  dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
  const config = { ...env.config, invitations: difyInvitationSettings(DIFY_DB, `dify-${env.name}`) };
  provisioner = await createProvisioner(config);
  return config;
}

type Opts = { invite?: boolean; invitePending?: boolean };
async function ingest(config: TestEnv['config'], rows: WorkspaceInput[], batchId: string, opts: Opts = { invite: true }) {
  await provisioner!.enqueue(rows, {
    batchId,
    createMissingOwners: true,
    ...(opts.invite ? { invite: true, sealTo: PUBLIC } : {}),
    ...(opts.invitePending ? { invitePending: true } : {}),
  });
  await runLoggedUntilDone(env!, config, [batchId]);
}

async function apply(config: TestEnv['config'], rows: ChangeInput[], batchId: string) {
  await provisioner!.apply(rows, {
    batchId,
    createMissingOwners: true,
    invite: true,
    sealTo: PUBLIC,
    retry: { attempts: 2, backoffMs: 50 },
  });
  await runLoggedUntilDone(env!, config, [batchId]);
  return provisioner!.batch(batchId).report();
}

const accountId = async (email: string) =>
  (await env!.db.query<{ id: string }>(`SELECT id FROM accounts WHERE email = $1`, [email])).rows[0]!.id;
const workspaceOf = async (batchId: string, line: number) =>
  (
    await env!.db.query<{ id: string }>(`SELECT tenant_id AS id FROM dify_provision.rows WHERE batch_id = $1 AND line = $2`, [
      batchId,
      line,
    ])
  ).rows[0]!.id;
const accountCount = async () => (await env!.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM accounts`)).rows[0]!.n;

/** Every token in Dify's Redis naming this account: the workspace it opens. */
async function tokensOf(account: string): Promise<{ token: string; workspace: string }[]> {
  const out = [];
  for (const key of await dify!.keys(`dify-${env!.name}:member_invite:token:*`)) {
    const v = await dify!.get(key);
    if (!v) continue;
    const data = JSON.parse(v) as { account_id: string; workspace_id: string };
    if (data.account_id === account) out.push({ token: key.split(':').pop()!, workspace: data.workspace_id });
  }
  return out;
}

/** `secrets --invites` of a batch: its links file's rows (none if it has nothing to reveal). */
async function revealed(batchId: string, name: string): Promise<Record<string, string>[]> {
  const out = join(env!.dir, name);
  try {
    await provisioner!.revealInvitations(batchId, PRIVATE, out);
  } catch {
    return [];
  }
  const [header, ...lines] = (await readFile(out, 'utf8')).trim().split('\n');
  const cols = header!.split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v])));
}

/** A's side gives `account` a join in A's workspace in a transaction left open (held), as a worker or Dify's console does. */
async function joinHeldOpen(workspace: string, account: string): Promise<void> {
  held = await env!.db.connect();
  await held.query('BEGIN');
  // What a worker's transaction does (checkLocked's row lock, then the join); Dify's console writes the same join.
  await held.query(`SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, [account]);
  await held.query(`INSERT INTO tenant_account_joins (tenant_id, account_id, role) VALUES ($1, $2, 'normal')`, [workspace, account]);
}

/** Some other session waits on a row lock (the held transaction's). */
async function someoneWaitsOnALock(): Promise<boolean> {
  const { rows } = await env!.db.query(
    `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
  );
  return rows.length > 0;
}

describe("spellings of A's person's email in B's files (latest Dify: normalised emails)", () => {
  it("B's rows and changes name A's pending owner as Kim.X+b@GoogleMail.com, K.I.M.X@gmail.com, kim.x+c@gmail.com: no second account, no link for B; A's link is revoked and A's report says by which row; look-alikes are refused", async () => {
    const config = await world();
    await ingest(config, [{ workspace_name: 'A Corp', owner_email: 'kimx@gmail.com' }], 'cust-a');
    const kim = await accountId('kimx@gmail.com');
    const wA = await workspaceOf('cust-a', 1);
    expect((await tokensOf(kim)).map((t) => t.workspace)).toEqual([wA]);
    const before = await accountCount();

    // B: the same person in three spellings Dify counts as one (and Gmail delivers to one mailbox).
    await ingest(
      config,
      [
        { workspace_name: 'B Corp', owner_email: 'b-owner@example.com', members: 'Kim.X+b@GoogleMail.com:admin' },
        { workspace_name: 'B Two', owner_email: ' K.I.M.X@gmail.com ' },
        { workspace_name: 'B Spare', owner_email: 'b-spare@example.com' },
      ],
      'cust-b',
      { invite: true, invitePending: true },
    );
    const bChanges = await apply(
      config,
      [{ action: 'add_member', workspace_id: await workspaceOf('cust-b', 3), email: 'kim.x+c@gmail.com', role: 'normal' }],
      'b-changes',
    );
    // Added as the account Dify knows (none created), with no link.
    expect(bChanges[0]).toMatchObject({ outcome: 'applied', accountsCreated: null });
    // Look-alikes are not email addresses here: rejected at reading, naming the field.
    await provisioner!.enqueue(
      [
        { workspace_name: 'B Three', owner_email: 'ｋimx@gmail.com' },
        { workspace_name: 'B Four', owner_email: 'b-owner@example.com', members: 'kіmx@gmail.com:normal' },
      ],
      { batchId: 'b-lookalikes', createMissingOwners: true, invite: true, sealTo: PUBLIC },
    );
    const lookalikes = await provisioner!.batch('b-lookalikes').report();
    expect(lookalikes.map((r) => r.outcome)).toEqual(['rejected', 'rejected']);
    expect(lookalikes[0]!.error).toMatch(/owner_email/);
    expect(lookalikes[1]!.error).toMatch(/members/);

    // One account (B's owners are new), joined to A's and B's workspaces; no token of it opens any
    // workspace (A's was revoked: in two workspaces, the person has no home), none for B to reveal.
    expect(await accountCount()).toBe(before + 2);
    const { rows: joins } = await env!.db.query(`SELECT count(*)::int AS n FROM tenant_account_joins WHERE account_id = $1`, [kim]);
    expect(joins[0].n).toBe(4);
    expect(await tokensOf(kim)).toEqual([]);
    expect((await revealed('cust-b', 'b.csv')).map((l) => l.email)).toEqual(['b-owner@example.com', 'b-spare@example.com']);
    expect(await revealed('b-changes', 'b-changes.csv')).toEqual([]);
    await expect(provisioner!.resendInvitations('cust-b')).resolves.toEqual({ resent: 2, skipped: 0, withheld: 0 });
    expect(await tokensOf(kim)).toEqual([]);
    expect(await revealed('cust-a', 'a.csv')).toEqual([]);
    const a = await provisioner!.batch('cust-a').report();
    expect(a[0]!.invitations).toMatch(/^kimx@gmail\.com: revoked: the person was added to another workspace \(batch cust-b, line [12]\)/);
  });
});

describe('two customers at the same moment', () => {
  it("A's and B's batches naming the same new people, in both orders, run together: one account each, and no token of theirs is left opening any workspace", async () => {
    const config = await world();
    const people = ['p1@x.example', 'p2@x.example', 'p3@x.example', 'p4@x.example'];
    const a: WorkspaceInput[] = people.map((p, i) =>
      i % 2 === 0
        ? { workspace_name: `A ${i}`, owner_email: p }
        : { workspace_name: `A ${i}`, owner_email: `a${i}@a.example`, members: `${p}:editor` },
    );
    const b: WorkspaceInput[] = [...people]
      .reverse()
      .map((p, i) =>
        i % 2 === 0
          ? { workspace_name: `B ${i}`, owner_email: `b${i}@b.example`, members: `${p.toUpperCase()}:normal` }
          : { workspace_name: `B ${i}`, owner_email: p },
      );
    await provisioner!.enqueue(a, { batchId: 'cust-a', createMissingOwners: true, invite: true, sealTo: PUBLIC });
    await provisioner!.enqueue(b, { batchId: 'cust-b', createMissingOwners: true, invite: true, sealTo: PUBLIC, invitePending: true });
    const worker = await runWorker(config, {
      concurrency: 8,
      logger: pino({ level: 'silent' }),
      sweep: { intervalMs: 200, idleSeconds: 0 },
    });
    try {
      await waitUntilDone(env!, ['cust-a', 'cust-b']);
    } finally {
      await worker.close();
    }
    for (const p of people) {
      const { rows } = await env!.db.query(`SELECT id FROM accounts WHERE lower(email) = $1`, [p]);
      expect(rows, p).toHaveLength(1);
      // In two customers' workspaces: no link of theirs may open anything (revoked ones are gone after the commit).
      expect(await tokensOf(rows[0].id), p).toEqual([]);
    }
    const links = [...(await revealed('cust-a', 'a.csv')), ...(await revealed('cust-b', 'b.csv'))].map((l) => l.email);
    for (const p of people) expect(links).not.toContain(p);
  });

  it("`invite <batch>` of B racing A's transaction that joins B's new member to A's workspace: B's row gets no link for them", async () => {
    const config = await world();
    // B's batch created a member and no invitations yet; A has a workspace.
    await ingest(
      config,
      [{ workspace_name: 'B Corp', owner_email: 'b-owner@example.com', members: 'shared@x.example:normal' }],
      'cust-b',
      {},
    );
    await ingest(config, [{ workspace_name: 'A Corp', owner_email: 'a-owner@example.com' }], 'cust-a', {});
    const shared = await accountId('shared@x.example');
    const wA = await workspaceOf('cust-a', 1);
    // A's transaction has joined the person and not committed yet when B's `invite` reads them.
    await joinHeldOpen(wA, shared);
    // What the library's hook hands on (a platform may route each link to the batch's customer).
    const handed: { email: string; mailOnly: boolean }[] = [];
    const invite = provisioner!.inviteUninvited('cust-b', {
      sealTo: PUBLIC,
      send: false,
      onIssued: (i) => void handed.push({ email: i.email, mailOnly: i.mailOnly }),
    });
    await until(someoneWaitsOnALock, "B's invite waits for A's transaction");
    await held!.query('COMMIT');
    held!.release();
    held = undefined;
    // The person is in A's workspace too: B's owner gets a link, the person none.
    expect(await invite).toEqual({ invited: 1, mailOnly: 0, withheld: 1 });
    expect(handed).toEqual([{ email: 'b-owner@example.com', mailOnly: false }]);
    expect(await tokensOf(shared)).toEqual([]);
    expect((await revealed('cust-b', 'b.csv')).map((l) => l.email)).toEqual(['b-owner@example.com']);
  });
});

describe("a worker that lost Dify's Redis between its COMMIT and the SETEX (or was killed there)", () => {
  it("B's token for the person waits in our schema; A adds the person meanwhile: no sweep ever stores it, B's report says it was revoked", async () => {
    const config = await world();
    const down = {
      ...config,
      invitations: { ...config.invitations, redis: { kind: 'node' as const, host: '127.0.0.1', port: 1, db: DIFY_DB } },
    };
    await provisioner!.enqueue([{ workspace_name: 'B Corp', owner_email: 'b-owner@example.com', members: 'waiting@x.example:normal' }], {
      batchId: 'cust-b',
      createMissingOwners: true,
      invite: true,
      sealTo: PUBLIC,
    });
    await runLoggedUntilDone(env!, down, ['cust-b']);
    const waiting = await accountId('waiting@x.example');
    const bOwner = await accountId('b-owner@example.com');
    const { rows: pending } = await env!.db.query(`SELECT 1 FROM dify_provision.invitations WHERE pending_token IS NOT NULL`);
    expect(pending).toHaveLength(2);
    // A's batch adds the person (existing, pending) before any worker stored B's tokens (its
    // worker's sweep leaves tokens younger than an hour to whoever is storing them).
    await provisioner!.enqueue([{ workspace_name: 'A Corp', owner_email: 'a-owner@example.com', members: 'waiting@x.example:editor' }], {
      batchId: 'cust-a',
      createMissingOwners: true,
    });
    const aWorker = await runWorker(config, { logger: pino({ level: 'silent' }), sweep: { intervalMs: 60_000, idleSeconds: 3600 } });
    try {
      await waitUntilDone(env!, ['cust-a']);
    } finally {
      await aWorker.close();
    }
    const { rows: stillWaiting } = await env!.db.query(`SELECT 1 FROM dify_provision.invitations WHERE stored_at IS NULL`);
    expect(stillWaiting).toHaveLength(2);
    // A worker that reaches Dify's Redis sweeps: B's owner's token is stored, the person's never.
    const worker = await runWorker(config, {
      concurrency: 1,
      logger: pino({ level: 'silent' }),
      sweep: { intervalMs: 200, idleSeconds: 0 },
    });
    try {
      await until(async () => (await tokensOf(bOwner)).length === 1, "the sweep stores B's owner's waiting token", 20_000);
    } finally {
      await worker.close();
    }
    expect(await tokensOf(waiting)).toEqual([]);
    expect((await revealed('cust-b', 'b.csv')).map((l) => l.email)).toEqual(['b-owner@example.com']);
    const b = await provisioner!.batch('cust-b').report();
    expect(b[0]!.invitations).toMatch(/^waiting@x\.example: revoked: the person was added to another workspace \(batch cust-a, line 1\)/);
  });
});

describe("a person joins A's workspace in Dify's console after B's link was revealed", () => {
  it("the workers' sweep revokes B's link: its token is gone from Dify's Redis, and B's report says so", async () => {
    const config = await world();
    await ingest(config, [{ workspace_name: 'A Corp', owner_email: 'a-owner@example.com' }], 'cust-a', {});
    // B creates the person's account and reveals the link at once (B's link, at home in B's workspace).
    await ingest(config, [{ workspace_name: 'B Corp', owner_email: 'b-owner@example.com', members: 'later@x.example:normal' }], 'cust-b');
    const later = await accountId('later@x.example');
    const wA = await workspaceOf('cust-a', 1);
    const link = (await revealed('cust-b', 'b.csv')).find((l) => l.email === 'later@x.example')!;
    const token = new URL(link.link!).searchParams.get('token')!;
    expect((await tokensOf(later)).map((t) => t.token)).toEqual([token]);
    // A's admin adds the person in Dify's console (create_tenant_member: the join, nothing of ours).
    await env!.db.query(`INSERT INTO tenant_account_joins (tenant_id, account_id, role) VALUES ($1, $2, 'normal')`, [wA, later]);
    // Any worker's sweep takes the link back: B must not set the password of a member of A.
    const worker = await runWorker(config, {
      concurrency: 1,
      logger: pino({ level: 'silent' }),
      sweep: { intervalMs: 200, idleSeconds: 0 },
    });
    try {
      await until(async () => (await tokensOf(later)).length === 0, "B's link revoked by the sweep", 20_000);
    } finally {
      await worker.close();
    }
    const b = await provisioner!.batch('cust-b').report();
    expect(b[0]!.invitations).toMatch(/^later@x\.example: revoked: the person joined another workspace/);
    expect(await provisioner!.resendInvitations('cust-b')).toEqual({ resent: 1, skipped: 0, withheld: 0 });
    expect(await tokensOf(later)).toEqual([]);
  });
});

describe("apply's paths", () => {
  it("B's new member made owner of A's workspace by A's changes, then B removes and re-adds them with --invite: B never holds a working link for them", async () => {
    const config = await world();
    await ingest(config, [{ workspace_name: 'A Corp', owner_email: 'a-owner@example.com' }], 'cust-a', {});
    await ingest(config, [{ workspace_name: 'B Corp', owner_email: 'b-owner@example.com' }], 'cust-b', {});
    const wA = await workspaceOf('cust-a', 1);
    const wB = await workspaceOf('cust-b', 1);
    // B's changes create the person with a link (at home: only in B's workspace), revealed at once.
    await apply(config, [{ action: 'add_member', workspace_id: wB, email: 'boss@x.example', role: 'admin' }], 'b-1');
    const boss = await accountId('boss@x.example');
    expect((await revealed('b-1', 'b-1.csv')).map((l) => l.email)).toEqual(['boss@x.example']);
    // A's changes add them (still pending) and make them A's owner.
    const aReport = await apply(
      config,
      [
        { action: 'add_member', workspace_id: wA, email: 'boss@x.example', role: 'admin' },
        { action: 'transfer_owner', workspace_id: wA, email: 'boss@x.example' },
      ],
      'a-1',
    );
    expect(aReport.map((r) => r.outcome)).toEqual(['applied', 'applied']);
    expect(await tokensOf(boss)).toEqual([]);
    // B removes them and adds them again, asking for a link: none (they are A's owner).
    await apply(config, [{ action: 'remove_member', workspace_id: wB, email: 'boss@x.example' }], 'b-2');
    const again = await apply(config, [{ action: 'add_member', workspace_id: wB, email: 'boss@x.example', role: 'admin' }], 'b-3');
    expect(again[0]).toMatchObject({ outcome: 'applied' });
    expect(await tokensOf(boss)).toEqual([]);
    expect(await revealed('b-3', 'b-3.csv')).toEqual([]);
    await expect(provisioner!.resendInvitations('b-1')).rejects.toThrow(/no invitations/);
    expect(await tokensOf(boss)).toEqual([]);
  });
});
