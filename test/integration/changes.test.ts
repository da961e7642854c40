// apply: changes to existing workspaces against real Redis and PostgreSQL on the band schemas.
// Each action writes what that release writes; each refusal is answered with its reason; a
// removed person's invitation tokens leave Dify's Redis; applying the same rows again answers
// `unchanged` for every one of them.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { InvitationSettings } from '../../src/config/dify-env.js';
import { createProvisioner, type ChangeInput, type Provisioner } from '../../src/provisioner.js';
import type { ReportRow } from '../../src/store/report.js';
import { lockTenant } from '../../src/store/locks.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { csvOf, envQueue, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { until } from '../helpers/cli-world.js';
import { BANDS, type BandName } from '../helpers/dify-checks.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { difyInvitationSettings } from '../helpers/dify-invitations.js';
import { closeEachTest } from '../helpers/world.js';

/** Dify's Redis: the tests' Redis server, another logical database than our queue's. */
const DIFY_DB = 8;

let env: TestEnv | undefined;
let provisioner: Provisioner | undefined;
let dify: Redis | undefined;
closeEachTest(
  () => ({ provisioner, dify, env }),
  (none) => ({ provisioner, dify, env } = none),
);

const difySettings = (prefix: string): InvitationSettings => difyInvitationSettings(DIFY_DB, prefix);

const W = Object.fromEntries(['W1', 'W2', 'W3', 'W4', 'W5', 'W6'].map((w) => [w, randomUUID()])) as Record<string, string>;

/** Six workspaces made by ingest (W1 with an external_id), on which the changes run. */
async function provisionWorld(e: TestEnv): Promise<void> {
  await ingestCsv(
    e,
    csvOf([
      {
        workspace_name: 'One',
        owner_email: 'owner1@example.com',
        members: 'owner2@example.com:admin;owner3@example.com:normal',
        workspace_id: W.W1!,
        external_id: 'cust-1',
      },
      {
        workspace_name: 'Two',
        owner_email: 'owner4@example.com',
        members: 'owner3@example.com:normal',
        workspace_id: W.W2!,
        external_id: '',
      },
      {
        workspace_name: 'Three',
        owner_email: 'owner7@example.com',
        members: 'owner5@example.com:admin;pending.person@example.com:normal',
        workspace_id: W.W3!,
        external_id: '',
      },
      { workspace_name: 'Four', owner_email: 'owner8@example.com', members: '', workspace_id: W.W4!, external_id: '' },
      {
        workspace_name: 'Five',
        owner_email: 'owner9@example.com',
        members: 'owner10@example.com:normal',
        workspace_id: W.W5!,
        external_id: '',
      },
      {
        workspace_name: 'Six',
        owner_email: 'owner11@example.com',
        members: 'owner12@example.com:normal',
        workspace_id: W.W6!,
        external_id: '',
      },
    ]),
    'world',
    { createMissingOwners: true },
  );
  const [s] = await runUntilDone(e, ['world']);
  expect(s!.counts.created).toBe(6);
}

/** Every change the file format has, on workspaces of all kinds. */
const CHANGES: ChangeInput[] = [
  { action: 'add_member', workspace_id: W.W1, email: 'owner13@example.com', role: 'editor' },
  { action: 'remove_member', workspace_id: W.W1, email: 'owner3@example.com' },
  { action: 'set_role', workspace_id: W.W1, email: 'owner2@example.com', role: 'editor' },
  { action: 'add_member', workspace_id: W.W1, email: 'brand.new@example.com', role: 'normal' },
  { action: 'rename', external_id: 'cust-1', name: '  One, renamed  ' },
  { action: 'archive', workspace_id: W.W2 },
  { action: 'transfer_owner', workspace_id: W.W3, email: 'owner5@example.com' },
  { action: 'remove_member', workspace_id: W.W3, email: 'pending.person@example.com' },
  // A person added and made owner in one file; the old owner removed after the transfer.
  { action: 'add_member', workspace_id: W.W6, email: 'owner6@example.com', role: 'admin' },
  { action: 'transfer_owner', workspace_id: W.W6, email: 'owner6@example.com' },
  { action: 'remove_member', workspace_id: W.W6, email: 'owner11@example.com' },
];

async function joins(e: TestEnv, tenantId: string): Promise<Record<string, string>> {
  const { rows } = await e.db.query<{ email: string; role: string }>(
    `SELECT a.email, j.role FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.tenant_id = $1 ORDER BY a.email`,
    [tenantId],
  );
  return Object.fromEntries(rows.map((r) => [r.email, r.role]));
}

const answers = (rows: ReportRow[]) => rows.map((r) => `${r.line} ${r.action ?? '-'} ${r.outcome}`);

async function applyAndRun(e: TestEnv, config: TestEnv['config'], rows: ChangeInput[], batchId: string, opts = {}): Promise<ReportRow[]> {
  provisioner ??= await createProvisioner(config);
  await provisioner.apply(rows, { batchId, retry: { attempts: 3, backoffMs: 50 }, ...opts });
  const [s] = await runUntilDone(e, [batchId], { config });
  expect(s!.done).toBe(true);
  return provisioner.batch(batchId).report();
}

describe.each(['1.9', '1.13', 'latest'] as BandName[])('apply on band %s', (bandName) => {
  it('applies each action as that release writes it, and a second apply answers unchanged for every row', async () => {
    const band = BANDS[bandName].band;
    env = await createTestEnv({ schema: bandName });
    const e = env;
    const prefix = `dify-${e.name}`;
    const config = { ...e.config, invitations: difySettings(prefix) };
    dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    if (bandName === 'latest') {
      // RBAC maintainers (1.15+): the release's columns, probed by the worker.
      await e.db.query(
        `ALTER TABLE datasets ADD COLUMN maintainer uuid; CREATE TABLE apps (id uuid DEFAULT gen_random_uuid(), tenant_id uuid, maintainer uuid)`,
      );
    }
    await provisionWorld(e);
    const id = async (email: string) => (await e.db.query<{ id: string }>(`SELECT id FROM accounts WHERE email = $1`, [email])).rows[0]?.id;
    const owner3 = (await id('owner3@example.com'))!;
    const pendingPerson = (await id('pending.person@example.com'))!;
    // Tokens Dify's console issued: owner3's for W1 (must go) and for W2 (must stay).
    const applied = band === 'C' || band === 'D' ? `${prefix}:` : '';
    const tokenFor = (account: string, ws: string) => JSON.stringify({ account_id: account, email: 'x', workspace_id: ws });
    await dify.setex(`${applied}member_invite:token:${randomUUID()}`, 3600, tokenFor(owner3, W.W1!));
    await dify.setex(`${applied}member_invite:token:${randomUUID()}`, 3600, tokenFor(owner3, W.W1!));
    const keep = `${applied}member_invite:token:${randomUUID()}`;
    await dify.setex(keep, 3600, tokenFor(owner3, W.W2!));
    await e.db.query(`UPDATE tenants SET updated_at = '2000-01-01' WHERE id = ANY($1::uuid[])`, [[W.W1, W.W2]]);
    if (bandName === 'latest') {
      await e.db.query(`INSERT INTO datasets (id, tenant_id, name, created_by, maintainer) VALUES (gen_random_uuid(), $1, 'kb', $2, $2)`, [
        W.W1,
        owner3,
      ]);
      await e.db.query(`INSERT INTO apps (tenant_id, maintainer) VALUES ($1, $2)`, [W.W1, owner3]);
    }

    const report = await applyAndRun(e, config, CHANGES, 'changes-1', { createMissingOwners: true });
    expect(report.map((r) => `${r.line} ${r.outcome} ${r.error ?? ''}`).filter((l) => !/ applied/.test(l))).toEqual([]);
    expect(report.every((r) => r.tenantId !== null)).toBe(true);

    expect(await joins(e, W.W1!)).toEqual({
      'brand.new@example.com': 'normal',
      'owner1@example.com': 'owner',
      'owner13@example.com': 'editor',
      'owner2@example.com': 'editor',
    });
    // The added joins as create_tenant_member writes them; the created person's as Dify's invite (current, opened on 1.15+).
    const { rows: added } = await e.db.query(
      `SELECT a.email, a.status, j.current, j.invited_by ${BANDS[bandName].lastOpenedAt ? ', j.last_opened_at IS NOT NULL AS opened' : ''}
         FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id
        WHERE j.tenant_id = $1 AND a.email IN ('brand.new@example.com', 'owner13@example.com') ORDER BY a.email`,
      [W.W1],
    );
    const opened = (v: boolean) => (BANDS[bandName].lastOpenedAt ? { opened: v } : {});
    expect(added).toEqual([
      { email: 'brand.new@example.com', status: 'pending', current: true, invited_by: null, ...opened(true) },
      { email: 'owner13@example.com', status: 'active', current: false, invited_by: null, ...opened(false) },
    ]);
    expect(report.find((r) => r.line === 4)!.accountsCreated).toEqual(['brand.new@example.com']);

    // Rename trimmed; updated_at from 1.10 (band B's varchar[] releases end at 1.10.0: not set there).
    const { rows: tenants } = await e.db.query<{ id: string; name: string; status: string; touched: boolean }>(
      `SELECT id, name, status, updated_at > '2000-01-02' AS touched FROM tenants WHERE id = ANY($1::uuid[]) ORDER BY name`,
      [[W.W1, W.W2]],
    );
    expect(tenants).toEqual([
      { id: W.W1, name: 'One, renamed', status: 'normal', touched: band !== 'B' },
      { id: W.W2, name: 'Two', status: 'archive', touched: band !== 'B' },
    ]);

    // Transfer: the old owner admin, the new one owner, exactly one owner.
    expect(await joins(e, W.W3!)).toEqual({ 'owner5@example.com': 'owner', 'owner7@example.com': 'admin' });
    expect(await joins(e, W.W6!)).toEqual({ 'owner12@example.com': 'normal', 'owner6@example.com': 'owner' });

    // A pending account left with no workspace is deleted from 1.13 (band C), kept before.
    expect(await id('pending.person@example.com')).toBe(band === 'B' ? pendingPerson : undefined);

    // owner3's tokens for W1 are gone from Dify's Redis, the one for W2 stays.
    const left = await dify.keys(`${applied}member_invite:token:*`);
    const values = await Promise.all(left.map((k) => dify!.get(k)));
    expect(values.filter((v) => v?.includes(W.W1!))).toEqual([]);
    expect(left).toContain(keep);
    expect(report.find((r) => r.line === 2)!.detail).toMatch(/2 invitation token\(s\) deleted/);

    if (bandName === 'latest') {
      const owner1 = await id('owner1@example.com');
      const { rows: m } = await e.db.query(
        `SELECT (SELECT maintainer FROM datasets WHERE tenant_id = $1) AS d, (SELECT maintainer FROM apps WHERE tenant_id = $1) AS a`,
        [W.W1],
      );
      expect(m).toEqual([{ d: owner1, a: owner1 }]);
    }

    // The same rows again (a new batch): every one unchanged, nothing written.
    const { rows: before } = await e.db.query(`SELECT md5(string_agg(j::text, ',' ORDER BY j.id)) AS h FROM tenant_account_joins j`);
    const again = await applyAndRun(e, config, CHANGES, 'changes-2', { createMissingOwners: true });
    expect(answers(again)).toEqual(CHANGES.map((c, i) => `${i + 1} ${c.action} unchanged`));
    const { rows: after } = await e.db.query(`SELECT md5(string_agg(j::text, ',' ORDER BY j.id)) AS h FROM tenant_account_joins j`);
    expect(after).toEqual(before);

    // Change batches beside ingest batches: status and listing say their kind; the report has its columns.
    const status = await provisioner!.batch('changes-2').status();
    expect(status).toMatchObject({ kind: 'changes', succeeded: true, state: 'done' });
    expect(status.counts).toMatchObject({ unchanged: CHANGES.length, applied: 0 });
    let csv = '';
    for await (const c of provisioner!.batch('changes-1').reportCsv()) csv += c;
    expect(csv.split('\r\n')[0]).toBe(
      'line,action,workspace_id,external_id,email,role,name,outcome,detail,accounts_created,attempts,duration_ms,mail',
    );
    expect(csv).toContain(`5,rename,${W.W1},cust-1,,,"One, renamed",applied`);
  });

  it('refuses what Dify refuses, naming why, and changes nothing for those rows', async () => {
    env = await createTestEnv({ schema: bandName });
    const e = env;
    const config = { ...e.config, invitations: difySettings(`dify-${e.name}`) };
    await provisionWorld(e);
    await e.db.query(`UPDATE tenants SET status = 'archive' WHERE id = $1`, [W.W2]);
    const unknownWs = randomUUID();
    const report = await applyAndRun(
      e,
      config,
      [
        { action: 'remove_member', workspace_id: W.W4, email: 'owner8@example.com' },
        { action: 'set_role', workspace_id: W.W5, email: 'owner9@example.com', role: 'admin' },
        { action: 'set_role', workspace_id: W.W5, email: 'owner10@example.com', role: 'owner' },
        { action: 'add_member', workspace_id: unknownWs, email: 'owner1@example.com', role: 'normal' },
        { action: 'rename', external_id: 'nobody', name: 'X' },
        { action: 'set_role', workspace_id: W.W1, email: 'nobody@example.com', role: 'admin' },
        { action: 'add_member', workspace_id: W.W4, email: 'nobody@example.com', role: 'admin' },
        { action: 'add_member', workspace_id: W.W2, email: 'owner1@example.com', role: 'normal' },
        { action: 'transfer_owner', workspace_id: W.W1, email: 'owner14@example.com' },
        { action: 'add_member', workspace_id: W.W1, email: 'owner2@example.com', role: 'normal' },
      ],
      'refusals',
    );
    const said = report.map((r) => `${r.line} ${r.outcome} ${r.detail}`);
    expect(said[0]).toMatch(/^1 failed email: owner8@example.com is the workspace's owner: transfer ownership first/);
    expect(said[1]).toMatch(/^2 failed email: owner9@example.com is the workspace's owner: transfer_owner gives ownership/);
    expect(said[2]).toMatch(/^3 rejected role: cannot be owner/);
    expect(said[3]).toBe(`4 failed workspace_id: no Dify workspace has the id ${unknownWs}`);
    expect(said[4]).toMatch(/^5 failed external_id: no workspace was provisioned with external_id "nobody"/);
    expect(said[5]).toMatch(/^6 failed email: no Dify account has the email "nobody@example.com"/);
    expect(said[6]).toMatch(/^7 failed email: no Dify account has the email "nobody@example.com".*--create-missing-owners/);
    expect(said[7]).toMatch(/^8 failed action: the workspace is archived: member changes are refused/);
    expect(said[8]).toMatch(/^9 failed email: owner14@example.com is not a member of this workspace/);
    // add_member never re-roles: the member keeps admin, the row says why it changed nothing.
    expect(said[9]).toMatch(/^10 unchanged already a member as admin: add_member never changes a role/);
    expect(await joins(e, W.W4!)).toEqual({ 'owner8@example.com': 'owner' });
    expect(await joins(e, W.W5!)).toEqual({ 'owner10@example.com': 'normal', 'owner9@example.com': 'owner' });
    expect((await joins(e, W.W1!))['owner2@example.com']).toBe('admin');
    const status = await provisioner!.batch('refusals').status();
    expect(status.state).toBe('done-with-failures');
  });
});

describe('two change batches on one workspace at once', () => {
  it('serialise on the workspace: each person created and joined once, exactly one owner, no row failed', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(`dify-${e.name}`) };
    await provisionWorld(e);
    const people = Array.from({ length: 30 }, (_, i) => `both${i}@example.com`);
    const a: ChangeInput[] = [
      ...people.map((email, i) => ({ action: 'add_member', workspace_id: W.W1, email, role: i % 2 ? 'editor' : 'normal' })),
      { action: 'transfer_owner', workspace_id: W.W1, email: 'owner2@example.com' },
    ];
    const b: ChangeInput[] = [
      ...[...people].reverse().map((email) => ({ action: 'add_member', workspace_id: W.W1, email, role: 'normal' })),
      { action: 'transfer_owner', workspace_id: W.W1, email: 'owner3@example.com' },
      { action: 'rename', workspace_id: W.W1, name: 'Both' },
    ];
    provisioner = await createProvisioner(config);
    await Promise.all([
      provisioner.apply(a, { batchId: 'both-a', createMissingOwners: true }),
      provisioner.apply(b, { batchId: 'both-b', createMissingOwners: true }),
    ]);
    await runUntilDone(e, ['both-a', 'both-b'], { config, concurrency: 8 });
    const reports = [...(await provisioner.batch('both-a').report()), ...(await provisioner.batch('both-b').report())];
    expect(reports.filter((r) => r.outcome !== 'applied' && r.outcome !== 'unchanged').map((r) => `${r.line} ${r.error}`)).toEqual([]);
    // Each person: one account, one join, added by exactly one of the two batches (the other found it done).
    const { rows } = await e.db.query<{ email: string; accounts: number; joins: number }>(
      `SELECT a.email, count(DISTINCT a.id)::int AS accounts, count(j.id)::int AS joins
         FROM accounts a LEFT JOIN tenant_account_joins j ON j.account_id = a.id AND j.tenant_id = $1
        WHERE a.email LIKE 'both%' GROUP BY a.email ORDER BY a.email`,
      [W.W1],
    );
    expect(rows).toHaveLength(30);
    expect(rows.every((r) => r.accounts === 1 && r.joins === 1)).toBe(true);
    for (const email of people) {
      const answers = reports.filter((r) => r.ownerEmail === email && r.action === 'add_member').map((r) => r.outcome);
      expect(answers.sort()).toEqual(['applied', 'unchanged']);
    }
    // Both transfers ran, one after the other: exactly one owner, the two others admins.
    const roles = await joins(e, W.W1!);
    const top = ['owner1@example.com', 'owner2@example.com', 'owner3@example.com'].map((m) => roles[m]).sort();
    expect(top).toEqual(['admin', 'admin', 'owner']);
    expect(roles['owner1@example.com']).toBe('admin');
  });
});

describe("a change and the workspace's locks", () => {
  /** Until a backend of this database waits for a lock (`event`: its wait_event, else any), or the batch's row is answered. */
  const waitingOrAnswered = (e: TestEnv, batchId: string, event?: string) => async () => {
    const { rows } = await e.db.query(
      `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND ($1::text IS NULL OR wait_event = $1)
       UNION ALL SELECT 1 FROM dify_provision.rows WHERE batch_id = $2 AND outcome NOT IN ('queued', 'active')`,
      [event ?? null, batchId],
    );
    return rows.length > 0;
  };
  const outcomes = async (e: TestEnv, batchId: string) =>
    (await e.db.query(`SELECT outcome FROM dify_provision.rows WHERE batch_id = $1`, [batchId])).rows.map((r) => r.outcome);

  it("waits while another transaction of ours holds the workspace's lock (a new workspace's, another change's), then applies", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(`dify-${e.name}`) };
    await provisionWorld(e);
    const holder = await e.db.connect();
    await holder.query('BEGIN');
    await lockTenant(holder, W.W1!);
    provisioner = await createProvisioner(config);
    await provisioner.apply([{ action: 'rename', workspace_id: W.W1, name: 'Held' }], { batchId: 'held' });
    const worker = await runWorker(config, { concurrency: 1, logger: pino({ level: 'silent' }) });
    try {
      await until(waitingOrAnswered(e, 'held', 'advisory'), 'the change waiting at the lock');
      expect(await outcomes(e, 'held')).not.toContain('applied');
      expect((await e.db.query(`SELECT name FROM tenants WHERE id = $1`, [W.W1])).rows).toEqual([{ name: 'One' }]);
      await holder.query('COMMIT');
      await until(async () => (await outcomes(e, 'held'))[0] === 'applied', 'the change once the lock is free');
    } finally {
      holder.release();
      await worker.close();
    }
    expect((await e.db.query(`SELECT name FROM tenants WHERE id = $1`, [W.W1])).rows).toEqual([{ name: 'Held' }]);
  });

  it('a change whose transaction fails and will be retried shows the attempt and its error (queued) while it waits for the retry', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(`dify-${e.name}`) };
    await provisionWorld(e);
    // A real failure PostgreSQL reports as transient (a serialization failure), once: the rename's UPDATE raises it.
    await e.db.query(`
      CREATE TABLE fail_once (n int);
      INSERT INTO fail_once VALUES (1);
      CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF EXISTS (SELECT 1 FROM fail_once) THEN
          RAISE EXCEPTION 'could not serialize access (injected)' USING ERRCODE = '40001';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER fail_once BEFORE UPDATE OF name ON tenants FOR EACH ROW EXECUTE FUNCTION fail_once();`);
    provisioner = await createProvisioner(config);
    // The retry waits a minute: long enough to read the row between the two attempts.
    await provisioner.apply([{ action: 'rename', workspace_id: W.W1, name: 'Retried' }], {
      batchId: 'retried',
      retry: { attempts: 2, backoffMs: 60_000 },
    });
    const worker = await runWorker(config, { concurrency: 1, logger: pino({ level: 'silent' }) });
    const row = async () =>
      (await e.db.query(`SELECT outcome, attempts, error FROM dify_provision.rows WHERE batch_id = 'retried'`)).rows[0];
    try {
      const queue = await envQueue(e);
      try {
        await until(async () => (await queue.getDelayedCount()) === 1, 'the failed attempt waiting for its retry');
      } finally {
        await queue.close();
      }
      expect(await row()).toEqual({
        outcome: 'queued',
        attempts: 1,
        error: expect.stringContaining('could not serialize access (injected)'),
      });
      expect((await e.db.query(`SELECT name FROM tenants WHERE id = $1`, [W.W1])).rows).toEqual([{ name: 'One' }]);
    } finally {
      await worker.close();
    }
  });

  it("reads the joins FOR UPDATE: an ownership transfer Dify's console is committing is seen, and removing the new owner is refused", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(`dify-${e.name}`) };
    await provisionWorld(e);
    // Dify's console (no advisory lock) makes owner2 the owner of One, in a transaction still open.
    const difyConsole = await e.db.connect();
    await difyConsole.query('BEGIN');
    await difyConsole.query(
      `UPDATE tenant_account_joins SET role = CASE role WHEN 'owner' THEN 'admin' ELSE 'owner' END
        WHERE tenant_id = $1 AND account_id IN (SELECT id FROM accounts WHERE email IN ('owner1@example.com', 'owner2@example.com'))`,
      [W.W1],
    );
    provisioner = await createProvisioner(config);
    await provisioner.apply([{ action: 'remove_member', workspace_id: W.W1, email: 'owner2@example.com' }], { batchId: 'console' });
    const worker = await runWorker(config, { concurrency: 1, logger: pino({ level: 'silent' }) });
    try {
      await until(waitingOrAnswered(e, 'console'), 'the removal waiting for the join');
      await difyConsole.query('COMMIT');
      await until(async () => !['queued', 'active'].includes((await outcomes(e, 'console'))[0]), 'the removal answered');
    } finally {
      difyConsole.release();
      await worker.close();
    }
    const report = await provisioner.batch('console').report();
    expect(report.map((r) => `${r.outcome} ${r.error}`)).toEqual([
      expect.stringMatching(/^failed email: owner2@example.com is the workspace's owner: transfer ownership first/),
    ]);
    expect(await joins(e, W.W1!)).toMatchObject({ 'owner1@example.com': 'admin', 'owner2@example.com': 'owner' });
  });
});

describe('sync mode', () => {
  it("plans the difference with each named workspace's membership, applies it, and a second sync changes nothing", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difySettings(`dify-${e.name}`) };
    await provisionWorld(e);
    const members = [
      // W1: the owner stays, owner2 re-roled, owner13 added, owner3 (not listed) removed.
      { external_id: 'cust-1', email: 'owner1@example.com', role: 'owner' },
      { external_id: 'cust-1', email: 'owner2@example.com', role: 'editor' },
      { external_id: 'cust-1', email: 'owner13@example.com', role: 'normal' },
      // W3: owner5 made owner; the old owner listed as normal (after the transfer); the pending person as they are.
      { workspace_id: W.W3!, email: 'owner5@example.com', role: 'owner' },
      { workspace_id: W.W3!, email: 'owner7@example.com', role: 'normal' },
      { workspace_id: W.W3!, email: 'pending.person@example.com', role: 'normal' },
      // W5: the owner not listed and no other owner named: the owner stays.
      { workspace_id: W.W5!, email: 'owner10@example.com', role: 'normal' },
      // W6: a new person as owner (added, then made owner); the old owner, not listed, removed after.
      { workspace_id: W.W6!, email: 'new.boss@example.com', role: 'owner' },
      { workspace_id: W.W6!, email: 'owner12@example.com', role: 'normal' },
    ];
    provisioner = await createProvisioner(config);
    const plan = await provisioner.planChanges(members, { sync: true, createMissingOwners: true, listRows: 100 });
    const { describePlan } = await import('../../src/changes/plan.js');
    expect(describePlan(plan)).toBe('would add 2, remove 2, re-role 2, transfer 2; 4 unchanged');
    expect(plan.rows!.filter((r) => r.verdict === 'remove').map((r) => [r.line > members.length, r.email])).toEqual([
      [true, 'owner3@example.com'],
      [true, 'owner11@example.com'],
    ]);
    await provisioner.apply(members, { batchId: 'sync-1', sync: true, createMissingOwners: true });
    await runUntilDone(e, ['sync-1'], { config });
    const report = await provisioner.batch('sync-1').report();
    expect(report.filter((r) => r.outcome !== 'applied' && r.outcome !== 'unchanged').map((r) => `${r.line} ${r.error}`)).toEqual([]);
    expect(report.filter((r) => r.outcome === 'applied')).toHaveLength(8);
    expect(await joins(e, W.W1!)).toEqual({
      'owner1@example.com': 'owner',
      'owner13@example.com': 'normal',
      'owner2@example.com': 'editor',
    });
    expect(await joins(e, W.W3!)).toEqual({
      'owner5@example.com': 'owner',
      'owner7@example.com': 'normal',
      'pending.person@example.com': 'normal',
    });
    expect(await joins(e, W.W5!)).toEqual({ 'owner10@example.com': 'normal', 'owner9@example.com': 'owner' });
    expect(await joins(e, W.W6!)).toEqual({ 'new.boss@example.com': 'owner', 'owner12@example.com': 'normal' });

    const again = await provisioner.planChanges(members, { sync: true, createMissingOwners: true });
    expect(describePlan(again)).toBe('would change nothing; 9 unchanged');
    await provisioner.apply(members, { batchId: 'sync-2', sync: true });
    await runUntilDone(e, ['sync-2'], { config });
    expect((await provisioner.batch('sync-2').report()).map((r) => r.outcome)).toEqual(Array(9).fill('unchanged'));
  });
});
