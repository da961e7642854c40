// --send-invites from the command line, with Dify's settings from --dify-env: refused at ingest
// when Dify's mail is not SMTP (naming the file and the variable); otherwise the worker mails each
// person the batch created their link, whose token is in Dify's Redis, through a real SMTP server
// started here, and `report` says it was sent; no link in any output.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { cliWorld, until } from '../helpers/cli-world.js';
import { difyRedisLines, operatorKeyFiles } from '../helpers/dify-invitations.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp-server.js';

const world = cliWorld();
const DIFY_DB = 11;
let smtp: TestSmtp | undefined;
afterAll(async () => {
  await smtp?.stop();
});

describe('--send-invites from the CLI', () => {
  it('is refused unless MAIL_TYPE=smtp; the worker mails each created person their link, and the report says so', async () => {
    const env = world.env;
    const dir = env.dir;
    await operatorKeyFiles(dir);
    smtp = await startSmtp({ tls: 'none' });
    const prefix = `mail-${env.name}`;
    const difyEnv = (mailType: string) =>
      [
        ...difyRedisLines(DIFY_DB, prefix),
        'CONSOLE_WEB_URL=https://dify.example.com',
        `MAIL_TYPE=${mailType}`,
        'MAIL_DEFAULT_SEND_FROM=Dify <no-reply@dify.example.com>',
        'SMTP_SERVER=127.0.0.1',
        `SMTP_PORT=${smtp!.port}`,
        'SMTP_USE_TLS=false',
        '',
      ].join('\n');
    await writeFile(join(dir, 'resend.env'), difyEnv('resend'));
    await writeFile(join(dir, 'dify.env'), difyEnv('smtp'));
    const csv = await world.file('mail.csv', [
      { workspace_name: 'Acme', owner_email: 'ann@acme.example', members: 'bob@acme.example:admin' },
      { workspace_name: 'Globex', owner_email: 'owner1@example.com', members: '' },
    ]);
    const ingest = (envFile: string, batchId: string) =>
      runCli(
        [
          ...['--dify-env', join(dir, envFile), 'ingest', csv, '--create-missing-owners', '--send-invites'],
          ...['--seal-to', join(dir, 'op.pub'), '--batch-id', batchId],
        ],
        env.env,
      );

    const refused = await ingest('resend.env', 'x');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      `MAIL_TYPE (in ${join(dir, 'resend.env')}): "resend": dify-provision sends invitations through SMTP only`,
    );
    expect((await env.db.query(`SELECT 1 FROM dify_provision.batches`)).rows).toHaveLength(0);

    const ingested = await ingest('dify.env', 'mail1');
    expect(ingested.code, ingested.stderr).toBe(0);
    const batchId = 'mail1';
    const worker = world.worker('--dify-env', join(dir, 'dify.env'));
    await until(world.done(batchId), 'the batch to be created');
    await until(async () => smtp!.received.length >= 2, 'two messages');
    await worker.stop();
    expect(smtp.received.map((r) => r.to).sort()).toEqual([['ann@acme.example'], ['bob@acme.example']]);

    const dify = new Redis(`${inject('redisUrl')}/${DIFY_DB}`);
    try {
      for (const r of smtp.received) {
        const token = /[?&]token=([0-9a-f-]{36})/.exec(r.mail.text ?? '')![1]!;
        const value = await dify.get(`${prefix}:member_invite:token:${token}`);
        expect((JSON.parse(value!) as { email: string }).email).toBe(r.to[0]);
        expect(r.mail.subject).toBe('Your invitation to the Dify workspace "Acme"');
      }
    } finally {
      dify.disconnect();
    }
    const report = await runCli(['report', batchId], env.env);
    expect(report.stdout).toContain('ann@acme.example: sent; bob@acme.example: sent');
    for (const text of [report.stdout, worker.output(), ingested.stdout + ingested.stderr]) expect(text).not.toContain('/activate?');
  });
});
