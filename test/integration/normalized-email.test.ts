// Dify's normalised email against a real PostgreSQL with the latest Dify schema (accounts.
// normalized_email): the rules in SQL agree with Dify's own test table, a row never creates a
// second account for a person Dify knows, two accounts for one person are an error naming both,
// and a release without the column is left as that release's invite behaves.
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { difyNormalizedEmail, difyNormalizedEmailSql } from '../../src/dify/normalized-email.js';
import type { DifySchemaName } from '../../src/common/project-files.js';
import { createProvisioner, type Provisioner, type WorkspaceInput } from '../../src/provisioner.js';
import { runWorker } from '../../src/worker/run-worker.js';
import { csvOf } from '../helpers/batch.js';
import { expectCreatedAccount } from '../helpers/dify-checks.js';
import { DIFY_CASES } from '../helpers/dify-email-cases.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';

let env: TestEnv;
let provisioner: Provisioner | undefined;
afterEach(async () => {
  await provisioner?.close();
  provisioner = undefined;
  await env.cleanup();
});

/** A Dify account as that Dify writes it: with its normalised email where the schema has the column. */
async function difyAccount(email: string, status = 'active'): Promise<string> {
  const latest = (
    await env.db.query(
      `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'accounts' AND column_name = 'normalized_email'`,
    )
  ).rows[0].n;
  const { rows } = await env.db.query(
    latest
      ? `INSERT INTO accounts (name, email, status, normalized_email) VALUES ($1, $2, $3, $4) RETURNING id`
      : `INSERT INTO accounts (name, email, status) VALUES ($1, $2, $3) RETURNING id`,
    [email.split('@')[0], email, status, ...(latest ? [difyNormalizedEmail(email)] : [])],
  );
  return rows[0].id as string;
}

async function start(schema: DifySchemaName): Promise<Provisioner> {
  env = await createTestEnv({ schema, accounts: 2 });
  provisioner = await createProvisioner(env.config);
  return provisioner;
}

async function run(p: Provisioner, rows: WorkspaceInput[], batchId: string) {
  const batch = await p.enqueue(rows, { batchId, createMissingOwners: true });
  const w = await runWorker(env.config, { concurrency: 2, logger: pino({ level: 'silent' }) });
  try {
    await batch.done(100);
  } finally {
    await w.close();
  }
  return batch.report();
}

const ownerOf = async (name: string) =>
  (
    await env.db.query(
      `SELECT a.id, a.email FROM tenants t JOIN tenant_account_joins j ON j.tenant_id = t.id AND j.role = 'owner'
         JOIN accounts a ON a.id = j.account_id WHERE t.name = $1`,
      [name],
    )
  ).rows;
const toCsv = (rows: Record<string, string>[]) => Readable.from([Buffer.from(csvOf(rows))]);
const accountCount = async () => (await env.db.query(`SELECT count(*)::int AS n FROM accounts`)).rows[0].n as number;

describe("Dify's normalised email on the latest schema", () => {
  it("the SQL form agrees with Dify's own test table, row for row", async () => {
    env = await createTestEnv({ accounts: 0 });
    const { rows } = await env.db.query(`SELECT e, ${difyNormalizedEmailSql('e')} AS n FROM unnest($1::text[]) AS e`, [
      DIFY_CASES.map((c) => c[0]),
    ]);
    expect(rows.map((r) => [r.e, r.n])).toEqual(DIFY_CASES);
  });

  it('a row for john.doe+x@gmail.com is the johndoe@gmail.com Dify knows: no second account, in the plan and the run', async () => {
    const p = await start('latest');
    const known = await difyAccount('johndoe@gmail.com');
    const before = await accountCount();
    const rows = [{ workspace_name: 'Doe Inc', owner_email: 'john.doe+x@gmail.com', members: 'JohnDoe@GoogleMail.com:editor' }];
    // The owner and a member that are one person: the row fails (plan and run), nothing is created.
    const bothPlan = await p.plan(toCsv([{ ...rows[0]!, members: 'JohnDoe@GoogleMail.com:editor' }]));
    expect(bothPlan).toMatchObject({ wouldCreate: 0, wouldFail: 1 });
    expect(bothPlan.problems[0]!.message).toBe(
      '"JohnDoe@GoogleMail.com" and "john.doe+x@gmail.com" are the same Dify account: list each person once (as owner or member)',
    );
    const both = await run(p, rows, 'both');
    expect(both[0]).toMatchObject({
      outcome: 'failed',
      error:
        'members: "JohnDoe@GoogleMail.com" and "john.doe+x@gmail.com" are the same Dify account: list each person once (as owner or member)',
    });
    // Two new addresses of one new person in one row: refused the same way, before anything is created.
    const newPair = [{ workspace_name: 'Pair', owner_email: 'jane.roe@gmail.com', members: 'janeroe+x@gmail.com:normal' }];
    expect(await p.plan(toCsv(newPair), { createMissingOwners: true })).toMatchObject({ wouldCreate: 0, wouldFail: 1 });
    expect((await run(p, newPair, 'pair'))[0]).toMatchObject({
      outcome: 'failed',
      error: expect.stringContaining('are the same Dify account'),
    });
    expect(await accountCount()).toBe(before);

    const plan = await p.plan(toCsv([{ workspace_name: 'Doe Inc', owner_email: 'john.doe+x@gmail.com' }]), { createMissingOwners: true });
    expect(plan).toMatchObject({ wouldCreate: 1, wouldFail: 0 });
    const report = await run(p, [{ workspace_name: 'Doe Inc', owner_email: 'john.doe+x@gmail.com', members: '' }], 'doe');
    expect(report[0]).toMatchObject({ outcome: 'created' });
    expect(report[0]!.accountsCreated).toBeNull();
    expect(await ownerOf('Doe Inc')).toEqual([{ id: known, email: 'johndoe@gmail.com' }]);
    expect(await accountCount()).toBe(before);
  });

  it('two accounts Dify counts as one person are an error naming both; nothing is created', async () => {
    const p = await start('latest');
    await difyAccount('johndoe@gmail.com');
    await difyAccount('j.o.h.n.doe@googlemail.com');
    const before = await accountCount();
    const rows = [{ workspace_name: 'Twins', owner_email: 'John.Doe+x@gmail.com', members: '' }];
    const plan = await p.plan(toCsv(rows), { createMissingOwners: true });
    expect(plan).toMatchObject({ wouldCreate: 0, wouldFail: 1 });
    const report = await run(p, rows, 'twins');
    expect(report[0]).toMatchObject({ outcome: 'failed', error: expect.stringContaining('more than one Dify account has the email') });
    expect(report[0]!.error).toContain('"johndoe@gmail.com"');
    expect(report[0]!.error).toContain('"j.o.h.n.doe@googlemail.com"');
    expect(await ownerOf('Twins')).toEqual([]);
    expect(await accountCount()).toBe(before);
  });

  it('a banned account behind the normalised email is refused, named', async () => {
    const p = await start('latest');
    await difyAccount('first.last@icloud.com', 'banned');
    const report = await run(p, [{ workspace_name: 'Apple', owner_email: 'First.Last+news@me.com', members: '' }], 'banned');
    expect(report[0]).toMatchObject({
      outcome: 'failed',
      error: expect.stringContaining('the Dify account "first.last@icloud.com" (for "First.Last+news@me.com") is banned'),
    });
  });

  it('two rows naming one new person in two spellings create one account, with its normalised email', async () => {
    const p = await start('latest');
    const report = await run(
      p,
      [
        { workspace_name: 'Roe A', owner_email: 'jane.roe+a@gmail.com', members: '' },
        { workspace_name: 'Roe B', owner_email: 'JaneRoe@gmail.com', members: '' },
        { workspace_name: 'Roe C', owner_email: 'owner1@example.com', members: 'jane_roe@pm.me:editor' },
        { workspace_name: 'Roe D', owner_email: 'owner2@example.com', members: 'janeroe+x@pm.me:normal' },
      ],
      'roe',
    );
    expect(report.map((r) => r.outcome)).toEqual(['created', 'created', 'created', 'created']);
    const { rows } = await env.db.query(
      `SELECT email, normalized_email FROM accounts WHERE email NOT LIKE 'owner%' ORDER BY normalized_email`,
    );
    expect(rows).toHaveLength(2);
    expect(rows.map((r) => r.normalized_email)).toEqual(['janeroe@gmail.com', 'janeroe@pm.me']);
    const [a] = await ownerOf('Roe A');
    expect(await ownerOf('Roe B')).toEqual([a]);
    await expectCreatedAccount(env, 'latest', rows[0].email, 'janeroe@gmail.com');
    await expectCreatedAccount(env, 'latest', rows[1].email, 'janeroe@pm.me');
  });
});

describe('a Dify without accounts.normalized_email (1.16)', () => {
  it("creates the account that release's invite would (it compares emails only)", async () => {
    const p = await start('1.16');
    const known = await difyAccount('johndoe@gmail.com');
    const report = await run(p, [{ workspace_name: 'Doe Inc', owner_email: 'john.doe+x@gmail.com', members: '' }], 'doe');
    expect(report[0]).toMatchObject({ outcome: 'created', accountsCreated: ['john.doe+x@gmail.com'] });
    const owner = await ownerOf('Doe Inc');
    expect(owner).toHaveLength(1);
    expect(owner[0].id).not.toBe(known);
    await expectCreatedAccount(env, '1.16', 'john.doe+x@gmail.com');
  });

  it("still sees a workspace Dify's owner has under another spelling as a likely duplicate", async () => {
    const p = await start('1.16');
    const owner = await difyAccount('john.doe@gmail.com');
    await env.db.query(`INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'Acme') RETURNING id`);
    await env.db.query(
      `INSERT INTO tenant_account_joins (tenant_id, account_id, role) SELECT id, $1, 'owner' FROM tenants WHERE name = 'Acme'`,
      [owner],
    );
    const plan = await p.plan(toCsv([{ workspace_name: 'ACME ', owner_email: 'JohnDoe+sales@gmail.com' }]));
    expect(plan).toMatchObject({ likelyDuplicates: 1, wouldCreate: 0 });
  });
});
