// Every Dify release band since 0.15: the schema is recognised, each workspace is exactly what that
// release's create_tenant writes, keys are proven, re-runs create nothing twice, missing owners
// are created, API keys minted, and doctor knows what each band must have.
import { describe, expect, it } from 'vitest';
import { describeSchema, probeDifySchema } from '../../src/dify/schema-probe.js';
import { runDoctor } from '../../src/doctor/doctor.js';
import { createProvisioner } from '../../src/provisioner.js';
import { csvOf, ingestCsv, runUntilDone } from '../helpers/batch.js';
import { BANDS, expectCreatedAccount, expectDifyWorkspace, KNOWN_SLOTS, type BandName } from '../helpers/dify-checks.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { freshEnvEachTest } from '../helpers/world.js';

const RELEASES: Record<BandName, string> = {
  '1.6': 'Dify schema: 0.15.0 – 1.6.0 (the tenant and its joins only)',
  '1.9': 'Dify schema: 1.7.0 – 1.10.0 (one auto-upgrade strategy row, varchar[] lists)',
  '1.11': 'Dify schema: 1.10.1 – 1.11.2 (one auto-upgrade strategy row, json lists)',
  '1.13': 'Dify schema: 1.11.3 – 1.14.2 (one auto-upgrade strategy row, trial credit pool)',
  '1.16': 'Dify schema: 1.15.0 and later (six auto-upgrade strategy rows, trial credit pool)',
  latest: 'Dify schema: 1.15.0 and later (six auto-upgrade strategy rows, trial credit pool)',
};
const [ID1, ID2] = Object.keys(KNOWN_SLOTS) as [string, string];

describe.each(Object.keys(BANDS) as BandName[])('Dify schema %s', (name) => {
  let env: TestEnv;
  freshEnvEachTest((e) => (env = e), { schema: name, trialCredits: 150 });

  it('is recognised as its band', async () => {
    const schema = await probeDifySchema(env.db);
    expect(schema.band).toBe(BANDS[name].band);
    expect(describeSchema(schema)).toBe(RELEASES[name]);
  });

  it("writes exactly that release's rows, proves the keys, and creates nothing twice", async () => {
    const rows = [
      {
        workspace_name: 'Acme',
        owner_email: 'owner1@example.com',
        members: 'owner2@example.com:admin;owner3@example.com:normal',
        workspace_id: ID1,
        plan: 'team',
      },
      {
        workspace_name: 'Invited',
        owner_email: 'new.owner@example.com',
        members: 'new.member@example.com:editor;owner2@example.com:normal',
        workspace_id: ID2,
        plan: '',
      },
    ];
    await ingestCsv(env, csvOf(rows), 'band', { createMissingOwners: true });
    const [status] = await runUntilDone(env, ['band']);
    expect(status!.counts).toMatchObject({ created: 2, failed: 0 });
    await expectDifyWorkspace(env, name, ID1, {
      name: 'Acme',
      plan: 'team',
      owner: 'owner1@example.com',
      members: [
        { email: 'owner2@example.com', role: 'admin' },
        { email: 'owner3@example.com', role: 'normal' },
      ],
      credits: 150,
    });
    // A created member is what Dify's invite registers and switches into the workspace; a created
    // owner and an existing member are not switched (Dify's create path leaves `current` false).
    await expectDifyWorkspace(env, name, ID2, {
      name: 'Invited',
      owner: 'new.owner@example.com',
      members: [
        { email: 'new.member@example.com', role: 'editor', invited: true },
        { email: 'owner2@example.com', role: 'normal' },
      ],
      credits: 150,
    });
    await expectCreatedAccount(env, name, 'new.owner@example.com');
    await expectCreatedAccount(env, name, 'new.member@example.com');
    // Accounts that existed are left as they were.
    const { rows: existing } = await env.db.query(
      `SELECT initialized_at FROM accounts WHERE email IN ('owner1@example.com', 'owner2@example.com', 'owner3@example.com')`,
    );
    expect(existing).toEqual([{ initialized_at: null }, { initialized_at: null }, { initialized_at: null }]);

    // The same batch again queues nothing; the same rows in a new batch are "existing".
    expect(await ingestCsv(env, csvOf(rows), 'band', { createMissingOwners: true })).toMatchObject({ queued: 0, alreadyInBatch: 2 });
    await ingestCsv(env, csvOf(rows), 'band-again', { createMissingOwners: true });
    const [again] = await runUntilDone(env, ['band-again']);
    expect(again!.counts).toMatchObject({ existing: 2, created: 0 });
    const { rows: count } = await env.db.query(
      `SELECT (SELECT count(*)::int FROM tenants) AS t, (SELECT count(*)::int FROM accounts WHERE email LIKE 'new.%') AS a`,
    );
    expect(count).toEqual([{ t: 2, a: 2 }]);

    // Dataset API keys: every band has api_tokens.tenant_id.
    const provisioner = await createProvisioner(env.config);
    try {
      const [minted] = await provisioner.mintApiKeys([{ tenantId: ID1 }]);
      expect(minted!.key?.token).toMatch(/^dataset-[A-Za-z0-9]{24}$/);
      expect(await provisioner.difySchema()).toBe(RELEASES[name]);
    } finally {
      await provisioner.close();
    }

    // doctor: clean; a workspace missing a row its band writes is a finding (band A has none to miss).
    expect(await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0 })).toEqual([]);
    if (BANDS[name].strategies > 0) {
      await env.db.query(
        `DELETE FROM tenant_plugin_auto_upgrade_strategies WHERE ctid IN (SELECT ctid FROM tenant_plugin_auto_upgrade_strategies WHERE tenant_id = $1 LIMIT 1)`,
        [ID1],
      );
      const findings = await runDoctor(env.db, { storageDir: env.config.storageDir, minOrphanAgeSeconds: 0 });
      expect(findings.map((f) => `${f.kind}:${f.tenantId}`)).toEqual([`missing-dify-rows:${ID1}`]);
      expect(findings[0]!.detail).toMatch(
        new RegExp(`${BANDS[name].strategies - 1} of ${BANDS[name].strategies} plugin auto-upgrade strategy row`),
      );
    }
  });
});

describe('schemas no release has', () => {
  let env: TestEnv;
  freshEnvEachTest((e) => (env = e), { schema: '1.9' });

  it('refuses a credit pool table next to varchar[] strategy lists', async () => {
    await env.db.query(`CREATE TABLE tenant_credit_pools (id uuid, tenant_id uuid, pool_type text, quota_limit bigint, quota_used bigint)`);
    await expect(probeDifySchema(env.db)).rejects.toThrow(
      /not one dify-provision knows \(a credit pool table, but strategy lists are varchar\[\]/,
    );
  });

  it('keeps working when a later Dify adds defaulted columns and makes binding ids nullable', async () => {
    const later = await createTestEnv({ schema: 'latest' });
    try {
      await later.db.query(`ALTER TABLE dataset_api_token_bindings ADD COLUMN resource_type varchar(32) NOT NULL DEFAULT 'dataset',
                              ADD COLUMN control_space_id uuid, ALTER COLUMN dataset_id DROP NOT NULL`);
      await later.db.query(`ALTER TABLE tenants ADD COLUMN extra_setting text DEFAULT 'x'`);
      await ingestCsv(later, csvOf([{ workspace_name: 'Later', owner_email: 'owner1@example.com', workspace_id: ID1 }]), 'later');
      const [status] = await runUntilDone(later, ['later']);
      expect(status!.counts.created).toBe(1);
      const { rows: kb } = await later.db.query(
        `INSERT INTO datasets (id, tenant_id, name, created_by) VALUES (gen_random_uuid(), $1, 'kb', gen_random_uuid()) RETURNING id`,
        [ID1],
      );
      const provisioner = await createProvisioner(later.config);
      try {
        const [minted] = await provisioner.mintApiKeys([{ tenantId: ID1, datasetIds: [kb[0].id] }]);
        expect(minted!.error).toBeUndefined();
        const { rows } = await later.db.query(`SELECT dataset_id, resource_type FROM dataset_api_token_bindings`);
        expect(rows).toEqual([{ dataset_id: kb[0].id, resource_type: 'dataset' }]);
      } finally {
        await provisioner.close();
      }
    } finally {
      await later.cleanup();
    }
  });
});
