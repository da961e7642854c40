// apply, the paths the first tests left out, against real Redis, PostgreSQL and SMTP:
// - add_member of a person with no account under --create-missing-owners --invite: the account
//   and join exactly as ingest makes them for a new member, Dify's token exactly as ingest
//   stores it, the link revealed with `secrets --invites`; --send-invites mails it;
// - a precondition changed in Dify between recording and running: answered from the database
//   when the row runs, never from the plan;
// - the rules across one file's rows, and a row that must wait for an earlier one;
// - the refusals and the action the first tests did not reach (two owners, restore);
// - --strict, and the bounds of what reading a file holds in memory (--max-rows, --max-bytes).
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { describe, expect, inject, it } from 'vitest';
import type { InvitationSettings, SmtpSettings } from '../../src/config/dify-env.js';
import { InputTooLargeError } from '../../src/common/errors.js';
import { StrictValidationError } from '../../src/input/input-rows.js';
import { jobIdFor } from '../../src/queue/contract.js';
import { createProvisioner, type ChangeInput, type Provisioner } from '../../src/provisioner.js';
import { runWorker } from '../../src/worker/run-worker.js';
import type { ReportRow } from '../../src/store/report.js';
import { csvOf, envQueue, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { until } from '../helpers/cli-world.js';
import { BANDS, type BandName } from '../helpers/dify-checks.js';
import { dumpRedis } from '../helpers/redis-dump.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp-server.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { CONSOLE, difyInvitationSettings, operatorPems } from '../helpers/dify-invitations.js';
import { closeEachTest } from '../helpers/world.js';

/** Dify's Redis: the tests' Redis server, a logical database of its own. */
const DIFY_DB = 12;
const HOURS = 5;
const { PUBLIC, PRIVATE } = operatorPems();

let env: TestEnv | undefined;
let provisioner: Provisioner | undefined;
let dify: Redis | undefined;
let smtp: TestSmtp | undefined;
closeEachTest(
  () => ({ provisioner, dify, smtp, env }),
  (none) => ({ provisioner, dify, smtp, env } = none),
);

function difySettings(e: TestEnv): InvitationSettings {
  return difyInvitationSettings(DIFY_DB, `dify-${e.name}`, { expiryHours: HOURS });
}

const W = Object.fromEntries(['W1', 'W4', 'W5'].map((w) => [w, randomUUID()])) as Record<string, string>;

/** Three workspaces made by ingest; with `invite`, its new member gets an invitation as ingest issues it. */
async function provisionWorld(e: TestEnv, config: TestEnv['config'], invite = false): Promise<void> {
  const rows = [
    {
      workspace_name: 'One',
      owner_email: 'owner1@example.com',
      members: 'owner2@example.com:admin;owner3@example.com:normal',
      workspace_id: W.W1!,
      external_id: 'cust-1',
    },
    {
      workspace_name: 'Four',
      owner_email: 'owner8@example.com',
      members: invite ? 'ingested.member@example.com:editor' : '',
      workspace_id: W.W4!,
      external_id: '',
    },
    {
      workspace_name: 'Five',
      owner_email: 'owner9@example.com',
      members: 'owner10@example.com:normal',
      workspace_id: W.W5!,
      external_id: '',
    },
  ];
  if (invite) {
    provisioner ??= await createProvisioner(config);
    await provisioner.enqueue(rows, { batchId: 'world', createMissingOwners: true, invite: true, sealTo: PUBLIC });
  } else await ingestCsv(e, csvOf(rows), 'world', { createMissingOwners: true });
  const [s] = await runUntilDone(e, ['world'], { config });
  expect(s!.counts.created).toBe(3);
}

async function joins(e: TestEnv, tenantId: string): Promise<Record<string, string>> {
  const { rows } = await e.db.query<{ email: string; role: string }>(
    `SELECT a.email, j.role FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.tenant_id = $1 ORDER BY a.email`,
    [tenantId],
  );
  return Object.fromEntries(rows.map((r) => [r.email, r.role]));
}

async function applyAndRun(e: TestEnv, config: TestEnv['config'], rows: ChangeInput[], batchId: string, opts = {}): Promise<ReportRow[]> {
  provisioner ??= await createProvisioner(config);
  await provisioner.apply(rows, { batchId, retry: { attempts: 2, backoffMs: 50 }, ...opts });
  const [s] = await runUntilDone(e, [batchId], { config });
  expect(s!.done).toBe(true);
  return provisioner.batch(batchId).report();
}

/** Every invitation token of this test's Dify (its key prefix) in Dify's Redis: its key, value and TTL. */
async function difyTokens(e: TestEnv): Promise<{ key: string; token: string; value: string; ttl: number }[]> {
  const out = [];
  for (const key of await dify!.keys(`dify-${e.name}:member_invite:token:*`)) {
    const value = await dify!.get(key);
    if (value !== null) out.push({ key, token: key.split(':').pop()!, value, ttl: await dify!.ttl(key) });
  }
  return out;
}

/** An account's row as Dify stores it, without what names the person or the moment (id, email, name, *_at). */
async function accountShape(e: TestEnv, email: string): Promise<Record<string, unknown>> {
  const { rows } = await e.db.query<{ a: Record<string, unknown> }>(`SELECT to_jsonb(a) AS a FROM accounts a WHERE email = $1`, [email]);
  expect(rows).toHaveLength(1);
  return Object.fromEntries(
    Object.entries(rows[0]!.a).filter(([k]) => !['id', 'email', 'name', 'normalized_email'].includes(k) && !k.endsWith('_at')),
  );
}

async function joinShape(e: TestEnv, email: string): Promise<Record<string, unknown>> {
  const { rows } = await e.db.query<{ j: Record<string, unknown> }>(
    `SELECT to_jsonb(j) AS j FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE a.email = $1`,
    [email],
  );
  expect(rows).toHaveLength(1);
  const j = rows[0]!.j;
  return {
    ...Object.fromEntries(Object.entries(j).filter(([k]) => !['id', 'tenant_id', 'account_id'].includes(k) && !k.endsWith('_at'))),
    ...('last_opened_at' in j ? { opened: j.last_opened_at !== null } : {}),
  };
}

describe.each(['1.13', 'latest'] as BandName[])('add_member --create-missing-owners --invite on band %s', (bandName) => {
  it("creates the person as ingest does, stores Dify's token as ingest does, and reveals the link once", async () => {
    env = await createTestEnv({ schema: bandName });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    await provisionWorld(e, config, true);
    const ingested = await difyTokens(e);
    expect(ingested).toHaveLength(1);

    const report = await applyAndRun(
      e,
      config,
      [
        { action: 'add_member', workspace_id: W.W1, email: 'added.member@example.com', role: 'editor' },
        // An existing account gets no link (it has a password already).
        { action: 'add_member', workspace_id: W.W1, email: 'owner13@example.com', role: 'normal' },
      ],
      'added',
      { createMissingOwners: true, invite: true, sealTo: PUBLIC },
    );
    expect(report.map((r) => [r.line, r.outcome, r.accountsCreated])).toEqual([
      [1, 'applied', ['added.member@example.com']],
      [2, 'applied', null],
    ]);
    // What else the change did is its detail; an applied row has no error.
    expect(report[0]!.detail).toMatch(/account created .*; invited/);
    expect(report[0]!.error).toBeNull();

    // The account and its join: what ingest wrote for its new member, column for column.
    expect(await accountShape(e, 'added.member@example.com')).toEqual(await accountShape(e, 'ingested.member@example.com'));
    expect(await accountShape(e, 'added.member@example.com')).toMatchObject({ status: 'pending' });
    expect(await joinShape(e, 'added.member@example.com')).toEqual(await joinShape(e, 'ingested.member@example.com'));

    // One more token in Dify's Redis, for the added person: ingest's, byte for byte, with their ids.
    const tokens = await difyTokens(e);
    expect(tokens).toHaveLength(2);
    const mine = tokens.find((t) => t.value.includes('added.member@example.com'))!;
    const theirs = ingested[0]!;
    const id = async (email: string) => (await e.db.query<{ id: string }>(`SELECT id FROM accounts WHERE email = $1`, [email])).rows[0]!.id;
    const ingestedId = await id('ingested.member@example.com');
    const addedId = await id('added.member@example.com');
    expect(mine.value).toBe(
      theirs.value.replace(ingestedId, addedId).replace('ingested.member@example.com', 'added.member@example.com').replace(W.W4!, W.W1!),
    );
    expect(JSON.parse(mine.value)).toMatchObject({ account_id: addedId, email: 'added.member@example.com', workspace_id: W.W1 });
    if (BANDS[bandName].band === 'D') expect(JSON.parse(mine.value)).toMatchObject({ role: 'editor', requires_setup: true });
    expect(mine.key).toBe(theirs.key.replace(theirs.token, mine.token));
    expect(mine.ttl).toBeGreaterThan(HOURS * 3600 - 600);
    expect(mine.ttl).toBeLessThanOrEqual(HOURS * 3600);

    // `secrets --invites added`: the one link, for that person and workspace, carrying that token.
    const out = join(e.dir, 'links.csv');
    expect(await provisioner!.revealInvitations('added', PRIVATE, out)).toBe(1);
    const [header, ...lines] = (await readFile(out, 'utf8')).trim().split('\n');
    const cols = header!.split(',');
    const links = lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v])));
    expect(links).toHaveLength(1);
    const url = new URL(links[0]!.link!);
    expect(`${url.origin}${url.pathname}`).toBe(`${CONSOLE}/activate`);
    expect(url.searchParams.get('email')).toBe('added.member@example.com');
    expect(url.searchParams.get('token')).toBe(mine.token);
    expect(links[0]).toMatchObject({ email: 'added.member@example.com', workspace_id: W.W1, role: 'editor' });

    // No token in our Redis, the report or our tables.
    let csv = '';
    for await (const c of provisioner!.batch('added').reportCsv()) csv += c;
    const ours = `${await dumpRedis(e.redis)}${csv}${JSON.stringify((await e.db.query(`SELECT * FROM dify_provision.invitations`)).rows)}`;
    expect(ours).not.toContain(mine.token);
  });
});

describe('add_member --send-invites', () => {
  it("mails the person it created one message, with the link whose token is in Dify's Redis", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    smtp = await startSmtp({ tls: 'none' });
    const mail: SmtpSettings = { host: '127.0.0.1', port: smtp.port, tls: 'none', from: 'Acme Platform <no-reply@acme.example>' };
    const config = { ...e.config, invitations: difySettings(e), mail };
    await provisionWorld(e, config);
    const report = await applyAndRun(
      e,
      config,
      [
        { action: 'add_member', workspace_id: W.W1, email: 'mailed.member@example.com', role: 'normal' },
        { action: 'add_member', workspace_id: W.W5, email: 'owner13@example.com', role: 'normal' },
      ],
      'mailed',
      { createMissingOwners: true, sendInvites: true, sealTo: PUBLIC },
    );
    expect(report.map((r) => [r.outcome, r.mail])).toEqual([
      ['applied', 'mailed.member@example.com: sent'],
      ['applied', null],
    ]);
    expect(smtp.received.map((r) => r.to)).toEqual([['mailed.member@example.com']]);
    const message = smtp.received[0]!.mail;
    expect(message.subject).toContain('"One"');
    const token = /[?&]token=([0-9a-f-]{36})/.exec(message.text ?? '')![1]!;
    expect(message.text).toContain(`${CONSOLE}/activate?email=${encodeURIComponent('mailed.member@example.com')}&token=${token}`);
    const stored = JSON.parse((await dify.get(`dify-${e.name}:member_invite:token:${token}`))!) as Record<string, string>;
    const { rows } = await e.db.query<{ id: string }>(`SELECT id FROM accounts WHERE email = 'mailed.member@example.com'`);
    expect(stored).toMatchObject({ account_id: rows[0]!.id, email: 'mailed.member@example.com', workspace_id: W.W1 });
  });
});

describe('a precondition changed in Dify between recording and running', () => {
  it('is answered from the database when the row runs, never from the plan', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    await provisionWorld(e, config);
    await e.db.query(`UPDATE accounts SET status = 'banned' WHERE email = 'owner14@example.com'`);
    const rows: ChangeInput[] = [
      { action: 'set_role', workspace_id: W.W1, email: 'owner2@example.com', role: 'editor' },
      { action: 'set_role', workspace_id: W.W1, email: 'owner3@example.com', role: 'editor' },
      { action: 'add_member', workspace_id: W.W4, email: 'owner13@example.com', role: 'normal' },
      { action: 'remove_member', workspace_id: W.W5, email: 'owner10@example.com' },
      { action: 'add_member', workspace_id: W.W5, email: 'owner14@example.com', role: 'normal' },
      { action: 'rename', workspace_id: W.W5, name: 'Five' },
    ];
    provisioner = await createProvisioner(config);
    const plan = await provisioner.planChanges(rows, { listRows: 10 });
    expect(plan.rows!.map((r) => `${r.line} ${r.verdict}`)).toEqual([
      '1 re-role',
      '2 re-role',
      '3 add',
      '4 remove',
      '5 refused',
      '6 unchanged',
    ]);
    // Recorded and queued; no worker runs yet.
    await provisioner.apply(rows, { batchId: 'meanwhile', retry: { attempts: 2, backoffMs: 50 } });
    // Meanwhile, in Dify's console: owner2 made the owner, owner3 removed, Four archived, owner10
    // removed, owner14 unbanned, Five renamed.
    await e.db.query(
      `UPDATE tenant_account_joins SET role = CASE role WHEN 'owner' THEN 'admin' ELSE 'owner' END
        WHERE tenant_id = $1 AND account_id IN (SELECT id FROM accounts WHERE email IN ('owner1@example.com', 'owner2@example.com'))`,
      [W.W1],
    );
    await e.db.query(
      `DELETE FROM tenant_account_joins WHERE account_id IN (SELECT id FROM accounts WHERE email IN ('owner3@example.com', 'owner10@example.com'))`,
    );
    await e.db.query(`UPDATE tenants SET status = 'archive' WHERE id = $1`, [W.W4]);
    await e.db.query(`UPDATE accounts SET status = 'active' WHERE email = 'owner14@example.com'`);
    await e.db.query(`UPDATE tenants SET name = 'Cinq' WHERE id = $1`, [W.W5]);

    await runUntilDone(e, ['meanwhile'], { config });
    const said = (await provisioner.batch('meanwhile').report()).map((r) => `${r.line} ${r.outcome} ${r.detail ?? ''}`);
    expect(said[0]).toMatch(/^1 failed email: owner2@example.com is the workspace's owner: transfer_owner gives ownership/);
    expect(said[1]).toMatch(/^2 failed email: owner3@example.com is not a member of this workspace/);
    expect(said[2]).toMatch(/^3 failed action: the workspace is archived: member changes are refused/);
    expect(said[3]).toBe('4 unchanged not a member of this workspace');
    expect(said[4]).toBe('5 applied ');
    expect(said[5]).toBe('6 applied ');
    expect(await joins(e, W.W1!)).toEqual({ 'owner1@example.com': 'admin', 'owner2@example.com': 'owner' });
    expect(await joins(e, W.W4!)).toEqual({ 'owner8@example.com': 'owner' });
    expect(await joins(e, W.W5!)).toEqual({ 'owner14@example.com': 'normal', 'owner9@example.com': 'owner' });
    expect((await e.db.query(`SELECT name FROM tenants WHERE id = $1`, [W.W5])).rows).toEqual([{ name: 'Five' }]);
  });
});

describe('a change batch applied without --create-missing-owners', () => {
  it('retry with it creates the person an add_member row names (pending, as Dify invites), and applies the row', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    await provisionWorld(e, config);
    provisioner = await createProvisioner(config);
    const batch = await provisioner.apply([{ action: 'add_member', workspace_id: W.W5, email: 'New.Person@example.com', role: 'editor' }], {
      batchId: 'late-person',
    });
    await runUntilDone(e, ['late-person'], { config });
    expect((await batch.report()).map((r) => [r.outcome, r.error])).toEqual([
      ['failed', expect.stringMatching(/^email: no Dify account has the email "New\.Person@example\.com"/)],
    ]);
    expect(await batch.retryFailed({ createMissingOwners: true })).toBe(1);
    await runUntilDone(e, ['late-person'], { config });
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['applied']);
    expect((await e.db.query(`SELECT status FROM accounts WHERE lower(email) = 'new.person@example.com'`)).rows).toEqual([
      { status: 'pending' },
    ]);
    expect(await joins(e, W.W5!)).toMatchObject({ 'new.person@example.com': 'editor' });
  });
});

describe('refusals and actions the first tests did not reach', () => {
  it('a workspace with two owners refuses a removal and a transfer; restore sets it normal once; a banned account is not added', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    await provisionWorld(e, config);
    // Two owners in One (a broken workspace); Four archived; owner14 banned.
    await e.db.query(
      `UPDATE tenant_account_joins SET role = 'owner' WHERE tenant_id = $1 AND account_id = (SELECT id FROM accounts WHERE email = 'owner2@example.com')`,
      [W.W1],
    );
    await e.db.query(`UPDATE tenants SET status = 'archive', updated_at = '2000-01-01' WHERE id = $1`, [W.W4]);
    await e.db.query(`UPDATE accounts SET status = 'banned' WHERE email = 'owner14@example.com'`);
    const rows: ChangeInput[] = [
      { action: 'remove_member', workspace_id: W.W1, email: 'owner3@example.com' },
      { action: 'restore', workspace_id: W.W4 },
      { action: 'add_member', workspace_id: W.W5, email: 'owner14@example.com', role: 'normal' },
    ];
    const report = await applyAndRun(e, config, rows, 'broken');
    const said = report.map((r) => `${r.line} ${r.outcome} ${r.error ?? ''}`);
    expect(said[0]).toMatch(/^1 failed action: the workspace has 2 owners, not one/);
    expect(said[1]).toBe('2 applied ');
    expect(said[2]).toMatch(/^3 failed email: .*owner14@example.com.*banned/);
    // The transfer to the same person in a file of its own (one change per person and workspace in a file).
    const transfer = await applyAndRun(
      e,
      config,
      [{ action: 'transfer_owner', external_id: 'cust-1', email: 'owner3@example.com' }],
      'broken-2',
    );
    expect(transfer.map((r) => `${r.line} ${r.outcome} ${r.error ?? ''}`)[0]).toMatch(
      /^1 failed action: the workspace has 2 owners, not one/,
    );
    expect(await joins(e, W.W1!)).toEqual({ 'owner1@example.com': 'owner', 'owner2@example.com': 'owner', 'owner3@example.com': 'normal' });
    expect(await joins(e, W.W5!)).toEqual({ 'owner10@example.com': 'normal', 'owner9@example.com': 'owner' });
    const { rows: four } = await e.db.query(`SELECT status, updated_at > '2000-01-02' AS touched FROM tenants WHERE id = $1`, [W.W4]);
    expect(four).toEqual([{ status: 'normal', touched: true }]);
    // Restore again: unchanged.
    const again = await applyAndRun(e, config, [{ action: 'restore', workspace_id: W.W4 }], 'restore-again');
    expect(again.map((r) => `${r.outcome} ${r.detail} ${r.error}`)).toEqual(['unchanged the workspace is not archived null']);
  });
});

describe('rows whose result depends on their order', () => {
  it('are refused at reading, naming the earlier line; nothing of them runs', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    await provisionWorld(e, config);
    const path = join(e.dir, 'changes.csv');
    await import('node:fs/promises').then((fs) =>
      fs.writeFile(
        path,
        [
          'action,workspace_id,external_id,email,role,name',
          `set_role,${W.W1},,owner2@example.com,editor,`,
          `set_role,${W.W1},,owner2@example.com,editor,`, // 3: the same row
          `remove_member,,cust-1,OWNER3@example.com,,`,
          `set_role,,cust-1,owner3@example.com,admin,`, // 5: the same person (by external_id, any case)
          `rename,${W.W5},,,,Cinq`,
          `rename,${W.W5},,,,Quinque`, // 7: a second rename
          `archive,${W.W4},,,,`,
          `add_member,${W.W4},,owner13@example.com,normal,`, // 9: a member change where the file archives
          `restore,${W.W4},,,,`, // 10: a second archive/restore
          `add_member,${W.W5},,owner13@example.com,normal,`,
          `archive,${W.W5},,,,`, // 12: archive where the file changes members
          `transfer_owner,${W.W5},,owner10@example.com,,`,
          `transfer_owner,${W.W5},,owner13@example.com,,`, // 14: a second transfer (and owner13 changed twice)
        ].join('\n') + '\n',
      ),
    );
    provisioner = await createProvisioner(config);
    await provisioner.applyFile(path, { batchId: 'order', retry: { attempts: 2, backoffMs: 50 } });
    await runUntilDone(e, ['order'], { config });
    const report = await provisioner.batch('order').report();
    const rejected = report.filter((r) => r.outcome === 'rejected').map((r) => `${r.line} ${r.error}`);
    expect(rejected).toEqual([
      '3 action: duplicate: line 2 has this change already',
      expect.stringMatching(/^5 email: line 4 changes this person in this workspace already \(remove_member\)/),
      '7 action: line 6 renames this workspace already',
      expect.stringMatching(/^9 action: line 8 archives or restores this workspace/),
      '10 action: line 8 archives or restores this workspace already',
      expect.stringMatching(/^12 action: line 11 changes this workspace's members/),
      expect.stringMatching(/^14 action: line 13 transfers this workspace's ownership already/),
    ]);
    expect(report.filter((r) => r.outcome !== 'rejected').map((r) => `${r.line} ${r.outcome}`)).toEqual([
      '2 applied',
      '4 applied',
      '6 applied',
      '8 applied',
      '11 applied',
      '13 applied',
    ]);
    expect(await joins(e, W.W5!)).toEqual({
      'owner10@example.com': 'owner',
      'owner13@example.com': 'normal',
      'owner9@example.com': 'admin',
    });
  });

  it("a transfer_owner to a person its file adds waits for that add_member's answer; a member change waits for its workspace's transfer", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    await provisionWorld(e, config);
    provisioner = await createProvisioner(config);
    await provisioner.apply(
      [
        { action: 'add_member', workspace_id: W.W5, email: 'owner13@example.com', role: 'admin' },
        { action: 'transfer_owner', workspace_id: W.W5, email: 'owner13@example.com' },
        { action: 'remove_member', workspace_id: W.W5, email: 'owner9@example.com' },
      ],
      { batchId: 'waits', retry: { attempts: 2, backoffMs: 50 } },
    );
    // The add_member's job taken out of the queue: the rows after it can only wait.
    const queue = await envQueue(e);
    const { rows: keys } = await e.db.query<{ line: number; idempotency_key: string }>(
      `SELECT line, idempotency_key FROM dify_provision.rows WHERE batch_id = 'waits' ORDER BY line`,
    );
    const jobOf = (line: number) => queue.getJob(jobIdFor('waits', keys[line - 1]!.idempotency_key));
    const add = (await jobOf(1))!;
    const [name, data, opts] = [add.name, add.data as unknown, add.opts];
    await add.remove();
    const worker = await runWorker(config, { concurrency: 2, logger: pino({ level: 'silent' }) });
    try {
      // Both later rows were taken up and left for later (back in the queue, delayed); a row that
      // ran instead ends the wait at once (and fails the check below).
      const left = new Set<number>();
      await until(async () => {
        for (const line of [2, 3]) if ((await (await jobOf(line))?.getState()) === 'delayed') left.add(line);
        const { rows } = await e.db.query(
          `SELECT 1 FROM dify_provision.rows WHERE batch_id = 'waits' AND outcome NOT IN ('queued', 'active')`,
        );
        return left.size === 2 || rows.length > 0;
      }, 'the transfer and the removal waiting');
      // Taken up (active), not answered; nothing written.
      const { rows } = await e.db.query(`SELECT line, outcome FROM dify_provision.rows WHERE batch_id = 'waits' ORDER BY line`);
      expect(rows).toEqual([
        { line: 1, outcome: 'queued' },
        { line: 2, outcome: 'active' },
        { line: 3, outcome: 'active' },
      ]);
      expect(await joins(e, W.W5!)).toEqual({ 'owner10@example.com': 'normal', 'owner9@example.com': 'owner' });
      // The add_member queued again: the three run in their order.
      await queue.add(name, data, opts);
      await until(async () => (await provisioner!.batch('waits').status()).done, 'the batch');
    } finally {
      await worker.close();
      await queue.close();
    }
    const report = await provisioner.batch('waits').report();
    expect(report.map((r) => `${r.line} ${r.outcome} ${r.detail ?? ''}`)).toEqual([
      '1 applied ',
      '2 applied the previous owner is admin now',
      '3 applied ',
    ]);
    // The library's report of a change batch: its own fields; no error on an applied row.
    expect(report[1]).toMatchObject({ action: 'transfer_owner', email: 'owner13@example.com', error: null });
    expect(report.map((r) => r.error)).toEqual([null, null, null]);
    expect(await joins(e, W.W5!)).toEqual({ 'owner10@example.com': 'normal', 'owner13@example.com': 'owner' });
  });
});

describe('--strict and the bounds of what reading holds', () => {
  it('--strict queues nothing when a row is invalid', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    await provisionWorld(e, config);
    provisioner = await createProvisioner(config);
    const rows: ChangeInput[] = [
      { action: 'rename', workspace_id: W.W5, name: 'Cinq' },
      { action: 'set_role', workspace_id: W.W5, email: 'owner10@example.com', role: 'owner' },
    ];
    const err = await provisioner.apply(rows, { batchId: 'strict', strict: true }).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(StrictValidationError);
    expect((err as StrictValidationError).rejected).toEqual([{ line: 2, errors: [expect.objectContaining({ field: 'role' })] }]);
    expect((await e.db.query(`SELECT 1 FROM dify_provision.batches WHERE id = 'strict'`)).rows).toHaveLength(0);
    expect(await (await envQueue(e)).count()).toBe(0);
  });

  it('a changes file or a membership file over --max-rows or --max-bytes is refused at the line that goes over, before anything is recorded', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    await provisionWorld(e, config);
    provisioner = await createProvisioner(config);
    const p = provisioner;
    const rows: ChangeInput[] = Array.from({ length: 5 }, (_, i) => ({
      action: 'add_member',
      workspace_id: W.W1,
      email: `person${i}@example.com`,
      role: 'normal',
    }));
    const over = async (run: Promise<unknown>, message: RegExp) => {
      const err = await run.catch((x: unknown) => x);
      expect(err).toBeInstanceOf(InputTooLargeError);
      expect((err as Error).message).toMatch(message);
    };
    const rowsOver = /^the changes file is over its limit of 3 rows at line 4: nothing was queued; .*\(--max-rows; library: maxRows\)$/;
    // --strict reads every row before recording: the cross-row rules hold at most --max-rows of them.
    await over(p.apply(rows, { batchId: 'big', maxRows: 3, strict: true }), rowsOver);
    await over(p.apply(rows, { batchId: 'big', maxRows: 3 }), rowsOver);
    await over(p.planChanges(rows, { maxRows: 3 }), rowsOver);
    await over(
      p.apply(rows, { batchId: 'big', maxBytes: 1000, strict: true }),
      /^the changes file is over its limit of 1000 bytes held in memory at line 2:/,
    );
    const path = join(e.dir, 'changes.csv');
    await import('node:fs/promises').then((fs) => fs.writeFile(path, csvOf(rows as unknown as Record<string, string>[])));
    // In a file, line 5 holds the fourth row (line 1 is the header).
    await over(p.applyFile(path, { batchId: 'big', maxRows: 3, strict: true }), /^the changes file is over its limit of 3 rows at line 5:/);

    // Sync: the file (2 lines) and the rows it becomes (One's unlisted owner2 and owner3 removed) held whole.
    const members = [
      { workspace_id: W.W1!, email: 'owner1@example.com', role: 'owner' },
      { workspace_id: W.W1!, email: 'owner13@example.com', role: 'normal' },
    ];
    const syncOver = /^the membership file \(--sync\) is over its limit of 3 rows at line 4: nothing was queued; .*--max-rows/;
    await over(p.apply(members, { batchId: 'big', sync: true, maxRows: 3 }), syncOver);
    await over(p.planChanges(members, { sync: true, maxRows: 3 }), syncOver);
    await over(
      p.apply(members, { batchId: 'big', sync: true, maxBytes: 400 }),
      /^the membership file \(--sync\) is over its limit of 400 bytes held in memory at line \d/,
    );
    // The members of the workspaces it names are held too: one row listing One's owner, One's three members go over.
    await over(
      p.apply([{ workspace_id: W.W1!, email: 'owner1@example.com', role: 'owner' }], { batchId: 'big', sync: true, maxBytes: 1000 }),
      /^the membership file \(--sync\) is over its limit of 1000 bytes held in memory at line \d/,
    );
    const many = Array.from({ length: 5 }, (_, i) => ({ workspace_id: W.W1!, email: `person${i}@example.com`, role: 'normal' }));
    await over(
      p.apply(many, { batchId: 'big', sync: true, maxRows: 4 }),
      /^the membership file \(--sync\) is over its limit of 4 rows at line 5:/,
    );
    expect((await e.db.query(`SELECT 1 FROM dify_provision.batches WHERE id = 'big'`)).rows).toHaveLength(0);
    // Within the bounds, the same sync runs.
    await p.apply(members, { batchId: 'big', sync: true, maxRows: 4 });
    await runUntilDone(e, ['big'], { config });
    expect(await joins(e, W.W1!)).toEqual({ 'owner1@example.com': 'owner', 'owner13@example.com': 'normal' });
  });
});

describe("another customer's person through apply (issue 28, items 1-2)", () => {
  it("B's changes file adding A's pending owner with --invite hands B no link, and revokes A's link for them (a person in two workspaces has no home)", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(e) };
    dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    const [A, B] = [randomUUID(), randomUUID()];
    provisioner = await createProvisioner(config);
    // Customer A: a new owner, invited (pending until they open their link); customer B exists.
    await provisioner.enqueue(
      [
        { workspace_name: 'Customer A', owner_email: 'a.owner@example.com', workspace_id: A },
        { workspace_name: 'Customer B', owner_email: 'owner9@example.com', workspace_id: B },
      ],
      { batchId: 'customers', createMissingOwners: true, invite: true, sealTo: PUBLIC },
    );
    await runUntilDone(e, ['customers'], { config });
    const before = await difyTokens(e);
    expect(before.map((t) => JSON.parse(t.value) as { email: string; workspace_id: string })).toEqual([
      expect.objectContaining({ email: 'a.owner@example.com', workspace_id: A }),
    ]);

    // B's changes file names A's pending owner, with every invitation flag.
    const report = await applyAndRun(
      e,
      config,
      [{ action: 'add_member', workspace_id: B, email: 'A.Owner@example.com', role: 'admin' }],
      'b-changes',
      {
        createMissingOwners: true,
        invite: true,
        sealTo: PUBLIC,
      },
    );
    expect(report.map((r) => [r.outcome, r.accountsCreated, r.error])).toEqual([['applied', null, null]]);
    // No link for B: nothing to reveal or resend under B's batch, no token naming B's workspace in Dify's Redis.
    await expect(provisioner.revealInvitations('b-changes', PRIVATE, join(e.dir, 'b-links.csv'))).rejects.toThrow(/has no invitations/);
    await expect(provisioner.resendInvitations('b-changes')).rejects.toThrow(/has no invitations/);
    // A's owner is in B's workspace too now: no home, so A's link for them is revoked as well (B
    // can cancel a link, never obtain one): no token left in Dify's Redis, nothing for A to reveal.
    expect(await difyTokens(e)).toEqual([]);
    await expect(provisioner.revealInvitations('customers', PRIVATE, join(e.dir, 'a-links.csv'))).rejects.toThrow();
  });
});
