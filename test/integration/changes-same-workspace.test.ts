// A changes file's rules hold for the workspace, however a line names it, and a membership file
// (--sync) never removes a person it lists. Found by a new user's trial:
// - a sync line that is rejected (a role typo, a bad email, a second owner) made its person a
//   member "the file does not list": removed in the same batch;
// - one workspace named by external_id on one line and by its workspace_id on another escaped the
//   one-rename / one-transfer / one-change-per-person rules (both renames applied, the name
//   depending on the run order), and a sync file split it into two workspaces (add_member and
//   remove_member of one person in one batch).
// Real PostgreSQL and Redis; the plan (dry run) and the run say the same.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describePlan, type ChangePlan } from '../../src/changes/plan.js';
import { createProvisioner, type Provisioner } from '../../src/provisioner.js';
import type { ReportRow } from '../../src/store/report.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { difyInvitationSettings } from '../helpers/dify-invitations.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { closeEachTest } from '../helpers/world.js';

let env: TestEnv | undefined;
let provisioner: Provisioner | undefined;
closeEachTest(
  () => ({ provisioner, env }),
  (none) => ({ provisioner, env } = none),
);

const HOOLI = randomUUID();
const PIED = randomUUID();
const RAVIGA = randomUUID();

/** Three workspaces made by ingest, each with an external_id. */
async function world(e: TestEnv, config: TestEnv['config']): Promise<void> {
  await ingestCsv(
    e,
    csvOf([
      {
        workspace_name: 'Hooli',
        owner_email: 'farah@hooli.example',
        members: 'gus@hooli.example:normal;hank@hooli.example:normal',
        workspace_id: HOOLI,
        external_id: 'crm-1006',
      },
      {
        workspace_name: 'Pied Piper',
        owner_email: 'richard@pied.example',
        members: 'bob@pied.example:normal;jared@pied.example:admin',
        workspace_id: PIED,
        external_id: 'crm-1003',
      },
      {
        workspace_name: 'Raviga',
        owner_email: 'laurie@raviga.example',
        members: 'monica@raviga.example:normal;ed@raviga.example:normal',
        workspace_id: RAVIGA,
        external_id: 'crm-1009',
      },
    ]),
    'world',
    { createMissingOwners: true },
  );
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

async function nameOf(e: TestEnv, tenantId: string): Promise<string> {
  const { rows } = await e.db.query<{ name: string }>(`SELECT name FROM tenants WHERE id = $1`, [tenantId]);
  return rows[0]!.name;
}

const planned = (p: ChangePlan) => p.rows!.map((r) => `${r.line} ${r.verdict} ${r.email ?? '-'}`);
const problems = (p: ChangePlan) => p.problems.map((x) => `${x.line} ${x.field}: ${x.message}`);
const answered = (rows: ReportRow[]) => rows.map((r) => `${r.line} ${r.action ?? '-'} ${r.outcome} ${r.ownerEmail ?? '-'}`);
const errors = (rows: ReportRow[]) =>
  rows.filter((r) => r.outcome === 'rejected' || r.outcome === 'failed').map((r) => `${r.line} ${r.error}`);

async function fileOf(e: TestEnv, name: string, rows: Record<string, string>[]): Promise<string> {
  const path = join(e.dir, name);
  await writeFile(path, csvOf(rows));
  return path;
}

async function applyAndRun(e: TestEnv, config: TestEnv['config'], file: string, batchId: string, opts = {}): Promise<ReportRow[]> {
  const batch = await provisioner!.applyFile(file, { batchId, retry: { attempts: 2, backoffMs: 50 }, ...opts });
  const [s] = await runUntilDone(e, [batchId], { config });
  expect(s!.done).toBe(true);
  return batch.report();
}

describe('apply --sync with a rejected line', () => {
  it("withholds the removals of the rejected line's workspace, naming the line, and applies the rest; the plan says the same", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difyInvitationSettings(8, `dify-${e.name}`) };
    await world(e, config);
    provisioner = await createProvisioner(config);
    const file = await fileOf(e, 'sync3.csv', [
      // Hooli: gus's role mistyped (line 3); hank, not listed, would be removed.
      { workspace_id: '', external_id: 'crm-1006', email: 'farah@hooli.example', role: 'owner' },
      { workspace_id: '', external_id: 'crm-1006', email: 'gus@hooli.example', role: 'edtor' },
      // Pied Piper: a bad email (line 5), a second owner (line 6): bob and jared stay.
      { workspace_id: PIED, external_id: '', email: 'richard@pied.example', role: 'owner' },
      { workspace_id: PIED, external_id: '', email: 'bob@pied', role: 'normal' },
      { workspace_id: PIED, external_id: '', email: 'jared@pied.example', role: 'owner' },
      // Raviga: every line fine: ed (not listed) is removed.
      { workspace_id: '', external_id: 'crm-1009', email: 'laurie@raviga.example', role: 'owner' },
      { workspace_id: '', external_id: 'crm-1009', email: 'monica@raviga.example', role: 'editor' },
    ]);
    const plan = await provisioner.planChanges(file, { sync: true, listRows: 100 });
    expect(describePlan(plan)).toBe('would remove 1, re-role 1; 3 unchanged; 7 refused');
    expect(planned(plan)).toEqual([
      '2 unchanged farah@hooli.example',
      '3 rejected gus@hooli.example',
      '4 unchanged richard@pied.example',
      '5 rejected bob@pied',
      '6 rejected jared@pied.example',
      '7 unchanged laurie@raviga.example',
      '8 re-role monica@raviga.example',
      '9 rejected gus@hooli.example',
      '10 rejected hank@hooli.example',
      '11 rejected bob@pied.example',
      '12 rejected jared@pied.example',
      '13 remove ed@raviga.example',
    ]);
    const withheld = (who: string, lines: string) =>
      `email: ${who} is not listed but is not removed: ${lines} naming this workspace ${lines.startsWith('lines') ? 'are' : 'is'} rejected: --sync removes no one from a workspace while a rejected line may list them; correct ${lines} and apply again`;
    expect(problems(plan).filter((p) => Number(p.split(' ')[0]) > 8)).toEqual([
      `9 ${withheld('gus@hooli.example', 'line 3')}`,
      `10 ${withheld('hank@hooli.example', 'line 3')}`,
      `11 ${withheld('bob@pied.example', 'lines 5, 6')}`,
      `12 ${withheld('jared@pied.example', 'lines 5, 6')}`,
    ]);

    const report = await applyAndRun(e, config, file, 'sync3', { sync: true });
    expect(answered(report)).toEqual([
      '2 transfer_owner unchanged farah@hooli.example',
      '3 - rejected gus@hooli.example',
      '4 transfer_owner unchanged richard@pied.example',
      '5 - rejected bob@pied',
      '6 - rejected jared@pied.example',
      '7 transfer_owner unchanged laurie@raviga.example',
      '8 set_role applied monica@raviga.example',
      '9 - rejected gus@hooli.example',
      '10 - rejected hank@hooli.example',
      '11 - rejected bob@pied.example',
      '12 - rejected jared@pied.example',
      '13 remove_member applied ed@raviga.example',
    ]);
    // The run's errors are the plan's problems, word for word.
    expect(errors(report)).toEqual(problems(plan));
    expect(await joins(e, HOOLI)).toEqual({
      'farah@hooli.example': 'owner',
      'gus@hooli.example': 'normal',
      'hank@hooli.example': 'normal',
    });
    expect(await joins(e, PIED)).toEqual({
      'bob@pied.example': 'normal',
      'jared@pied.example': 'admin',
      'richard@pied.example': 'owner',
    });
    expect(await joins(e, RAVIGA)).toEqual({ 'laurie@raviga.example': 'owner', 'monica@raviga.example': 'editor' });
  });

  it("withholds every removal while a rejected line's workspace cannot be read", async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difyInvitationSettings(8, `dify-${e.name}`) };
    await world(e, config);
    provisioner = await createProvisioner(config);
    const file = await fileOf(e, 'sync-unreadable.csv', [
      { workspace_id: '', external_id: 'crm-1009', email: 'laurie@raviga.example', role: 'owner' },
      { workspace_id: '', external_id: 'crm-1009', email: 'monica@raviga.example', role: 'normal' },
      // Which workspace? Neither id given: it could list ed.
      { workspace_id: '', external_id: '', email: 'ed@raviga.example', role: 'normal' },
    ]);
    const plan = await provisioner.planChanges(file, { sync: true, listRows: 100 });
    expect(describePlan(plan)).toBe('would change nothing; 2 unchanged; 2 refused');
    expect(problems(plan)).toEqual([
      '4 workspace_id: is required (or external_id)',
      '5 email: ed@raviga.example is not listed but is not removed: line 4 of the file is rejected and its workspace cannot be read: --sync removes no one while a rejected line could list them; correct line 4 and apply again',
    ]);
    const report = await applyAndRun(e, config, file, 'sync-unreadable', { sync: true });
    expect(errors(report)).toEqual(problems(plan));
    expect(report.filter((r) => r.outcome === 'applied')).toEqual([]);
    expect(await joins(e, RAVIGA)).toEqual({
      'ed@raviga.example': 'normal',
      'laurie@raviga.example': 'owner',
      'monica@raviga.example': 'normal',
    });
  });
});

describe('one workspace named by external_id and by workspace_id in one file', () => {
  it('is one workspace for the per-workspace rules: the later line is refused naming the earlier, in the plan and the run', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difyInvitationSettings(8, `dify-${e.name}`) };
    await world(e, config);
    provisioner = await createProvisioner(config);
    const file = await fileOf(e, 'mixed.csv', [
      { action: 'rename', workspace_id: '', external_id: 'crm-1003', email: '', role: '', name: 'Pied Piper Inc' },
      { action: 'rename', workspace_id: PIED, external_id: '', email: '', role: '', name: 'Pied Piper LLC' },
      { action: 'transfer_owner', workspace_id: '', external_id: 'crm-1003', email: 'jared@pied.example', role: '', name: '' },
      { action: 'transfer_owner', workspace_id: PIED, external_id: '', email: 'bob@pied.example', role: '', name: '' },
      // One change per person: bob by its id, then by its external_id.
      { action: 'set_role', workspace_id: HOOLI, external_id: '', email: 'gus@hooli.example', role: 'editor', name: '' },
      { action: 'remove_member', workspace_id: '', external_id: 'crm-1006', email: 'gus@hooli.example', role: '', name: '' },
      // Archive by one name, a member change by the other.
      { action: 'archive', workspace_id: '', external_id: 'crm-1009', email: '', role: '', name: '' },
      { action: 'remove_member', workspace_id: RAVIGA, external_id: '', email: 'ed@raviga.example', role: '', name: '' },
    ]);
    const plan = await provisioner.planChanges(file, { listRows: 100 });
    const refused = [
      `3 action: line 2 renames this workspace already (the same workspace, named there by its external_id)`,
      `5 action: line 4 transfers this workspace's ownership already: it has one owner (the same workspace, named there by its external_id)`,
      `7 email: line 6 changes this person in this workspace already (set_role): one change per person and workspace in a file (external_id "crm-1006" is workspace ${HOOLI})`,
      `9 action: line 8 archives or restores this workspace: put member changes of it in another file (the same workspace, named there by its external_id)`,
    ];
    expect(problems(plan)).toEqual(refused);
    expect(describePlan(plan)).toBe('would re-role 1, transfer 1, rename 1, archive 1; 4 refused');

    const report = await applyAndRun(e, config, file, 'mixed');
    expect(errors(report)).toEqual(refused);
    expect(answered(report).filter((r) => r.includes('applied'))).toEqual([
      '2 rename applied -',
      '4 transfer_owner applied jared@pied.example',
      '6 set_role applied gus@hooli.example',
      '8 archive applied -',
    ]);
    expect(await nameOf(e, PIED)).toBe('Pied Piper Inc');
    expect(await joins(e, PIED)).toEqual({
      'bob@pied.example': 'normal',
      'jared@pied.example': 'owner',
      'richard@pied.example': 'admin',
    });
    expect(await joins(e, HOOLI)).toMatchObject({ 'gus@hooli.example': 'editor' });
    expect(await joins(e, RAVIGA)).toMatchObject({ 'ed@raviga.example': 'normal' });
  });

  it('an add_member by external_id and the transfer to that person by workspace_id: the transfer waits for the add', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difyInvitationSettings(8, `dify-${e.name}`) };
    await world(e, config);
    provisioner = await createProvisioner(config);
    const rows = [
      { action: 'add_member', external_id: 'crm-1003', email: 'gavin@pied.example', role: 'admin' },
      { action: 'transfer_owner', workspace_id: PIED, email: 'gavin@pied.example' },
      { action: 'remove_member', workspace_id: PIED, email: 'richard@pied.example' },
    ];
    const plan = await provisioner.planChanges(rows, { createMissingOwners: true });
    expect(describePlan(plan)).toBe('would add 1, remove 1, transfer 1');
    await provisioner.apply(rows, { batchId: 'add-then-own', createMissingOwners: true, retry: { attempts: 2, backoffMs: 50 } });
    // Recorded in that order: the transfer waits for the add, the old owner's removal for the transfer.
    const { rows: waits } = await e.db.query<{ line: number; after: number | null }>(
      `SELECT line, (spec->>'afterLine')::int AS after FROM dify_provision.rows WHERE batch_id = 'add-then-own' ORDER BY line`,
    );
    expect(waits).toEqual([
      { line: 1, after: null },
      { line: 2, after: 1 },
      { line: 3, after: 2 },
    ]);
    await runUntilDone(e, ['add-then-own'], { config });
    const report = await provisioner.batch('add-then-own').report();
    expect(answered(report)).toEqual([
      '1 add_member applied gavin@pied.example',
      '2 transfer_owner applied gavin@pied.example',
      '3 remove_member applied richard@pied.example',
    ]);
    expect(await joins(e, PIED)).toEqual({
      'bob@pied.example': 'normal',
      'gavin@pied.example': 'owner',
      'jared@pied.example': 'admin',
    });
  });

  it('apply --sync: the lines of one workspace are one membership however they name it', async () => {
    env = await createTestEnv({ schema: 'latest' });
    const e = env;
    const config = { ...e.config, invitations: difyInvitationSettings(8, `dify-${e.name}`) };
    await world(e, config);
    provisioner = await createProvisioner(config);
    const file = await fileOf(e, 'sync-mixed.csv', [
      // Pied Piper: the owner by external_id, bob by its id: bob is listed (jared, not listed, removed).
      { workspace_id: '', external_id: 'crm-1003', email: 'richard@pied.example', role: 'owner' },
      { workspace_id: PIED, external_id: '', email: 'bob@pied.example', role: 'normal' },
      // Hooli: gus twice (line 5 by the other name) and a second owner by the other name: refused,
      // and Hooli's removals withheld (hank stays).
      { workspace_id: HOOLI, external_id: '', email: 'farah@hooli.example', role: 'owner' },
      { workspace_id: HOOLI, external_id: '', email: 'gus@hooli.example', role: 'normal' },
      { workspace_id: '', external_id: 'crm-1006', email: 'gus@hooli.example', role: 'admin' },
      { workspace_id: '', external_id: 'crm-1006', email: 'hank@hooli.example', role: 'owner' },
    ]);
    const plan = await provisioner.planChanges(file, { sync: true, listRows: 100 });
    const refused = [
      `6 email: line 5 lists this person in this workspace already (external_id "crm-1006" is workspace ${HOOLI})`,
      `7 role: line 4 names this workspace's owner already: a workspace has one owner (external_id "crm-1006" is workspace ${HOOLI})`,
      '9 email: hank@hooli.example is not listed but is not removed: lines 6, 7 naming this workspace are rejected: --sync removes no one from a workspace while a rejected line may list them; correct lines 6, 7 and apply again',
    ];
    expect(problems(plan)).toEqual(refused);
    expect(describePlan(plan)).toBe('would remove 1; 4 unchanged; 3 refused');
    expect(planned(plan).filter((r) => r.includes('remove'))).toEqual(['8 remove jared@pied.example']);

    const report = await applyAndRun(e, config, file, 'sync-mixed', { sync: true });
    expect(errors(report)).toEqual(refused);
    expect(answered(report)).toEqual([
      '2 transfer_owner unchanged richard@pied.example',
      '3 add_member unchanged bob@pied.example',
      '4 transfer_owner unchanged farah@hooli.example',
      '5 add_member unchanged gus@hooli.example',
      '6 - rejected gus@hooli.example',
      '7 - rejected hank@hooli.example',
      '8 remove_member applied jared@pied.example',
      '9 - rejected hank@hooli.example',
    ]);
    expect(await joins(e, PIED)).toEqual({ 'bob@pied.example': 'normal', 'richard@pied.example': 'owner' });
    expect(await joins(e, HOOLI)).toEqual({
      'farah@hooli.example': 'owner',
      'gus@hooli.example': 'normal',
      'hank@hooli.example': 'normal',
    });
  });
});
