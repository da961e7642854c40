// Attacks on "invitation links never cross customers" (docs/security.md) by a customer B who
// controls B's rows and batches and receives B's links files: each test performs one that got
// through once, against real Redis, PostgreSQL and SMTP.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { SmtpSettings } from '../../src/config/dify-env.js';
import { createProvisioner, type Provisioner, type WorkspaceInput } from '../../src/provisioner.js';
import { runLoggedUntilDone } from '../helpers/batch.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp-server.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { difyInvitationSettings, operatorPems } from '../helpers/dify-invitations.js';

const DIFY_DB = 11;
const { PUBLIC, PRIVATE } = operatorPems();

let env: TestEnv;
let provisioner: Provisioner | undefined;
let dify: Redis | undefined;
let smtp: TestSmtp | undefined;
afterEach(async () => {
  await provisioner?.close();
  provisioner = undefined;
  dify?.disconnect();
  dify = undefined;
  await smtp?.stop();
  smtp = undefined;
  await env?.cleanup();
});

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
  opts: { invitePending?: boolean; sendInvites?: boolean } = {},
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
