// Dify's mail settings, read the Dify way for --send-invites: its stock docker/ layout (.env, then
// envs/core-services/shared.env and envs/security.env as Dify ships them) says MAIL_TYPE=resend,
// which is refused only when mail is asked for; MAIL_TYPE=smtp gives Dify's SMTPClient's choices;
// every error names the file and the variable and never holds the password.
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, requireMail } from '../../src/config/config.js';
import { projectFile } from '../../src/common/project-files.js';
import { failure } from '../helpers/failure.js';

const FIXTURE = projectFile('test', 'fixtures', 'dify-docker');
const PASSWORD = 'pa55-w0rd-never-printed';
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-mail-settings-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A copy of Dify's docker/ folder: .env from .env.example plus `extra`, and the optional env files copied from their examples. */
async function difyDocker(name: string, extra = '', envs = true): Promise<{ env: string; shared: string; security: string }> {
  const docker = join(dir, name, 'docker');
  await mkdir(join(docker, 'envs', 'core-services'), { recursive: true });
  await copyFile(join(FIXTURE, 'docker-compose.yaml'), join(docker, 'docker-compose.yaml'));
  const env = join(docker, '.env');
  await copyFile(join(FIXTURE, '.env.example'), env);
  if (extra) await writeFile(env, extra, { flag: 'a' });
  const shared = join(docker, 'envs', 'core-services', 'shared.env');
  const security = join(docker, 'envs', 'security.env');
  if (envs) {
    await copyFile(join(FIXTURE, 'envs', 'core-services', 'shared.env.example'), shared);
    await copyFile(join(FIXTURE, 'envs', 'security.env.example'), security);
  }
  return { env, shared, security };
}

describe("Dify's mail settings", () => {
  it("Dify's stock MAIL_TYPE=resend (envs/core-services/shared.env) is refused only when mail is asked for, naming the file", async () => {
    const { env, shared } = await difyDocker('stock');
    const c = loadConfig({ DIFY_ENV_FILE: env });
    const text = failure(() => requireMail(c));
    expect(text).toContain(`MAIL_TYPE (in ${shared}): "resend": dify-provision sends invitations through SMTP only (MAIL_TYPE=smtp`);
    const sendgrid = failure(() => requireMail(loadConfig({ DIFY_ENV_FILE: env, MAIL_TYPE: 'sendgrid' })));
    expect(sendgrid).toContain('MAIL_TYPE: "sendgrid": dify-provision sends invitations through SMTP only');
  });

  it('MAIL_TYPE not set: refused, naming the files read', async () => {
    const { env } = await difyDocker('unset', '', false);
    expect(failure(() => requireMail(loadConfig({ DIFY_ENV_FILE: env })))).toContain(`MAIL_TYPE: not set in ${env} or our environment`);
    expect(failure(() => requireMail(loadConfig({})))).toContain(
      'MAIL_TYPE: not set in our environment (no DIFY_ENV_FILE / --dify-env given)',
    );
  });

  it("MAIL_TYPE=smtp over Dify's stock files: SMTP_USE_TLS=true and port 465 from shared.env (TLS from the first byte), the password from security.env", async () => {
    const { env, security } = await difyDocker(
      'smtp',
      'MAIL_TYPE=smtp\nSMTP_SERVER=mail.example.com\nMAIL_DEFAULT_SEND_FROM=Dify <no-reply@example.com>\n',
    );
    expect(loadConfig({ DIFY_ENV_FILE: env }).mail).toEqual({
      host: 'mail.example.com',
      port: 465,
      tls: 'implicit',
      from: 'Dify <no-reply@example.com>',
    });
    // Dify logs in only with both a user name and a password.
    await writeFile(security, `SMTP_PASSWORD=${PASSWORD}\n`, { flag: 'a' });
    expect(loadConfig({ DIFY_ENV_FILE: env }).mail?.auth).toBeUndefined();
    const c = loadConfig({ DIFY_ENV_FILE: env, SMTP_USERNAME: 'relay', SMTP_OPPORTUNISTIC_TLS: 'True', SMTP_PORT: '587' });
    expect(requireMail(c)).toEqual({
      host: 'mail.example.com',
      port: 587,
      tls: 'starttls',
      auth: { user: 'relay', pass: PASSWORD },
      from: 'Dify <no-reply@example.com>',
    });
    expect(loadConfig({ DIFY_ENV_FILE: env, SMTP_USE_TLS: 'false', SMTP_LOCAL_HOSTNAME: 'relay-client' }).mail).toMatchObject({
      tls: 'none',
      localHostname: 'relay-client',
    });
  });

  it.each([
    ['SMTP_SERVER=', /SMTP_SERVER \(in @F@\): required for MAIL_TYPE=smtp/],
    ['SMTP_PORT=25x', /SMTP_PORT \(in @F@\): "25x" is not a port/],
    ['SMTP_USE_TLS=maybe', /SMTP_USE_TLS \(in @F@\): "maybe" is not true or false/],
    ['SMTP_USE_TLS=false\nSMTP_OPPORTUNISTIC_TLS=true', /SMTP_OPPORTUNISTIC_TLS \(in @F@\): true needs SMTP_USE_TLS=true \(in @F@\)/],
    ['MAIL_DEFAULT_SEND_FROM=', /MAIL_DEFAULT_SEND_FROM \(in @F@\): required for MAIL_TYPE=smtp/],
    ['MAIL_DEFAULT_SEND_FROM=Dify', /MAIL_DEFAULT_SEND_FROM \(in @F@\): "Dify" is not one address/],
    [
      'MAIL_DEFAULT_SEND_FROM=a@example.com, b@example.com',
      /MAIL_DEFAULT_SEND_FROM \(in @F@\): "a@example.com, b@example.com" is not one address/,
    ],
  ])('%j is refused naming the file and the variable, never the password', async (line, message) => {
    const file = join(dir, `${Math.random().toString(36).slice(2)}.env`);
    await writeFile(
      file,
      `MAIL_TYPE=smtp\nSMTP_SERVER=mail.example.com\nMAIL_DEFAULT_SEND_FROM=no-reply@example.com\nSMTP_USERNAME=u\nSMTP_PASSWORD=${PASSWORD}\n${line}\n`,
    );
    const c = loadConfig({ DIFY_ENV_FILE: file });
    const text = failure(() => requireMail(c));
    expect(text).toMatch(new RegExp(message.source.replaceAll('@F@', file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))));
    expect(text).toMatch(/^invalid configuration:/);
    expect(text).not.toContain(PASSWORD);
  });
});
