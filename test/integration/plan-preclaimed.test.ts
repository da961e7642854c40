// The dry run and the worker's pre-claim guard (docs/security.md): a row the guard will refuse is
// planned would_fail with the worker's own words (line and field), unless the plan is given the
// address to trust, the link was only mailed to the person, or the link is the planned batch's own.
// The links are made as the attacks make them (invite-cross-attack.test.ts): real workers, Dify's
// Redis, `secrets --invites`, the activation Dify writes.
import { generateKeyPairSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Redis } from 'ioredis';
import { describe, expect, inject, it } from 'vitest';
import type { SmtpSettings } from '../../src/config/dify-env.js';
import { probeDifySchema } from '../../src/dify/schema-probe.js';
import { planBatch, type PlanBatchOptions } from '../../src/ingest/plan.js';
import { readRows } from '../../src/input/read-rows.js';
import { createProvisioner, type Provisioner, type WorkspaceInput } from '../../src/provisioner.js';
import * as S from '../../src/dashboard/api/schemas.js';
import { csvOf, runLoggedUntilDone } from '../helpers/batch.js';
import { answer, json } from '../helpers/api-calls.js';
import { listeningDashboard } from '../helpers/dashboard.js';
import { activateAsDify as activate, difyInvitationSettings, operatorPems } from '../helpers/dify-invitations.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp-server.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { closeEachTest } from '../helpers/world.js';

const DIFY_DB = 12;
const { PUBLIC, PRIVATE } = operatorPems();
const CEO = 'ceo@a.example';
/** Another operator's public key (A's, where B's is PUBLIC). */
const OTHER = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();

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
  const config = { ...env.config, invitations: difyInvitationSettings(DIFY_DB, `dify-${env.name}`), mail };
  provisioner = await createProvisioner(config);
  return config;
}

async function run(
  config: TestEnv['config'],
  rows: WorkspaceInput[],
  batchId: string,
  opts: { invitePending?: boolean; sendInvites?: boolean; invite?: boolean; trustAccounts?: string[]; sealTo?: string } = {},
): Promise<void> {
  await provisioner!.enqueue(rows, { batchId, createMissingOwners: true, invite: true, sealTo: PUBLIC, ...opts });
  await runLoggedUntilDone(env, config, [batchId]);
}

/** `secrets --invites` of a batch: the emails its links file holds. */
async function reveal(batchId: string): Promise<string[]> {
  const out = join(env.dir, `${batchId}.csv`);
  await provisioner!.revealInvitations(batchId, PRIVATE, out);
  const [, ...lines] = (await readFile(out, 'utf8')).trim().split('\n');
  return lines.map((l) => l.split(',')[3]!);
}

/** What Dify's activation writes when the holder of a link sets the password (helpers/dify-invitations.ts). */
const activateAsDify = (email: string, password: string) => activate(env.db, dify!, `dify-${env.name}`, email, password);

/** B's batch creates the address as a member of B's workspace, B's operator reveals its link, and B activates it. */
async function preclaimed(config: TestEnv['config']): Promise<void> {
  await run(config, [{ workspace_name: 'B Corp', owner_email: 'b-owner@b.example', members: `${CEO}:normal` }], 'cust-b');
  expect(await reveal('cust-b')).toContain(CEO);
  await activateAsDify(CEO, 'b-knows-this');
}

/** JSON rows as a CSV file's (each column any row has). */
function csvOfInputs(rows: WorkspaceInput[]): string {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return csvOf(rows.map((r) => Object.fromEntries(cols.map((c) => [c, String(new Map(Object.entries(r)).get(c) ?? '')]))));
}

/** The plan of these rows (as JSON rows' lines: 1, 2, …) for the batch `batchId`. */
async function planOf(rows: WorkspaceInput[], opts: Partial<PlanBatchOptions> = {}) {
  const csv = csvOfInputs(rows);
  const plan = await planBatch(readRows(Readable.from([csv])), env.db, {
    accounts: { normalized: (await probeDifySchema(env.db)).normalizedEmail },
    createMissingAccounts: true,
    listRows: 100,
    ...opts,
  });
  return {
    ...plan,
    verdicts: plan.rows!.map((r) => `${r.line - 1}:${r.verdict}`),
    said: plan.problems.map((p) => `${p.line - 1} ${p.field}: ${p.message}`),
  };
}

/** A batch's rows as its report says them: "line field: message" for the failed ones. */
const reportOf = async (batchId: string) =>
  (await provisioner!.batch(batchId).report()).map((r) => (r.outcome === 'failed' ? `${r.line} ${r.error}` : `${r.line}:${r.outcome}`));

const CREATES =
  /^[12] (owner_email|members): ceo@a\.example: this account was created or invited by another batch and is active, .*--trust-account ceo@a\.example\)/;
const EXISTS =
  /^1 owner_email: boss@victim\.example: this row's workspace exists already, and this account's link was given to the operator of another batch, .*--trust-account boss@victim\.example\)/;

describe('the plan of rows naming an account whose link went to another batch’s operator', () => {
  it('new workspaces: would_fail in the words the worker then fails them with; trusted (any case), or planned for that batch, would_create', async () => {
    const config = await world();
    await preclaimed(config);
    const rows: WorkspaceInput[] = [
      { workspace_name: 'A Corp', owner_email: CEO },
      { workspace_name: 'A Two', owner_email: 'cfo@a.example', members: `${CEO}:admin` },
      { workspace_name: 'A Three', owner_email: 'someone@a.example' },
    ];
    const plan = await planOf(rows, { batchId: 'cust-a' });
    expect(plan.verdicts).toEqual(['1:would_fail', '2:would_fail', '3:would_create']);
    expect(plan).toMatchObject({ wouldFail: 2, wouldCreate: 1 });
    expect(plan.said.map((s) => s.split(':')[0])).toEqual(['1 owner_email', '2 members']);
    for (const s of plan.said) expect(s).toMatch(CREATES);
    expect(plan.said.join('\n')).not.toContain('cust-b');

    // The run: the worker fails exactly those rows, with exactly those words.
    await run(config, rows, 'cust-a', { invite: false });
    expect(await reportOf('cust-a')).toEqual([...plan.said, '3:created']);

    // Trusted: as --trust-account (ignoring case) would let them through (line 3 is cust-a's workspace now).
    expect((await planOf(rows, { batchId: 'cust-a2', trustAccounts: ['CEO@A.example'] })).verdicts).toEqual([
      '1:would_create',
      '2:would_create',
      '3:existing',
    ]);
    // The batch whose operator holds the link: its own link is no pre-claim (a re-run of B with more rows).
    expect((await planOf([rows[0]!], { batchId: 'cust-b' })).verdicts).toEqual(['1:would_create']);
    // No batch named: a new one (as stdin's or the API's rows get), refused as cust-a was.
    expect((await planOf([rows[0]!])).verdicts).toEqual(['1:would_fail']);

    // A file's batch that created its row trusting the address (under another operator key),
    // planned again as itself: the row is its own (existing), not refused; ingesting the file
    // again queues nothing.
    const trustedFile = join(env.dir, 'a-trusted.csv');
    await writeFile(trustedFile, csvOfInputs([rows[0]!]));
    await provisioner!.enqueueCsv(trustedFile, {
      batchId: 'cust-a-trusted',
      createMissingOwners: true,
      trustAccounts: [CEO],
      sealTo: OTHER,
    });
    await runLoggedUntilDone(env, config, ['cust-a-trusted']);
    expect(await reportOf('cust-a-trusted')).toEqual(['2:created']);
    expect((await planOf([rows[0]!], { batchId: 'cust-a-trusted' })).verdicts).toEqual(['1:existing']);
    // Another batch with that row is refused its existing answer (B's operator holds the link).
    expect((await planOf([rows[0]!], { batchId: 'cust-a4' })).verdicts).toEqual(['1:would_fail']);

    // The library's plan() and the API's POST /plans say the same.
    const file = join(env.dir, 'a.csv');
    await writeFile(file, csvOfInputs([rows[1]!]));
    const lib = await provisioner!.plan(file, { createMissingOwners: true, batchId: 'cust-a3' });
    expect(lib).toMatchObject({ wouldFail: 1, problems: [{ line: 2, field: 'members', message: plan.problems[1]!.message }] });
    const libTrusted = await provisioner!.plan(file, { createMissingOwners: true, batchId: 'cust-a3', trustAccounts: [CEO] });
    expect(libTrusted).toMatchObject({ wouldFail: 0, wouldCreate: 1 });
    const TOKEN = 'plan-preclaim-token-0123456789abcdef';
    const dashboard = await listeningDashboard(env, { token: TOKEN });
    try {
      const post = (body: unknown) =>
        fetch(`${dashboard.base}/api/v1/plans`, json(body, { authorization: `Bearer ${TOKEN}` })).then((r) =>
          answer(r, 200, S.PlanResponseSchema),
        );
      const options = { create_missing_owners: true };
      expect(await post({ rows: [rows[1]], options })).toMatchObject({
        would_fail: 1,
        problems: [{ line: 1, field: 'members', message: plan.problems[1]!.message }],
      });
      expect(await post({ rows: [rows[1]], options: { ...options, trust_accounts: [CEO] } })).toMatchObject({ would_create: 1 });
      expect(await post({ rows: [rows[1]], batch_id: 'cust-b', options })).toMatchObject({ would_create: 1 });
    } finally {
      await dashboard.close();
    }
  });

  it('a link only mailed to the address itself (never revealed) is no pre-claim: would_create, and the worker creates it; a revealed one beside it would_fail', async () => {
    const config = await world();
    // X creates the person (its link sealed, never revealed); B names them as owner with
    // --invite-pending --send-invites: B's link is only mailed to them. They activate with it.
    await run(config, [{ workspace_name: 'X Corp', owner_email: 'x-owner@x.example', members: `${CEO}:normal` }], 'cust-x');
    await run(config, [{ workspace_name: 'B Corp', owner_email: CEO }], 'cust-b', { invitePending: true, sendInvites: true });
    expect((await provisioner!.batch('cust-b').report())[0]!.invitations).toMatch(/^ceo@a\.example: link mailed to them only/);
    await activateAsDify(CEO, 'the-person-chose-this');
    // Another address, whose link C's operator revealed and used.
    await run(config, [{ workspace_name: 'C Corp', owner_email: 'cto@a.example' }], 'cust-c');
    expect(await reveal('cust-c')).toEqual(['cto@a.example']);
    await activateAsDify('cto@a.example', 'c-knows-this');

    const rows = [
      { workspace_name: 'A Corp', owner_email: CEO },
      { workspace_name: 'A Two', owner_email: 'cto@a.example' },
    ];
    const plan = await planOf(rows, { batchId: 'cust-a' });
    expect(plan.verdicts).toEqual(['1:would_create', '2:would_fail']);
    await run(config, rows, 'cust-a');
    expect(await reportOf('cust-a')).toEqual(['1:created', ...plan.said]);
  });

  it("rows answered existing (B's row made A's workspace, B's operator holds its owner's link): would_fail as the worker says; trusted, B's own batch, or the same --seal-to key, existing", async () => {
    const config = await world();
    const row: WorkspaceInput = { workspace_name: 'Victim Two', owner_email: 'boss@victim.example', external_id: 'vt-2' };
    await run(config, [row], 'cust-b');
    expect(await reportOf('cust-b')).toEqual(['1:created']);

    const plan = await planOf([row], { batchId: 'cust-a', sealTo: OTHER });
    expect(plan.verdicts).toEqual(['1:would_fail']);
    expect(plan.said).toEqual([expect.stringMatching(EXISTS)]);
    expect(plan.said[0]).not.toContain('cust-b');
    // Without a key at all, the same.
    expect((await planOf([row], { batchId: 'cust-a' })).verdicts).toEqual(['1:would_fail']);

    // The run: the worker refuses the row with exactly those words.
    await provisioner!.enqueue([row], { batchId: 'cust-a', createMissingOwners: true, sealTo: OTHER });
    await runLoggedUntilDone(env, config, ['cust-a']);
    expect(await reportOf('cust-a')).toEqual(plan.said);

    // Trusted (any case): existing.
    expect((await planOf([row], { batchId: 'cust-a', trustAccounts: ['Boss@Victim.example'] })).verdicts).toEqual(['1:existing']);
    // B's own batch planned again: existing.
    expect((await planOf([row], { batchId: 'cust-b' })).verdicts).toEqual(['1:existing']);
    // A new batch under B's operator key (--seal-to, not recorded yet): existing, as its run answers.
    expect((await planOf([row], { batchId: 'cust-b-again', sealTo: PUBLIC })).verdicts).toEqual(['1:existing']);
    // A recorded batch keeps its own key: cust-a was made with the other one, whatever the plan is given now.
    expect((await planOf([row], { batchId: 'cust-a', sealTo: PUBLIC })).verdicts).toEqual(['1:would_fail']);
    await run(config, [row], 'cust-b-again', { invite: false });
    expect(await reportOf('cust-b-again')).toEqual(['1:existing']);
  });

  it("apply's plan: add_member and transfer_owner of the address are refused in the words apply's worker uses; trusted, add and transfer", async () => {
    const config = await world();
    await preclaimed(config);
    await run(config, [{ workspace_name: 'A Corp', owner_email: 'cfo@a.example' }], 'cust-a', { invite: false });
    const a = (await env.db.query<{ id: string }>(`SELECT id FROM tenants WHERE name = 'A Corp'`)).rows[0]!.id;
    const changes = [
      { action: 'add_member', workspace_id: a, email: CEO, role: 'admin' },
      { action: 'transfer_owner', workspace_id: a, email: CEO },
    ];
    const plan = await provisioner!.planChanges(changes, { listRows: 10 });
    expect(plan.rows!.map((r) => `${r.line}:${r.verdict}`)).toEqual(['1:refused', '2:refused']);
    expect(plan.problems[0]).toMatchObject({ line: 1, field: 'email' });
    expect(plan.problems[0]!.message).toMatch(
      /^ceo@a\.example: this account was created or invited by another batch .*--trust-account ceo@a\.example\)/,
    );
    expect(plan.problems[0]!.message).not.toContain('cust-b');
    // Trusted: the add, then the transfer to the member it made.
    const trusted = await provisioner!.planChanges(changes, { listRows: 10, trustAccounts: ['CEO@a.example'] });
    expect(trusted.rows!.map((r) => `${r.line}:${r.verdict}`)).toEqual(['1:add', '2:transfer']);
    // The run: apply's worker refuses the add with exactly the plan's words.
    await provisioner!.apply([changes[0]!], { batchId: 'a-add' });
    await runLoggedUntilDone(env, config, ['a-add']);
    expect(await reportOf('a-add')).toEqual([`1 email: ${plan.problems[0]!.message}`]);
  });
});
