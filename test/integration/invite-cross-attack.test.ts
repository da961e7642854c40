// Attacks on "invitation links never cross customers" (docs/security.md) by a customer B who
// controls B's rows and batches and receives B's links files: each test performs one that got
// through once, against real Redis, PostgreSQL and SMTP. The pre-claim attack: B's batch creates
// an account for A's future owner, B's operator reveals B's links to B, and B activates the
// account through its link (its password is B's); a later row of A naming the address must not
// join that account to A's workspace unless A's operator trusts the address (--trust-account).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { SmtpSettings } from '../../src/config/dify-env.js';
import { createProvisioner, type ChangeInput, type Provisioner, type WorkspaceInput } from '../../src/provisioner.js';
import { runLoggedUntilDone } from '../helpers/batch.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp-server.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { activateAsDify as activate, difyInvitationSettings, operatorPems } from '../helpers/dify-invitations.js';
import { closeEachTest } from '../helpers/world.js';
import { answer, errorOf, json } from '../helpers/api-calls.js';
import { listeningDashboard } from '../helpers/dashboard.js';
import * as S from '../../src/dashboard/api/schemas.js';

const DIFY_DB = 11;
const { PUBLIC, PRIVATE } = operatorPems();
const CEO = 'ceo@a.example';

let env: TestEnv;
let provisioner: Provisioner | undefined;
let dify: Redis | undefined;
let smtp: TestSmtp | undefined;
closeEachTest(
  () => ({ provisioner, dify, smtp, env }),
  (none) => ({ provisioner, dify, smtp } = none),
);

async function world(): Promise<TestEnv['config']> {
  env = await createTestEnv();
  dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
  smtp = await startSmtp({ tls: 'none' });
  const mail: SmtpSettings = { host: '127.0.0.1', port: smtp.port, tls: 'none', from: 'Ops <ops@example.com>' };
  return { ...env.config, invitations: difyInvitationSettings(DIFY_DB, `dify-${env.name}`), mail };
}

async function run(
  config: TestEnv['config'],
  rows: WorkspaceInput[],
  batchId: string,
  opts: { invitePending?: boolean; sendInvites?: boolean; invite?: boolean; trustAccounts?: string[] } = {},
): Promise<void> {
  provisioner ??= await createProvisioner(config);
  await provisioner.enqueue(rows, { batchId, createMissingOwners: true, invite: true, sealTo: PUBLIC, ...opts });
  await runLoggedUntilDone(env, config, [batchId]);
}

/** `secrets --invites` of a batch: the emails its links file holds (none if it has nothing to reveal). */
async function revealedEmails(batchId: string, name: string): Promise<string[]> {
  const out = join(env.dir, name);
  try {
    await provisioner!.revealInvitations(batchId, PRIVATE, out);
  } catch {
    return [];
  }
  const [, ...lines] = (await readFile(out, 'utf8')).trim().split('\n');
  return lines.map((l) => l.split(',')[3]!);
}

describe("customer B's batch and customer A's people", () => {
  it("B makes A's pending member the owner of a workspace of B (mailed only), then resends: B's links file never holds A's member's link", async () => {
    const config = await world();
    await run(config, [{ workspace_name: 'A Corp', owner_email: 'a-owner@example.com', members: 'a-member@example.com:editor' }], 'cust-a');
    // B: --invite-pending --send-invites, A's still-pending member as the owner of B's workspace.
    await run(config, [{ workspace_name: 'B Two', owner_email: 'a-member@example.com' }], 'cust-b', {
      invitePending: true,
      sendInvites: true,
    });
    const report = await provisioner!.batch('cust-b').report();
    expect(report[0]!.invitations).toMatch(/^a-member@example\.com: link mailed to them only/);
    expect(await revealedEmails('cust-b', 'b.csv')).toEqual([]);
    // invite --resend of B's batch: the person is still in A's workspace, so the link may still
    // only be mailed to them, never sealed for B's links file.
    await provisioner!.resendInvitations('cust-b');
    expect(await revealedEmails('cust-b', 'b-resent.csv')).not.toContain('a-member@example.com');
  });

  it("B creates A's future member as the owner of B's workspace, then A adds them: B's link no longer opens anything", async () => {
    const config = await world();
    // B: a new account, owner of B's workspace, its link sealed for B's links file (not revealed yet).
    await run(config, [{ workspace_name: 'B Corp', owner_email: 'alice@a.example' }], 'cust-b');
    const tokensOf = async () =>
      (await Promise.all((await dify!.keys('*member_invite:token:*')).map((k) => dify!.get(k)))).filter((v) => v?.includes('alice'));
    expect(await tokensOf()).toHaveLength(1);
    // A's batch adds the same person to A's workspace as a member.
    await run(config, [{ workspace_name: 'A Corp', owner_email: 'a-owner@example.com', members: 'alice@a.example:editor' }], 'cust-a');
    // B's link is revoked: gone from Dify's Redis, never revealed, never resent into B's file.
    expect(await tokensOf()).toEqual([]);
    expect(await revealedEmails('cust-b', 'b.csv')).not.toContain('alice@a.example');
    await expect(provisioner!.resendInvitations('cust-b')).rejects.toThrow(/no invitations/);
    expect(await tokensOf()).toEqual([]);
    const report = await provisioner!.batch('cust-b').report();
    expect(report[0]!.invitations).toMatch(/revoked/);
  });
});

async function apply(config: TestEnv['config'], rows: ChangeInput[], batchId: string, trustAccounts?: string[]) {
  provisioner ??= await createProvisioner(config);
  await provisioner.apply(rows, { batchId, retry: { attempts: 2, backoffMs: 50 }, ...(trustAccounts ? { trustAccounts } : {}) });
  await runLoggedUntilDone(env, config, [batchId]);
  return provisioner.batch(batchId).report();
}

/** `secrets --invites` of a batch: the emails its links file holds. */
const reveal = (batchId: string) => revealedEmails(batchId, `${batchId}.csv`);

/** What Dify's activation writes when the holder of a link sets the password (helpers/dify-invitations.ts). */
const activateAsDify = (email: string, password: string) => activate(env.db, dify!, `dify-${env.name}`, email, password);

const workspacesOf = async (email: string) =>
  (
    await env.db.query<{ name: string; role: string }>(
      `SELECT t.name, j.role FROM tenant_account_joins j JOIN tenants t ON t.id = j.tenant_id JOIN accounts a ON a.id = j.account_id
        WHERE a.email = $1 ORDER BY t.name`,
      [email],
    )
  ).rows.map((r) => `${r.name}:${r.role}`);

const tenantOf = async (name: string) => (await env.db.query<{ id: string }>(`SELECT id FROM tenants WHERE name = $1`, [name])).rows[0]?.id;

const REFUSAL = /this account was created or invited by another batch .*--trust-account ceo@a\.example/;

describe("B's batch pre-claims A's owner: created, link revealed to B's operator, activated by B", () => {
  async function preclaimed(config: TestEnv['config'], emails = [CEO]): Promise<void> {
    const members = emails.map((e) => `${e}:normal`).join(';');
    await run(config, [{ workspace_name: 'B Corp', owner_email: 'b-owner@b.example', members }], 'cust-b');
    expect(await reveal('cust-b')).toEqual(expect.arrayContaining(emails));
    for (const e of emails) await activateAsDify(e, 'b-knows-this');
  }

  it("A's ingest naming the address as owner or member is refused (naming line and field, not B's batch); --trust-account lets it through", async () => {
    const config = await world();
    await preclaimed(config);
    await run(
      config,
      [
        { workspace_name: 'A Corp', owner_email: CEO },
        { workspace_name: 'A Two', owner_email: 'cfo@a.example', members: `${CEO}:admin` },
      ],
      'cust-a',
    );
    const report = await provisioner!.batch('cust-a').report();
    expect(report.map((r) => r.outcome)).toEqual(['failed', 'failed']);
    expect(report.map((r) => r.line)).toEqual([1, 2]);
    expect(report[0]!.error).toMatch(/^owner_email: ceo@a\.example: /);
    expect(report[0]!.error).toMatch(REFUSAL);
    expect(report[1]!.error).toMatch(/^members: ceo@a\.example: /);
    expect(JSON.stringify(report)).not.toContain('cust-b');
    expect(await workspacesOf(CEO)).toEqual(['B Corp:normal']);
    expect(await tenantOf('A Corp')).toBeUndefined();

    // A's operator confirmed it is their person: the same rows in a batch with --trust-account.
    await run(config, [{ workspace_name: 'A Corp', owner_email: CEO }], 'cust-a-trusted', { trustAccounts: ['CEO@a.example'] });
    const trusted = await provisioner!.batch('cust-a-trusted').report();
    expect(trusted[0]!.outcome).toBe('created');
    expect(await workspacesOf(CEO)).toEqual(['A Corp:owner', 'B Corp:normal']);
  });

  it("retry of A's refused rows: without --trust-account they stay refused; with it they are created, the batch records the addresses and each row's job carries only its own", async () => {
    const config = await world();
    await preclaimed(config);
    const rows = [
      { workspace_name: 'A Corp', owner_email: CEO },
      { workspace_name: 'A Two', owner_email: 'cfo@a.example', members: `${CEO}:admin` },
    ];
    await run(config, rows, 'cust-a', { invite: false });
    const batch = provisioner!.batch('cust-a');
    const outcomes = async () => (await batch.report()).map((r) => r.outcome);
    expect(await outcomes()).toEqual(['failed', 'failed']);

    expect(await batch.retryFailed()).toBe(2);
    await runLoggedUntilDone(env, config, ['cust-a']);
    const again = await batch.report();
    expect(again.map((r) => r.outcome)).toEqual(['failed', 'failed']);
    for (const r of again) expect(r.error).toMatch(REFUSAL);
    expect(await tenantOf('A Corp')).toBeUndefined();

    expect(await batch.retryFailed({ trustAccounts: ['CEO@a.example', 'cfo@a.example', 'ceo@A.example'] })).toBe(2);
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect(await outcomes()).toEqual(['created', 'created']);
    expect(await workspacesOf(CEO)).toEqual(['A Corp:owner', 'A Two:admin', 'B Corp:normal']);
    expect((await batch.status()).options['trustAccounts']).toEqual(['CEO@a.example', 'cfo@a.example']);
    const specs = await env.db.query<{ spec: { trustAccounts?: string[] } }>(
      `SELECT spec FROM dify_provision.rows WHERE batch_id = 'cust-a' ORDER BY line`,
    );
    expect(specs.rows.map((r) => r.spec.trustAccounts)).toEqual([[CEO], ['cfo@a.example', CEO]]);
  });

  it("the library's batch.retryRows: a refused row by its line stays refused without trustAccounts; trusting its address it is created, the other row untouched", async () => {
    const config = await world();
    const CTO = 'cto@a.example';
    await preclaimed(config, [CEO, CTO]);
    const rows = [
      { workspace_name: 'A Corp', owner_email: CEO },
      { workspace_name: 'A Two', owner_email: CTO },
    ];
    await run(config, rows, 'cust-a', { invite: false });
    const batch = provisioner!.batch('cust-a');
    const rounds = async () => (await env.db.query(`SELECT round FROM dify_provision.rows WHERE batch_id = 'cust-a' ORDER BY line`)).rows;
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['failed', 'failed']);

    expect(await batch.retryRows([1])).toEqual([1]);
    await runLoggedUntilDone(env, config, ['cust-a']);
    const again = await batch.report();
    expect(again.map((r) => r.outcome)).toEqual(['failed', 'failed']);
    expect(again[0]!.error).toMatch(REFUSAL);
    expect(await tenantOf('A Corp')).toBeUndefined();

    expect(await batch.retryRows([1], { trustAccounts: ['CEO@a.example'] })).toEqual([1]);
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['created', 'failed']);
    expect(await workspacesOf(CEO)).toEqual(['A Corp:owner', 'B Corp:normal']);
    expect(await workspacesOf(CTO)).toEqual(['B Corp:normal']);
    // Line 2 was never queued again (still its first round); line 1 had three.
    expect(await rounds()).toEqual([{ round: 3 }, { round: 1 }]);
    expect((await batch.status()).options['trustAccounts']).toEqual(['CEO@a.example']);

    // Both lines asked for: only the failed one is queued, trusting its own address.
    expect(await batch.retryRows([1, 2], { trustAccounts: [CTO] })).toEqual([2]);
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['created', 'created']);
    expect(await workspacesOf(CTO)).toEqual(['A Two:owner', 'B Corp:normal']);
    expect((await batch.status()).options['trustAccounts']).toEqual(['CEO@a.example', CTO]);
  });

  it("A's apply add_member and transfer_owner of the address are refused; with --trust-account (apply's, or retry's) applied", async () => {
    const config = await world();
    await preclaimed(config);
    await run(config, [{ workspace_name: 'A Corp', owner_email: 'cfo@a.example' }], 'cust-a', { invite: false });
    const a = (await tenantOf('A Corp'))!;
    const refused = await apply(config, [{ action: 'add_member', workspace_id: a, email: CEO, role: 'admin' }], 'a-add');
    const trustedAdd = await apply(config, [{ action: 'add_member', workspace_id: a, email: CEO, role: 'admin' }], 'a-add-trusted', [CEO]);
    // A member now (trusted for that), but ownership is asked again.
    const transfer = await apply(config, [{ action: 'transfer_owner', workspace_id: a, email: CEO }], 'a-transfer');
    for (const r of [...refused, ...transfer]) {
      expect(r.outcome).toBe('failed');
      expect(r.error).toMatch(/^email: ceo@a\.example: /);
      expect(r.error).toMatch(REFUSAL);
      expect(r.error).not.toContain('cust-b');
    }
    expect(trustedAdd[0]!.outcome).toBe('applied');
    expect(await workspacesOf(CEO)).toEqual(['A Corp:admin', 'B Corp:normal']);
    // The refused transfer's batch retried trusting the address: a change row's job carries it too.
    expect(await provisioner!.batch('a-transfer').retryFailed({ trustAccounts: [CEO] })).toBe(1);
    await runLoggedUntilDone(env, config, ['a-transfer']);
    expect((await provisioner!.batch('a-transfer').report())[0]!.outcome).toBe('applied');
    expect(await workspacesOf(CEO)).toEqual(['A Corp:owner', 'B Corp:normal']);
  });

  it('an account whose only link from another batch was mailed to the address itself (never revealed) is joined as before', async () => {
    const config = await world();
    // X creates the person (its link sealed, never revealed); B names them as the owner of B's
    // workspace with --invite-pending --send-invites: X's link is revoked unrevealed, and B's
    // link is only mailed to the person (they are in X's workspace too). They activate with it.
    await run(config, [{ workspace_name: 'X Corp', owner_email: 'x-owner@x.example', members: `${CEO}:normal` }], 'cust-x');
    await run(config, [{ workspace_name: 'B Corp', owner_email: CEO }], 'cust-b', { invitePending: true, sendInvites: true });
    const b = await provisioner!.batch('cust-b').report();
    expect(b[0]!.invitations).toMatch(/^ceo@a\.example: link mailed to them only/);
    await activateAsDify(CEO, 'the-person-chose-this');
    await run(config, [{ workspace_name: 'A Corp', owner_email: CEO }], 'cust-a');
    const report = await provisioner!.batch('cust-a').report();
    expect(report[0]!.outcome).toBe('created');
  });

  it("B's own batch may name the account again: the guard is only for other batches' rows", async () => {
    const config = await world();
    await preclaimed(config);
    // More rows of B's batch (a re-run with one row added), naming the person B's operator activated.
    await run(
      config,
      [
        { workspace_name: 'B Corp', owner_email: 'b-owner@b.example', members: `${CEO}:normal` },
        { workspace_name: 'B Two', owner_email: CEO },
      ],
      'cust-b',
    );
    const report = await provisioner!.batch('cust-b').report();
    expect(report.map((r) => r.outcome)).toEqual(['created', 'created']);
    expect(await workspacesOf(CEO)).toEqual(['B Corp:normal', 'B Two:owner']);
  });

  describe('over the HTTP API: trust_accounts on POST /api/v1/batches/{id}/retry, /resume and /rows/retry', () => {
    const TOKEN = 'trust-api-admin-token-0123456789';
    const CTO = 'cto@a.example';
    let dashboard: Awaited<ReturnType<typeof listeningDashboard>> | undefined;
    afterEach(async () => {
      await dashboard?.close();
      dashboard = undefined;
    });
    const bearer = { authorization: `Bearer ${TOKEN}` };
    /** A POST to the API: with a JSON body, or none at all (as a script's plain retry). */
    const post = (path: string, body?: unknown) =>
      fetch(`${dashboard!.base}/api/v1${path}`, body === undefined ? { method: 'POST', headers: bearer } : json(body, bearer));
    const apiStatus = async (id: string) =>
      answer(await fetch(`${dashboard!.base}/api/v1/batches/${id}`, { headers: bearer }), 200, S.BatchStatusSchema);
    const trustedBySpec = async (id: string) =>
      (
        await env.db.query<{ spec: { trustAccounts?: string[] } }>(
          `SELECT spec FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`,
          [id],
        )
      ).rows.map((r) => r.spec.trustAccounts);
    const refusalOf = (email: string) => new RegExp(`created or invited by another batch .*--trust-account ${email.replace('.', '\\.')}`);

    it('retry: without trust_accounts the refused rows stay refused; with it a row is let through only for the addresses it names, recorded with the batch; no address queues nothing', async () => {
      const config = await world();
      await preclaimed(config, [CEO, CTO]);
      dashboard = await listeningDashboard(env, { token: TOKEN });
      const rows = [
        { workspace_name: 'A Corp', owner_email: CEO },
        { workspace_name: 'A Two', owner_email: CTO },
      ];
      await run(config, rows, 'cust-a', { invite: false });
      const batch = provisioner!.batch('cust-a');
      const outcomes = async () => (await batch.report()).map((r) => r.outcome);
      expect(await outcomes()).toEqual(['failed', 'failed']);

      // A value that is no address: refused by field and index, nothing queued, nothing recorded.
      for (const [path, body] of [
        ['/batches/cust-a/retry', { trust_accounts: [CEO, 'cto-at-a.example'] }],
        ['/batches/cust-a/resume', { trust_accounts: [CEO, 'cto-at-a.example'] }],
        ['/batches/cust-a/rows/retry', { lines: [1, 2], trust_accounts: [CEO, 'cto-at-a.example'] }],
      ] as const) {
        const refused = await errorOf(await post(path, body), 400);
        expect(refused.details, path).toEqual([{ field: 'body.trust_accounts.1', message: 'is not an email address' }]);
      }
      expect(await outcomes()).toEqual(['failed', 'failed']);
      expect((await apiStatus('cust-a')).options['trust_accounts']).toBeUndefined();

      // A plain retry (no body, as before): refused again.
      expect(await answer(await post('/batches/cust-a/retry'), 200, S.ControlResponseSchema)).toMatchObject({ rows: 2 });
      await runLoggedUntilDone(env, config, ['cust-a']);
      const again = await batch.report();
      expect(again.map((r) => r.outcome)).toEqual(['failed', 'failed']);
      expect(again[0]!.error).toMatch(refusalOf(CEO));
      expect(again[1]!.error).toMatch(refusalOf(CTO));

      // Trusting the first row's address: that row is created, the second (another address) stays refused.
      const trusting = await answer(
        await post('/batches/cust-a/retry', { trust_accounts: ['CEO@a.example'] }),
        200,
        S.ControlResponseSchema,
      );
      expect(trusting).toMatchObject({ rows: 2, message: '2 row(s) queued again (the batch trusts CEO@a.example now)' });
      await runLoggedUntilDone(env, config, ['cust-a']);
      const half = await batch.report();
      expect(half.map((r) => r.outcome)).toEqual(['created', 'failed']);
      expect(half[1]!.error).toMatch(refusalOf(CTO));
      expect(await workspacesOf(CEO)).toEqual(['A Corp:owner', 'B Corp:normal']);
      expect(await workspacesOf(CTO)).toEqual(['B Corp:normal']);
      expect((await apiStatus('cust-a')).options['trust_accounts']).toEqual(['CEO@a.example']);
      expect(await trustedBySpec('cust-a')).toEqual([[CEO], undefined]);

      // The second row by its line, trusting its own address.
      const line = await answer(
        await post('/batches/cust-a/rows/retry', { lines: [2], trust_accounts: [CTO] }),
        200,
        S.RetryRowsResponseSchema,
      );
      expect(line).toMatchObject({ rows: 1, lines: [2] });
      await runLoggedUntilDone(env, config, ['cust-a']);
      expect(await outcomes()).toEqual(['created', 'created']);
      expect(await workspacesOf(CTO)).toEqual(['A Two:owner', 'B Corp:normal']);
      expect((await apiStatus('cust-a')).options['trust_accounts']).toEqual(['CEO@a.example', CTO]);
      expect(await trustedBySpec('cust-a')).toEqual([[CEO], [CTO]]);
    });

    it('resume: a cancelled row naming the address is queued again trusting it (a value that is no address queues nothing)', async () => {
      const config = await world();
      await preclaimed(config);
      dashboard = await listeningDashboard(env, { token: TOKEN });
      await provisioner!.enqueue([{ workspace_name: 'A Corp', owner_email: CEO }], { batchId: 'cust-a', createMissingOwners: true });
      expect(await answer(await post('/batches/cust-a/cancel'), 200, S.ControlResponseSchema)).toMatchObject({ rows: 1 });
      const refused = await errorOf(await post('/batches/cust-a/resume', { trust_accounts: ['ceo-at-a.example'] }), 400);
      expect(refused.details).toEqual([{ field: 'body.trust_accounts.0', message: 'is not an email address' }]);
      expect((await provisioner!.batch('cust-a').report())[0]!.outcome).toBe('cancelled');

      expect(await answer(await post('/batches/cust-a/resume', { trust_accounts: [CEO] }), 200, S.ControlResponseSchema)).toMatchObject({
        rows: 1,
      });
      await runLoggedUntilDone(env, config, ['cust-a']);
      expect((await provisioner!.batch('cust-a').report())[0]!.outcome).toBe('created');
      expect(await workspacesOf(CEO)).toEqual(['A Corp:owner', 'B Corp:normal']);
      expect((await apiStatus('cust-a')).options['trust_accounts']).toEqual([CEO]);
      expect(await trustedBySpec('cust-a')).toEqual([[CEO]]);
    });
  });
});

describe("B's row with A's external_id: A's workspace claimed in advance", () => {
  it("A's row answering existing for the workspace B's row made, whose owner's link B's operator holds, is refused unless A trusts the address; the same operator key is no refusal", async () => {
    const config = await world();
    const row = { workspace_name: 'Victim Two', owner_email: 'boss@victim.example', external_id: 'vt-2' };
    // B's file copies A's row (external id, name, owner): B's batch makes the workspace and its owner, and B's operator gets the owner's link.
    await run(config, [row], 'cust-b');
    expect((await provisioner!.batch('cust-b').report()).map((r) => r.outcome)).toEqual(['created']);
    // A's own batch, another operator (no seal key of B's): the same key's workspace exists, but A does not get it.
    await provisioner!.enqueue([row], { batchId: 'cust-a', createMissingOwners: true });
    await runLoggedUntilDone(env, config, ['cust-a']);
    const [refused] = await provisioner!.batch('cust-a').report();
    expect(refused).toMatchObject({ outcome: 'failed', tenantId: null });
    expect(refused!.error).toMatch(
      /^owner_email: boss@victim\.example: this row's workspace exists already, and this account's link was given to the operator of another batch, .*confirm it is the person \(--trust-account boss@victim\.example\) or check the row's external_id$/,
    );
    expect(refused!.error).not.toContain('cust-b');
    // B's operator still holds the link (revealable): the reason A was refused.
    expect(await reveal('cust-b')).toEqual(['boss@victim.example']);
    // A's operator confirms it is their person: retried trusting the address, the row answers existing.
    expect(await provisioner!.batch('cust-a').retryFailed({ trustAccounts: ['Boss@Victim.example'] })).toBe(1);
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect((await provisioner!.batch('cust-a').report()).map((r) => r.outcome)).toEqual(['existing']);
    // The operator who holds the link (the same seal key) ingesting the row again: existing, nothing to refuse.
    await run(config, [row], 'cust-b-again');
    expect((await provisioner!.batch('cust-b-again').report()).map((r) => r.outcome)).toEqual(['existing']);
    // A row of a batch whose key's workspace no other batch's operator holds a link for: existing as before.
    for (const batchId of ['p1', 'p2']) {
      await provisioner!.enqueue([{ workspace_name: 'Plain', owner_email: 'owner1@example.com', external_id: 'p-1' }], { batchId });
      await runLoggedUntilDone(env, config, [batchId]);
    }
    expect((await provisioner!.batch('p2').report()).map((r) => r.outcome)).toEqual(['existing']);
  });
});

// On a Dify that keeps accounts.normalized_email (the latest schema, these tests' own), A's row may
// write another form of the address B's batch created: ceo+x@gmail.com is the account c.e.o@gmail.com.
// The refusal names the row's address (and the account it resolved to), and trusting that address
// lets the row through: the batch and each row keep only addresses the row names.
describe("Dify's normalised email: A's row writes another form of the address B pre-claimed", () => {
  const ACCOUNT = 'c.e.o@gmail.com';
  /** The refusal as the row gets it: the row's address, the Dify account, and the advice to trust the row's address. */
  const refusalOf = (field: string, address: string, what = 'created or invited by another batch and is active') => {
    const q = (s: string) => s.replace(/[.+]/g, (c) => `\\${c}`);
    return new RegExp(
      `^${field}: ${q(address)} \\(Dify account ${q(ACCOUNT)}\\): this ${what === 'existing' ? "row's workspace exists already" : `account was ${what}`}, .*` +
        `confirm it is the person \\(--trust-account ${q(address)}\\) or ${what === 'existing' ? "check the row's external_id" : 'use another address'}$`,
      's',
    );
  };
  async function preclaimed(config: TestEnv['config']): Promise<void> {
    await run(config, [{ workspace_name: 'B Corp', owner_email: 'b-owner@b.example', members: `${ACCOUNT}:normal` }], 'cust-b');
    expect(await reveal('cust-b')).toContain(ACCOUNT);
    await activateAsDify(ACCOUNT, 'b-knows-this');
  }
  /** A's batch cust-a: line 1's owner ceo+x@gmail.com, line 2's member `member` (other forms of the account's address). */
  const ingestTwoForms = (config: TestEnv['config'], member: string) =>
    run(
      config,
      [
        { workspace_name: 'A Corp', owner_email: 'ceo+x@gmail.com' },
        { workspace_name: 'A Two', owner_email: 'cfo@a.example', members: `${member}:admin` },
      ],
      'cust-a',
      { invite: false },
    );

  it("ingest: refused naming the row's address and the account; --trust-account of the row's address lets it through", async () => {
    const config = await world();
    await preclaimed(config);
    await ingestTwoForms(config, 'CEO+y@gmail.com');
    const report = await provisioner!.batch('cust-a').report();
    expect(report.map((r) => r.outcome)).toEqual(['failed', 'failed']);
    expect(report[0]!.error).toMatch(refusalOf('owner_email', 'ceo+x@gmail.com'));
    // As the row wrote it (its case too).
    expect(report[1]!.error).toMatch(refusalOf('members', 'CEO+y@gmail.com'));
    expect(JSON.stringify(report)).not.toContain('cust-b');
    expect(await workspacesOf(ACCOUNT)).toEqual(['B Corp:normal']);

    // The address the refusal advises trusting, given at ingest: created, the owner the account Dify knows.
    await run(config, [{ workspace_name: 'A Corp', owner_email: 'ceo+x@gmail.com' }], 'cust-a-trusted', {
      invite: false,
      trustAccounts: ['CEO+x@gmail.com'],
    });
    expect((await provisioner!.batch('cust-a-trusted').report())[0]!.outcome).toBe('created');
    expect(await workspacesOf(ACCOUNT)).toEqual(['A Corp:owner', 'B Corp:normal']);
  });

  it("retry: trusting the row's address lets that row through; another form of the address is another row's trust", async () => {
    const config = await world();
    await preclaimed(config);
    await ingestTwoForms(config, 'ceo+y@gmail.com');
    const batch = provisioner!.batch('cust-a');
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['failed', 'failed']);

    expect(await batch.retryFailed({ trustAccounts: ['ceo+x@gmail.com'] })).toBe(2);
    await runLoggedUntilDone(env, config, ['cust-a']);
    const half = await batch.report();
    expect(half.map((r) => r.outcome)).toEqual(['created', 'failed']);
    expect(half[1]!.error).toMatch(refusalOf('members', 'ceo+y@gmail.com'));
    expect(await workspacesOf(ACCOUNT)).toEqual(['A Corp:owner', 'B Corp:normal']);

    expect(await batch.retryRows([2], { trustAccounts: ['ceo+y@gmail.com'] })).toEqual([2]);
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['created', 'created']);
    expect(await workspacesOf(ACCOUNT)).toEqual(['A Corp:owner', 'A Two:admin', 'B Corp:normal']);
  });

  it("the Dify account's own email trusted (retry, ingest, apply) lets rows writing another form of it through; another address of that normalised form trusts nobody", async () => {
    const config = await world();
    await preclaimed(config);
    await ingestTwoForms(config, 'ceo+y@gmail.com');
    const batch = provisioner!.batch('cust-a');
    const specs = async (id: string) =>
      (
        await env.db.query<{ spec: { trustAccounts?: string[] } }>(
          `SELECT spec FROM dify_provision.rows WHERE batch_id = $1 ORDER BY line`,
          [id],
        )
      ).rows.map((r) => r.spec.trustAccounts);
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['failed', 'failed']);

    // The account's normalised email, but no account's email: kept with the rows, it trusts nobody.
    expect(await batch.retryFailed({ trustAccounts: ['ceo@gmail.com'] })).toBe(2);
    await runLoggedUntilDone(env, config, ['cust-a']);
    const still = await batch.report();
    expect(still.map((r) => r.outcome)).toEqual(['failed', 'failed']);
    expect(still[0]!.error).toMatch(refusalOf('owner_email', 'ceo+x@gmail.com'));
    expect(still[1]!.error).toMatch(refusalOf('members', 'ceo+y@gmail.com'));

    // The account the refusal names: both rows, each writing another form of it.
    expect(await batch.retryFailed({ trustAccounts: ['C.E.O@gmail.com'] })).toBe(2);
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect((await batch.report()).map((r) => r.outcome)).toEqual(['created', 'created']);
    expect(await workspacesOf(ACCOUNT)).toEqual(['A Corp:owner', 'A Two:admin', 'B Corp:normal']);
    expect(await specs('cust-a')).toEqual([
      [ACCOUNT, 'ceo@gmail.com'],
      [ACCOUNT, 'ceo@gmail.com'],
    ]);

    // At ingest (an address of another person's form is not kept), and for a change row.
    await run(
      config,
      [
        { workspace_name: 'A Three', owner_email: 'ceo+z@gmail.com' },
        { workspace_name: 'A Four', owner_email: 'cfo@a.example' },
      ],
      'cust-a-trusted',
      { invite: false, trustAccounts: [ACCOUNT, 'someone.else@gmail.com'] },
    );
    expect((await provisioner!.batch('cust-a-trusted').report()).map((r) => r.outcome)).toEqual(['created', 'created']);
    expect(await specs('cust-a-trusted')).toEqual([[ACCOUNT], undefined]);
    const add = [
      { action: 'add_member' as const, workspace_id: (await tenantOf('A Four'))!, email: 'ceo+w@gmail.com', role: 'admin' as const },
    ];
    expect((await apply(config, add, 'a-add-account', [ACCOUNT]))[0]!.outcome).toBe('applied');
    expect(await workspacesOf(ACCOUNT)).toEqual(['A Corp:owner', 'A Four:admin', 'A Three:owner', 'A Two:admin', 'B Corp:normal']);
  });

  it("apply add_member of another form of the address: refused naming it; trusting it (apply's --trust-account) applied", async () => {
    const config = await world();
    await preclaimed(config);
    await run(config, [{ workspace_name: 'A Corp', owner_email: 'cfo@a.example' }], 'cust-a', { invite: false });
    const a = (await tenantOf('A Corp'))!;
    const add = [{ action: 'add_member' as const, workspace_id: a, email: 'ceo+x@gmail.com', role: 'admin' as const }];
    const refused = await apply(config, add, 'a-add');
    expect(refused[0]!.outcome).toBe('failed');
    expect(refused[0]!.error).toMatch(refusalOf('email', 'ceo+x@gmail.com'));
    expect(refused[0]!.error).not.toContain('cust-b');
    expect((await apply(config, add, 'a-add-trusted', ['ceo+x@gmail.com']))[0]!.outcome).toBe('applied');
    expect(await workspacesOf(ACCOUNT)).toEqual(['A Corp:admin', 'B Corp:normal']);
  });

  it('a row answered existing whose member is another form of the address: refused naming it; retried trusting it, existing', async () => {
    const config = await world();
    // B's row makes the workspace (owner an account Dify had) with the member, and B's operator gets the member's link.
    const row = { workspace_name: 'Victim', owner_email: 'owner1@example.com', external_id: 'v-1' };
    await run(config, [{ ...row, members: `${ACCOUNT}:admin` }], 'cust-b');
    expect(await reveal('cust-b')).toEqual([ACCOUNT]);
    await provisioner!.enqueue([{ ...row, members: 'ceo+x@gmail.com:admin' }], { batchId: 'cust-a', createMissingOwners: true });
    await runLoggedUntilDone(env, config, ['cust-a']);
    const [refused] = await provisioner!.batch('cust-a').report();
    expect(refused).toMatchObject({ outcome: 'failed', tenantId: null });
    expect(refused!.error).toMatch(refusalOf('members', 'ceo+x@gmail.com', 'existing'));
    expect(await provisioner!.batch('cust-a').retryFailed({ trustAccounts: ['ceo+x@gmail.com'] })).toBe(1);
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect((await provisioner!.batch('cust-a').report()).map((r) => r.outcome)).toEqual(['existing']);
  });
});
