// apply --within: one platform team, several customers, each onboarded by its own ingest batch
// and each supplying its own changes files. Customer B's file names customer A's workspace (by
// external_id, by workspace_id), with every action an attacker would want (an admin invitation
// for themselves, a removal, a transfer, an archive, a rename): applied within B's batch, every
// such row is rejected by line and field, nothing in A changes, no account or link is made, and
// the rejection is word for word the one a workspace that does not exist gets. Then the same by
// a membership file (--sync), by the HTTP API, and at run time in the worker (a row recorded in
// scope whose workspace is no longer in it by the time it runs).
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { CHANGE_COLUMNS } from '../../src/changes/change-row.js';
import * as S from '../../src/dashboard/api/schemas.js';
import { createProvisioner, provisionerOn, type Provisioner } from '../../src/provisioner.js';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { answer, errorOf, json } from '../helpers/api-calls.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { listeningDashboard } from '../helpers/dashboard.js';
import { difyInvitationSettings } from '../helpers/dify-invitations.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { closeEachTest } from '../helpers/world.js';

const operator = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PUBLIC = operator.publicKey.export({ type: 'spki', format: 'pem' }).toString();

const WA = randomUUID();
const WB = randomUUID();
const NOWHERE = randomUUID();
const SCOPE_B = 'not one of the workspaces of batch cust-b (--within)';

let env: TestEnv | undefined;
let provisioner: Provisioner | undefined;
closeEachTest(
  () => ({ provisioner, env }),
  (none) => ({ provisioner, env } = none),
);

function configOf(e: TestEnv): TestEnv['config'] {
  return { ...e.config, invitations: difyInvitationSettings(8, `dify-${e.name}`) };
}

/** Customer A's workspace by batch cust-a, customer B's by batch cust-b. */
async function twoCustomers(e: TestEnv, config: TestEnv['config']): Promise<void> {
  await ingestCsv(
    e,
    csvOf([
      {
        workspace_name: 'Acme',
        owner_email: 'boss@a.example',
        members: 'staff@a.example:admin',
        workspace_id: WA,
        external_id: 'acme-001',
      },
    ]),
    'cust-a',
    { createMissingOwners: true },
  );
  await ingestCsv(
    e,
    csvOf([
      {
        workspace_name: 'Beta',
        owner_email: 'boss@b.example',
        members: 'staff@b.example:normal',
        workspace_id: WB,
        external_id: 'beta-001',
      },
    ]),
    'cust-b',
    { createMissingOwners: true },
  );
  const statuses = await runUntilDone(e, ['cust-a', 'cust-b'], { config });
  expect(statuses.map((s) => s.counts.created)).toEqual([1, 1]);
}

/** Everything of a workspace the attack could change: name, status, members and their roles. */
async function stateOf(e: TestEnv, tenantId: string): Promise<unknown> {
  const { rows: t } = await e.db.query(`SELECT name, status FROM tenants WHERE id = $1`, [tenantId]);
  const { rows: j } = await e.db.query(
    `SELECT a.email, j.role FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id WHERE j.tenant_id = $1 ORDER BY a.email`,
    [tenantId],
  );
  const { rows: inv } = await e.db.query(`SELECT email FROM dify_provision.invitations WHERE tenant_id = $1`, [tenantId]);
  return { tenant: t, joins: j, invitations: inv };
}

const accountsNamed = async (e: TestEnv, pattern: string) =>
  (await e.db.query<{ email: string }>(`SELECT email FROM accounts WHERE email LIKE $1 ORDER BY email`, [pattern])).rows.map(
    (r) => r.email,
  );

/**
 * Nothing of A that B did not write itself (its id when B named it by external_id, its name, its
 * batch, its owner) in a text B gets to read, and no word on whether it exists.
 */
function leaksNothingOfA(text: string): void {
  for (const secret of [WA, 'Acme', 'cust-a', 'boss@a.example', 'exist', 'deleted', 'provisioned']) expect(text).not.toContain(secret);
}

const changesCsv = (rows: Record<string, string | undefined>[]) =>
  csvOf(rows.map((r) => Object.fromEntries(CHANGE_COLUMNS.map((c) => [c, r[c] ?? '']))));

/** B's file: every row but the last names A's workspace (or none at all). */
const ATTACK = [
  { action: 'add_member', external_id: 'acme-001', email: 'spy@b.example', role: 'admin' },
  { action: 'add_member', workspace_id: WA, email: 'spy2@b.example', role: 'admin' },
  { action: 'remove_member', workspace_id: WA, email: 'staff@a.example' },
  { action: 'transfer_owner', external_id: 'acme-001', email: 'staff@a.example' },
  { action: 'rename', external_id: 'acme-001', name: 'Pwned' },
  // Workspaces that do not exist at all: the very same answer.
  { action: 'add_member', external_id: 'nobody-999', email: 'spy3@b.example', role: 'admin' },
  { action: 'add_member', workspace_id: NOWHERE, email: 'spy4@b.example', role: 'admin' },
  // B's own workspace: applied.
  { action: 'add_member', external_id: 'beta-001', email: 'new@b.example', role: 'normal' },
];
const ATTACK_ANSWERS = [
  `external_id: ${SCOPE_B}`,
  `workspace_id: ${SCOPE_B}`,
  `workspace_id: ${SCOPE_B}`,
  `external_id: ${SCOPE_B}`,
  `external_id: ${SCOPE_B}`,
  `external_id: ${SCOPE_B}`,
  `workspace_id: ${SCOPE_B}`,
];

describe('apply --within: a customer changes only the workspaces of their own batches', () => {
  it("B's changes file naming A's workspace (external_id, workspace_id) changes nothing of A, makes no account or link, and says nothing of A", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = configOf(e);
    await twoCustomers(e, config);
    const before = await stateOf(e, WA);
    const file = join(e.dir, 'b-changes.csv');
    await writeFile(file, changesCsv(ATTACK));
    provisioner = await createProvisioner(config);

    // The dry run: the same rejections, by line and field; no workspace of A named in it.
    const plan = await provisioner.planChanges(file, { within: ['cust-b'], createMissingOwners: true, listRows: 100 });
    expect(plan.problems.map((p) => `${p.line} ${p.field}: ${p.message}`)).toEqual(ATTACK_ANSWERS.map((a, i) => `${i + 2} ${a}`));
    expect(plan).toMatchObject({ total: 8, rejected: 7, refused: 0, wouldApply: { add: 1 } });
    expect(plan.rows!.filter((r) => r.verdict === 'rejected').map((r) => r.tenantId)).toEqual(Array(7).fill(null));
    leaksNothingOfA(JSON.stringify(plan));

    const batch = await provisioner.applyFile(file, {
      batchId: 'b-attack',
      within: ['cust-b'],
      createMissingOwners: true,
      invite: true,
      sealTo: PUBLIC,
      retry: { attempts: 2, backoffMs: 50 },
    });
    expect(batch.summary).toMatchObject({ total: 8, queued: 1, rejected: 7 });
    const [s] = await runUntilDone(e, ['b-attack'], { config });
    expect(s!.counts).toMatchObject({ applied: 1, rejected: 7, failed: 0 });
    // The scope is recorded with the batch's options (its page and status show it).
    expect(s!.options).toMatchObject({ within: ['cust-b'] });

    const report = await batch.report();
    expect(report.filter((r) => r.outcome === 'rejected').map((r) => r.error)).toEqual(ATTACK_ANSWERS);
    // A rejected row keeps what it said (its action, role, workspace_id as written), never an id it did not write.
    const rejected = report.filter((r) => r.outcome === 'rejected');
    expect(rejected.map((r) => r.tenantId ?? null)).toEqual(ATTACK.slice(0, 7).map((a) => a.workspace_id ?? null));
    expect(rejected.map((r) => `${r.action} ${r.role ?? ''}`)).toEqual(ATTACK.slice(0, 7).map((a) => `${a.action} ${a.role ?? ''}`));
    leaksNothingOfA(JSON.stringify(report.map(({ tenantId, ...r }) => (tenantId === WB ? { tenantId, ...r } : r))));

    // Nothing of A changed; no account and no invitation for the spies; B's own row applied.
    expect(await stateOf(e, WA)).toEqual(before);
    expect(await accountsNamed(e, 'spy%')).toEqual([]);
    const { rows: links } = await e.db.query(`SELECT email FROM dify_provision.invitations WHERE batch_id = 'b-attack'`);
    expect(links).toEqual([{ email: 'new@b.example' }]);
    expect(await stateOf(e, WB)).toMatchObject({ joins: expect.arrayContaining([{ email: 'new@b.example', role: 'normal' }]) });

    // Without --within (the operator's own file) the behaviour is unchanged: A is reachable.
    const own = await provisioner.planChanges(file, { createMissingOwners: true });
    // (Lines 4 and 5 name one person of one workspace, by workspace_id and by external_id: one change per person in a file.)
    expect(own.rejected).toBe(1);
    expect(own.problems.map((p) => `${p.line} ${p.field}: ${p.message.replace(/ \(.*$/, '')}`)).toContain(
      '5 email: line 4 changes this person in this workspace already',
    );
    expect(own.wouldApply).toMatchObject({ add: 2, remove: 1, rename: 1 });

    // Archiving A (a file of its own: the file's rules keep archive apart from member changes).
    const archive = await provisioner.apply([{ action: 'archive', workspace_id: WA }], { batchId: 'b-archive', within: ['cust-b'] });
    expect(archive.summary).toMatchObject({ queued: 0, rejected: 1 });
    expect((await archive.report()).map((r) => r.error)).toEqual([`workspace_id: ${SCOPE_B}`]);

    // A scope naming no batch, or a change batch, is refused before any row is read or recorded,
    // naming the id (not every row refused as outside a scope that cannot hold any workspace).
    const noSuch = '--within: there is no batch "cust-bb"';
    await expect(provisioner.planChanges(file, { within: ['cust-b', 'cust-bb'] })).rejects.toThrow(noSuch);
    // A plan refuses invitations without a key to seal their links to, as apply does.
    const seal = 'invitations need --seal-to operator-public.pem';
    await expect(provisioner.planChanges(file, { within: ['cust-b'], invite: true })).rejects.toThrow(seal);
    await expect(provisioner.applyFile(file, { batchId: 'b-typo', within: ['cust-b'], invite: true })).rejects.toThrow(seal);
    await expect(provisioner.applyFile(file, { batchId: 'b-typo', within: ['cust-bb'] })).rejects.toThrow(noSuch);
    await expect(
      provisioner.apply([{ action: 'archive', workspace_id: WB }], { batchId: 'b-typo', within: ['b-archive'] }),
    ).rejects.toThrow('--within: "b-archive" is a change batch; --within takes ingest batches');
    expect((await e.db.query(`SELECT id FROM dify_provision.batches WHERE id = 'b-typo'`)).rows).toEqual([]);
  });

  it("B's membership file (--sync) naming A's workspace is rejected before A's members are read: no removal, no line for A's people", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = configOf(e);
    await twoCustomers(e, config);
    const before = await stateOf(e, WA);
    const file = join(e.dir, 'b-members.csv');
    await writeFile(
      file,
      csvOf([
        { workspace_id: '', external_id: 'acme-001', email: 'spy@b.example', role: 'owner' },
        { workspace_id: WA, external_id: '', email: 'spy2@b.example', role: 'admin' },
        { workspace_id: '', external_id: 'beta-001', email: 'boss@b.example', role: 'owner' },
        { workspace_id: '', external_id: 'beta-001', email: 'staff@b.example', role: 'editor' },
      ]),
    );
    provisioner = await createProvisioner(config);
    const opts = { within: ['cust-b'], sync: true, createMissingOwners: true };
    const plan = await provisioner.planChanges(file, { ...opts, listRows: 100 });
    expect(plan.problems.map((p) => `${p.line} ${p.field}: ${p.message}`)).toEqual([
      `2 external_id: ${SCOPE_B}`,
      `3 workspace_id: ${SCOPE_B}`,
    ]);
    // Only the file's own lines: A's members would have become removals numbered after them.
    expect(plan.total).toBe(4);
    leaksNothingOfA(JSON.stringify(plan));

    const batch = await provisioner.applyFile(file, { ...opts, batchId: 'b-sync', retry: { attempts: 2, backoffMs: 50 } });
    expect(batch.summary).toMatchObject({ total: 4, rejected: 2 });
    const [s] = await runUntilDone(e, ['b-sync'], { config });
    expect(s!.counts).toMatchObject({ rejected: 2, failed: 0 });
    const report = await batch.report();
    expect(report.map((r) => r.line)).toEqual([2, 3, 4, 5]);
    // The entry that wrote A's id shows it as written; the one naming A by external_id shows none.
    expect(report.slice(0, 2).map((r) => `${r.tenantId} ${r.role}`)).toEqual(['null owner', `${WA} admin`]);
    leaksNothingOfA(JSON.stringify(report.map(({ tenantId, ...r }) => (tenantId === WA ? r : { tenantId, ...r }))));
    expect(await stateOf(e, WA)).toEqual(before);
    expect(await accountsNamed(e, 'spy%')).toEqual([]);
    expect(await stateOf(e, WB)).toMatchObject({ joins: expect.arrayContaining([{ email: 'staff@b.example', role: 'editor' }]) });
  });

  it('the worker refuses a row recorded in scope whose workspace is out of it when it runs, as the plan words it', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = configOf(e);
    await twoCustomers(e, config);
    provisioner = await createProvisioner(config);
    const batch = await provisioner.apply(
      [
        { action: 'rename', external_id: 'beta-001', name: 'Renamed' },
        { action: 'add_member', workspace_id: WB, email: 'late@b.example', role: 'admin' },
      ],
      { batchId: 'b-moved', within: ['cust-b'], createMissingOwners: true, retry: { attempts: 2, backoffMs: 50 } },
    );
    expect(batch.summary).toMatchObject({ queued: 2, rejected: 0 });
    // Recorded in scope; before it runs, the workspace is no longer one of cust-b's (our ledger
    // says another batch made it): the worker decides again on what it reads then.
    await e.db.query(`UPDATE dify_provision.ledger SET batch_id = 'cust-a' WHERE tenant_id = $1`, [WB]);
    const before = await stateOf(e, WB);
    const [s] = await runUntilDone(e, ['b-moved'], { config });
    expect(s!.counts).toMatchObject({ failed: 2, applied: 0 });
    expect((await batch.report()).map((r) => r.error)).toEqual([`external_id: ${SCOPE_B}`, `workspace_id: ${SCOPE_B}`]);
    expect(await stateOf(e, WB)).toEqual(before);
    expect(await accountsNamed(e, 'late%')).toEqual([]);
  });
});

describe('the HTTP API: within on POST /changes and /changes/plans', () => {
  it("rejects B's rows naming A's workspace, as JSON rows and as a CSV body (within=…), and changes nothing of A", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = configOf(e);
    await twoCustomers(e, config);
    const before = await stateOf(e, WA);
    const ADMIN = 'api-admin-token-0123456789';
    provisioner = provisionerOn(await openQueueRuntime(config, { logger: pino({ level: 'silent' }) }));
    const dashboard = await listeningDashboard(e, { token: ADMIN, provisioner, maxBytes: 1 << 20 });
    const api = (path: string, init: RequestInit = {}) =>
      fetch(`${dashboard.base}/api/v1${path}`, {
        ...init,
        headers: { authorization: `Bearer ${ADMIN}`, ...(init.headers as Record<string, string>) },
      });
    try {
      const options = { within: ['cust-b'], create_missing_owners: true };
      const plan = await answer(await api('/changes/plans', json({ rows: ATTACK, options })), 200, S.ChangePlanResponseSchema);
      expect(plan.problems.map((p) => `${p.line} ${p.field}: ${p.message}`)).toEqual(ATTACK_ANSWERS.map((a, i) => `${i + 1} ${a}`));
      leaksNothingOfA(JSON.stringify(plan));
      // A scope of no batch: refused, naming it (400), the plan and the batch alike; nothing recorded.
      const typo = { within: ['cust-bb'], create_missing_owners: true };
      const refusedPlan = await errorOf(await api('/changes/plans', json({ rows: ATTACK, options: typo })), 400);
      expect(refusedPlan.message).toContain('--within: there is no batch "cust-bb"');
      const refusedBatch = await errorOf(await api('/changes', json({ rows: ATTACK, batch_id: 'b-typo', options: typo })), 400);
      expect(refusedBatch.message).toContain('--within: there is no batch "cust-bb"');
      expect((await e.db.query(`SELECT id FROM dify_provision.batches WHERE id = 'b-typo'`)).rows).toEqual([]);
      // Invitations without seal_to: refused by the plan as by the batch.
      const unsealed = await errorOf(
        await api('/changes/plans', json({ rows: ATTACK, options: { within: ['cust-b'], invite: true } })),
        400,
      );
      expect(unsealed.message).toContain('invitations need --seal-to operator-public.pem');
      const csvPlan = await answer(
        await api('/changes/plans?within=cust-b&create_missing_owners=true', {
          method: 'POST',
          headers: { 'content-type': 'text/csv' },
          body: changesCsv(ATTACK),
        }),
        200,
        S.ChangePlanResponseSchema,
      );
      expect(csvPlan.problems.map((p) => `${p.line} ${p.field}: ${p.message}`)).toEqual(ATTACK_ANSWERS.map((a, i) => `${i + 2} ${a}`));

      const made = await answer(
        await api('/changes', json({ rows: ATTACK, batch_id: 'b-api', options: { ...options, attempts: 2, backoff_ms: 50 } })),
        201,
        S.ApplyResponseSchema,
      );
      expect(made).toMatchObject({ total: 8, queued: 1, rejected: 7 });
      expect(made.rejected_rows.map((r) => `${r.errors[0]!.field}: ${r.errors[0]!.message}`)).toEqual(ATTACK_ANSWERS);
      leaksNothingOfA(JSON.stringify(made));
      const fromCsv = await answer(
        await api('/changes?within=cust-b&create_missing_owners=true&batch_id=b-api-csv', {
          method: 'POST',
          headers: { 'content-type': 'text/csv' },
          body: changesCsv(ATTACK),
        }),
        201,
        S.ApplyResponseSchema,
      );
      expect(fromCsv).toMatchObject({ total: 8, queued: 1, rejected: 7 });
      const statuses = await runUntilDone(e, ['b-api', 'b-api-csv'], { config });
      expect(statuses.map((s) => s.counts.failed)).toEqual([0, 0]);
      expect(statuses[0]!.options).toMatchObject({ within: ['cust-b'] });
      expect(await stateOf(e, WA)).toEqual(before);
      expect(await accountsNamed(e, 'spy%')).toEqual([]);
    } finally {
      await dashboard.close();
    }
  });
});
