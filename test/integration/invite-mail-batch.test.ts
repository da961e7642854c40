// --invite --send-invites end to end: a batch through a real worker, Dify's Redis and a real SMTP
// server (npm smtp-server on 127.0.0.1): exactly one message per person the batch created, with
// the link whose token is in Dify's Redis; a refused message loses neither workspace nor token,
// the row's report says so, and --resend mails fresh links; a batch that cannot be mailed is
// refused at ingest, naming the setting.
import { generateKeyPairSync } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, inject, it } from 'vitest';
import type { SmtpSettings } from '../../src/config/dify-env.js';
import { ConfigError } from '../../src/common/errors.js';
import { createProvisioner, type Provisioner, type WorkspaceInput } from '../../src/provisioner.js';
import { runLoggedUntilDone } from '../helpers/batch.js';
import { dumpRedis } from '../helpers/redis-dump.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp-server.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { CONSOLE, difyInvitationSettings } from '../helpers/dify-invitations.js';
import { closeEachTest } from '../helpers/world.js';

/** Dify's Redis: the tests' Redis server, a logical database of its own. */
const DIFY_DB = 10;
const FROM = 'Acme Platform <no-reply@acme.example>';
const operator = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PUBLIC = operator.publicKey.export({ type: 'spki', format: 'pem' }).toString();

let env: TestEnv;
let provisioner: Provisioner | undefined;
let dify: Redis | undefined;
let smtp: TestSmtp | undefined;
closeEachTest(
  () => ({ provisioner, dify, smtp, env }),
  (none) => ({ provisioner, dify, smtp } = none),
);

const ROWS: WorkspaceInput[] = [
  // A new owner and a new member: both get a message.
  { workspace_name: 'Acme', owner_email: 'new-owner@example.com', members: 'new-member@example.com:editor' },
  // An existing owner and a new member: the member only.
  { workspace_name: 'Globex', owner_email: 'owner1@example.com', members: 'second-new@example.com:normal' },
  // Nobody new: no message.
  { workspace_name: 'Initech', owner_email: 'owner2@example.com' },
];

async function world(refuse?: (to: string[]) => boolean): Promise<TestEnv['config']> {
  env = await createTestEnv();
  dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
  smtp = await startSmtp({ tls: 'none', refuse: (_n, to) => (refuse?.(to) ? { code: 550, text: 'mailbox unavailable' } : undefined) });
  const mail: SmtpSettings = { host: '127.0.0.1', port: smtp.port, tls: 'none', from: FROM };
  return {
    ...env.config,
    invitations: difyInvitationSettings(DIFY_DB, `dify-${env.name}`),
    mail,
  };
}

/** Ingests the rows with --invite --send-invites (under `ingest`'s config), runs a worker (under `work`'s) until the batch is done. */
async function runBatch(ingest: TestEnv['config'], work: TestEnv['config'], batchId: string): Promise<string> {
  provisioner ??= await createProvisioner(ingest);
  await provisioner.enqueue(ROWS, { batchId, createMissingOwners: true, invite: true, sendInvites: true, sealTo: PUBLIC });
  return runLoggedUntilDone(env, work, [batchId]);
}

/** The batch's tokens in Dify's Redis: token → the invitation's value. */
async function difyTokens(): Promise<Map<string, { account_id: string; email: string; workspace_id: string }>> {
  const out = new Map<string, { account_id: string; email: string; workspace_id: string }>();
  for (const key of await dify!.keys(`dify-${env.name}:member_invite:token:*`)) {
    const value = await dify!.get(key);
    if (value) out.set(key.split(':').pop()!, JSON.parse(value));
  }
  return out;
}

const tokenOf = (text: string) => /[?&]token=([0-9a-f-]{36})/.exec(text)?.[1];

describe('--invite --send-invites', () => {
  it("mails each person the batch created exactly one message, with the link whose token is in Dify's Redis", async () => {
    const config = await world();
    const logs = await runBatch(config, config, 'mailed');
    const tokens = await difyTokens();
    expect(tokens.size).toBe(3);
    const received = smtp!.received;
    expect(received.map((r) => r.to).sort()).toEqual([['new-member@example.com'], ['new-owner@example.com'], ['second-new@example.com']]);
    const { rows: names } = await env.db.query<{ id: string; name: string }>(`SELECT id, name FROM tenants`);
    for (const r of received) {
      const token = tokenOf(r.mail.text ?? '')!;
      const stored = tokens.get(token);
      expect(stored?.email).toBe(r.to[0]);
      const workspace = names.find((n) => n.id === stored!.workspace_id)!.name;
      expect(r.mail.subject).toContain(`"${workspace}"`);
      expect(r.mail.text).toContain(`${CONSOLE}/activate?email=${encodeURIComponent(r.to[0]!)}&token=${token}`);
      expect(r.mail.from?.value).toEqual([{ name: 'Acme Platform', address: 'no-reply@acme.example' }]);
    }
    // The report says what was sent, per row; no token anywhere of ours.
    const report = await provisioner!.batch('mailed').report();
    expect(report.map((r) => [r.outcome, r.mail])).toEqual([
      ['created', 'new-member@example.com: sent; new-owner@example.com: sent'],
      ['created', 'second-new@example.com: sent'],
      ['created', null],
    ]);
    let csv = '';
    for await (const c of provisioner!.batch('mailed').reportCsv()) csv += c;
    expect(csv.split('\r\n')[0]!.split(',')).toContain('mail');
    const ours = `${logs}${csv}${await dumpRedis(env.redis)}${JSON.stringify((await env.db.query(`SELECT * FROM dify_provision.invitations`)).rows)}`;
    for (const token of tokens.keys()) expect(ours).not.toContain(token);
  });

  it('a refused message loses neither the workspace nor its token; the report says so, and --resend mails a fresh link', async () => {
    let refusing = true;
    const config = await world((to) => refusing && to.includes('second-new@example.com'));
    const logs = await runBatch(config, config, 'refused');
    const report = await provisioner!.batch('refused').report();
    expect(report.map((r) => r.outcome)).toEqual(['created', 'created', 'created']);
    expect(report[1]!.mail).toMatch(/^second-new@example\.com: failed: the SMTP server 127\.0\.0\.1:\d+: .*550 mailbox unavailable$/);
    const tokens = await difyTokens();
    expect([...tokens.values()].map((t) => t.email).sort()).toEqual([
      'new-member@example.com',
      'new-owner@example.com',
      'second-new@example.com',
    ]);
    expect(smtp!.received).toHaveLength(2);
    expect(smtp!.refused).toBe(1);
    expect(logs).toContain('invitation mail not sent');
    expect(logs).not.toContain('/activate');

    // The operator fixes the mailbox and resends: everyone still pending gets a fresh link (the old token is gone).
    refusing = false;
    expect(await provisioner!.resendInvitations('refused')).toMatchObject({ resent: 3 });
    const fresh = await difyTokens();
    const second = smtp!.received.filter((r) => r.to.includes('second-new@example.com'));
    expect(second).toHaveLength(1);
    const token = tokenOf(second[0]!.mail.text ?? '')!;
    expect(fresh.get(token)?.email).toBe('second-new@example.com');
    expect(tokens.has(token)).toBe(false);
    expect(smtp!.received).toHaveLength(5);
    expect((await provisioner!.batch('refused').report()).map((r) => r.mail)).toEqual([
      'new-member@example.com: sent; new-owner@example.com: sent',
      'second-new@example.com: sent',
      null,
    ]);
  });

  it("is refused at ingest when Dify's mail is not SMTP; a worker without it creates the workspaces and tokens and reports why nothing was mailed", async () => {
    const config = await world();
    const resend =
      'invalid configuration:\n  MAIL_TYPE (in /srv/dify/docker/envs/core-services/shared.env): "resend": dify-provision sends invitations through SMTP only';
    const noMail: TestEnv['config'] = { ...config, mail: undefined, mailProblem: resend };
    const refusing = await createProvisioner(noMail);
    try {
      await expect(
        refusing.enqueue(ROWS, { batchId: 'no-mail', createMissingOwners: true, invite: true, sendInvites: true, sealTo: PUBLIC }),
      ).rejects.toThrow(ConfigError);
      await expect(
        refusing.enqueue(ROWS, { batchId: 'no-mail', createMissingOwners: true, invite: true, sendInvites: true, sealTo: PUBLIC }),
      ).rejects.toThrow(/MAIL_TYPE \(in \/srv\/dify\/docker\/envs\/core-services\/shared\.env\): "resend"/);
    } finally {
      await refusing.close();
    }
    expect((await env.db.query(`SELECT 1 FROM dify_provision.batches WHERE id = 'no-mail'`)).rows).toHaveLength(0);

    await runBatch(config, noMail, 'worker-without-mail');
    expect((await difyTokens()).size).toBe(3);
    const report = await provisioner!.batch('worker-without-mail').report();
    expect(report.map((r) => r.outcome)).toEqual(['created', 'created', 'created']);
    expect(report[1]!.mail).toBe(
      `second-new@example.com: failed: this process has no mail to send it with: ${resend.replace('invalid configuration:\n  ', '')}`,
    );
    expect(smtp!.received).toHaveLength(0);
  });
});
