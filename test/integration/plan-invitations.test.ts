// A plan refuses what the batch would (issue 32 item 8): invitations without CONSOLE_WEB_URL (or
// Dify's Redis), mail with a MAIL_TYPE we cannot send through. One decision (config.ts
// refuseUnusableInvitations) for the library's plan() and planChanges(), the HTTP API's plans and
// the CLI's dry runs, naming the setting; nothing is recorded.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { ConfigError } from '../../src/common/errors.js';
import { loadConfig } from '../../src/config/config.js';
import { provisionerOn, type Provisioner } from '../../src/provisioner.js';
import { openQueueRuntime } from '../../src/runtime/runtime.js';
import { csvOf } from '../helpers/batch.js';
import { csvBody, errorOf, json } from '../helpers/api-calls.js';
import { listeningDashboard } from '../helpers/dashboard.js';
import { createTestEnv, type TestEnv } from '../helpers/test-env.js';
import { operatorKeyFiles } from '../helpers/dify-invitations.js';

const ADMIN = 'plan-invitations-token-0123456789';
let env: TestEnv;
let file: string;
const opened: { close(): Promise<void> }[] = [];

beforeEach(async () => {
  env = await createTestEnv();
  file = join(env.dir, 'wave.csv');
  await writeFile(file, csvOf([{ workspace_name: 'Acme', owner_email: 'new@example.com' }]));
});
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
  await env.cleanup();
});

/** A provisioner on these settings (Dify's, from the environment, over the test env's own). */
async function provisionerWith(dify: Record<string, string>): Promise<Provisioner> {
  const config = { ...loadConfig({ ...env.env, ...dify }), logLevel: 'silent' as const };
  const p = provisionerOn(await openQueueRuntime(config, { logger: pino({ level: 'silent' }) }));
  opened.push(p);
  return p;
}
const difyRedis = () => {
  const u = new URL(inject('redisUrl'));
  return { REDIS_HOST: u.hostname, REDIS_PORT: u.port || '6379', REDIS_DB: '9', REDIS_KEY_PREFIX: `plan-${env.name}` };
};
const api = (base: string, path: string, init: RequestInit) =>
  fetch(`${base}/api/v1${path}`, { ...init, headers: { authorization: `Bearer ${ADMIN}`, ...(init.headers as Record<string, string>) } });
const batchCount = async () => Number((await env.db.query(`SELECT count(*) AS n FROM dify_provision.batches`)).rows[0].n);
const CHANGE = { action: 'add_member', external_id: 'cust-1', email: 'new@example.com', role: 'normal' };

describe('a plan refuses the invitations this process cannot give, naming the setting', () => {
  it('the library: plan() and planChanges() without CONSOLE_WEB_URL, and send_invites with MAIL_TYPE=resend', async () => {
    const noConsole = await provisionerWith(difyRedis());
    for (const ask of [{ invite: true }, { invitePending: true }, { sendInvites: true }]) {
      const refused = await noConsole.plan(file, { createMissingOwners: true, ...ask }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(ConfigError);
      expect((refused as Error).message).toContain("CONSOLE_WEB_URL: the address people open Dify's console at");
    }
    await expect(noConsole.planChanges([CHANGE], { invite: true })).rejects.toThrow(/CONSOLE_WEB_URL/);
    // Without invitations the same plan answers.
    expect(await noConsole.plan(file, { createMissingOwners: true })).toMatchObject({ total: 1, wouldCreate: 1 });

    // Dify's stock MAIL_TYPE=resend: invitations can be given, not mailed.
    const noMail = await provisionerWith({ ...difyRedis(), CONSOLE_WEB_URL: 'https://dify.example.com', MAIL_TYPE: 'resend' });
    const sealTo = await readFile((await operatorKeyFiles(env.dir)).pub, 'utf8');
    expect(await noMail.plan(file, { createMissingOwners: true, invite: true, sealTo })).toMatchObject({ total: 1, wouldCreate: 1 });
    // What the ingest refuses before recording anything, its plan refuses too: secrets with no key to seal them to.
    await expect(noMail.plan(file, { createMissingOwners: true, invite: true })).rejects.toThrow(/^invitations need --seal-to/);
    await expect(noMail.plan(file, { createMissingOwners: true, sendInvites: true })).rejects.toThrow(/MAIL_TYPE: "resend"/);
    await expect(noMail.planChanges([CHANGE], { sendInvites: true })).rejects.toThrow(/MAIL_TYPE: "resend"/);
    expect(await batchCount()).toBe(0);
  });

  it('the HTTP API: POST /plans and /changes/plans answer 422 CONFIG naming the setting', async () => {
    const noConsole = await provisionerWith(difyRedis());
    const dash = await listeningDashboard(env, { token: ADMIN, provisioner: noConsole, maxBytes: 1 << 20 });
    opened.push(dash);
    const csv = csvOf([{ workspace_name: 'Acme', owner_email: 'new@example.com' }]);
    const viaQuery = await errorOf(await api(dash.base, '/plans?create_missing_owners=true&invite=true', csvBody(csv)), 422);
    expect(viaQuery).toMatchObject({ code: 'CONFIG', message: expect.stringContaining('CONSOLE_WEB_URL') });
    const viaJson = await errorOf(
      await api(
        dash.base,
        '/plans',
        json({ rows: [{ workspace_name: 'Acme', owner_email: 'new@example.com' }], options: { invite: true } }),
      ),
      422,
    );
    expect(viaJson.message).toContain('CONSOLE_WEB_URL');
    const changes = await errorOf(await api(dash.base, '/changes/plans', json({ rows: [CHANGE], options: { invite: true } })), 422);
    expect(changes).toMatchObject({ code: 'CONFIG', message: expect.stringContaining('CONSOLE_WEB_URL') });
    // The plan without invitations is answered.
    expect((await api(dash.base, '/plans?create_missing_owners=true', csvBody(csv))).status).toBe(200);
    expect(await batchCount()).toBe(0);
  });

  it('the HTTP API: send_invites with MAIL_TYPE=resend is refused by the plan, naming MAIL_TYPE', async () => {
    const csv = csvOf([{ workspace_name: 'Acme', owner_email: 'new@example.com' }]);
    const noMail = await provisionerWith({ ...difyRedis(), CONSOLE_WEB_URL: 'https://dify.example.com', MAIL_TYPE: 'resend' });
    const mailDash = await listeningDashboard(env, { token: ADMIN, provisioner: noMail, maxBytes: 1 << 20 });
    opened.push(mailDash);
    const mail = await errorOf(await api(mailDash.base, '/plans?create_missing_owners=true&send_invites=true', csvBody(csv)), 422);
    expect(mail).toMatchObject({ code: 'CONFIG', message: expect.stringContaining('MAIL_TYPE: "resend"') });
    const sealTo = await readFile((await operatorKeyFiles(env.dir)).pub, 'utf8');
    const rows = [{ workspace_name: 'Acme', owner_email: 'new@example.com' }];
    const invite = { create_missing_owners: true, invite: true };
    expect((await api(mailDash.base, '/plans', json({ rows, options: { ...invite, seal_to: sealTo } }))).status).toBe(200);
    // Without a key to seal the links to, refused as the ingest would refuse it.
    const unsealed = await errorOf(await api(mailDash.base, '/plans', json({ rows, options: invite })), 400);
    expect(unsealed.message).toMatch(/^invitations need --seal-to/);
    expect(await batchCount()).toBe(0);
  });
});
