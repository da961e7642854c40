// Invitations by mail against a real SMTP server started here (npm smtp-server on 127.0.0.1), with
// settings read from a Dify .env the Dify way: one message per person with their own link, the
// right From, the workspace named; TLS from the first byte and STARTTLS with a login, as Dify's
// SMTP_USE_TLS / SMTP_OPPORTUNISTIC_TLS say; failures reported without the link or the password,
// retried only when they may pass.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, requireMail } from '../../src/config/config.js';
import { openMailer, type Invitation, type MailerOptions } from '../../src/invite/mail.js';
import { startSmtp, type TestSmtp, type TestSmtpOptions } from '../helpers/smtp-server.js';
import { testCerts, type TestCerts } from '../helpers/test-certs.js';

const PASSWORD = 'smtp-pa55-never-printed';
const FROM = 'Acme Platform <no-reply@acme.example>';
let dir: string;
let certs: TestCerts;
let ca: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-mail-'));
  certs = await testCerts(join(dir, 'certs'));
  ca = await readFile(certs.ca);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const invitation = (n: number, workspaceName = `Customer ${n}`): Invitation => ({
  email: `person${n}@customer${n}.example`,
  workspaceName,
  link: `https://dify.acme.example/activate?email=person${n}%40customer${n}.example&token=${n}0000000-aaaa-4bbb-8ccc-${String(n).padStart(12, '0')}`,
  expiresAt: new Date('2026-11-29T04:05:00Z'),
});

/** A server, and Dify's .env naming it (these lines over the given server's port). */
async function world(server: TestSmtpOptions, envLines: string) {
  const smtp = await startSmtp(server);
  const file = join(dir, `${Math.random().toString(36).slice(2)}.env`);
  await writeFile(file, `MAIL_TYPE=smtp\nSMTP_SERVER=127.0.0.1\nSMTP_PORT=${smtp.port}\nMAIL_DEFAULT_SEND_FROM=${FROM}\n${envLines}\n`);
  const settings = requireMail(loadConfig({ DIFY_ENV_FILE: file }));
  return { smtp, settings, mailer: (opts: MailerOptions = { ca }) => openMailer(settings, opts) };
}

async function using<T>(smtp: TestSmtp, mailer: { close(): void }, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    mailer.close();
    await smtp.stop();
  }
}

describe('invitations through a real SMTP server', () => {
  it('plain SMTP (SMTP_USE_TLS=false): one message per person, their own link, the From of MAIL_DEFAULT_SEND_FROM, the workspace named', async () => {
    const w = await world({ tls: 'none' }, 'SMTP_USE_TLS=false');
    const mailer = w.mailer();
    const people = [invitation(1), invitation(2, 'Tom & Jerry <Bistro> "Nord"'), invitation(3)];
    await using(w.smtp, mailer, async () => {
      const outcomes = await Promise.all(people.map((p) => mailer.send(p)));
      expect(outcomes).toEqual([{ sent: true }, { sent: true }, { sent: true }]);
      expect(w.smtp.received).toHaveLength(3);
      for (const p of people) {
        const got = w.smtp.received.filter((r) => r.to.includes(p.email));
        expect(got).toHaveLength(1);
        const { mail, to, from, tls } = got[0]!;
        expect(to).toEqual([p.email]);
        expect(from).toBe('no-reply@acme.example');
        expect(tls).toBe(false);
        expect(mail.from?.value).toEqual([{ name: 'Acme Platform', address: 'no-reply@acme.example' }]);
        expect(mail.to).toMatchObject({ value: [{ address: p.email }] });
        expect(mail.subject).toBe(`Your invitation to the Dify workspace "${p.workspaceName}"`);
        // The plain text names the workspace, the link (exactly, on a line of its own) and its expiry.
        expect(mail.text).toContain(`the Dify workspace "${p.workspaceName}"`);
        expect(mail.text!.split('\n')).toContain(p.link);
        expect(mail.text).toContain('until 2026-11-29 04:05 UTC');
        // The HTML links to it, and the workspace's name is text, never markup.
        const html = String(mail.html);
        expect(html).toContain(`<a href="${p.link.replaceAll('&', '&amp;')}">`);
        expect(html).toContain(
          `<strong>${p.workspaceName.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;')}</strong>`,
        );
        // Nobody else's link.
        for (const other of people.filter((o) => o !== p)) expect(`${mail.text}${html}`).not.toContain(other.link.split('token=')[1]);
      }
    });
    // As Dify's smtplib.SMTP: plain means plain, even when the server offers STARTTLS (with a
    // certificate this machine would not trust).
    const offered = await world({ tls: 'starttls', certs }, 'SMTP_USE_TLS=false');
    const plain = offered.mailer({});
    await using(offered.smtp, plain, async () => {
      expect(await plain.send(invitation(4))).toEqual({ sent: true });
      expect(offered.smtp.received.map((r) => ({ to: r.to, tls: r.tls }))).toEqual([{ to: [invitation(4).email], tls: false }]);
    });
  });

  it('SMTP_USE_TLS=true: TLS from the first byte, with the login of SMTP_USERNAME / SMTP_PASSWORD', async () => {
    const auth = { user: 'relay-user', pass: PASSWORD };
    const w = await world({ tls: 'implicit', certs, auth }, `SMTP_USE_TLS=true\nSMTP_USERNAME=relay-user\nSMTP_PASSWORD=${PASSWORD}`);
    const mailer = w.mailer();
    await using(w.smtp, mailer, async () => {
      expect(await mailer.send(invitation(1))).toEqual({ sent: true });
      expect(w.smtp.received.map((r) => ({ to: r.to, tls: r.tls, user: r.user }))).toEqual([
        { to: [invitation(1).email], tls: true, user: 'relay-user' },
      ]);
    });
  });

  it('SMTP_USE_TLS=true with SMTP_OPPORTUNISTIC_TLS=true: STARTTLS, then the login; a server without STARTTLS gets nothing in clear', async () => {
    const auth = { user: 'relay-user', pass: PASSWORD };
    const lines = `SMTP_USE_TLS=true\nSMTP_OPPORTUNISTIC_TLS=true\nSMTP_USERNAME=relay-user\nSMTP_PASSWORD=${PASSWORD}`;
    const w = await world({ tls: 'starttls', certs, auth }, lines);
    const mailer = w.mailer();
    await using(w.smtp, mailer, async () => {
      expect(await mailer.send(invitation(1))).toEqual({ sent: true });
      expect(w.smtp.received.map((r) => ({ tls: r.tls, user: r.user }))).toEqual([{ tls: true, user: 'relay-user' }]);
    });
    const clear = await world({ tls: 'none', auth }, lines);
    const mailer2 = clear.mailer();
    await using(clear.smtp, mailer2, async () => {
      const outcome = await mailer2.send(invitation(2));
      expect(outcome).toMatchObject({ sent: false, error: expect.stringContaining('does not offer STARTTLS') });
      expect(clear.smtp.received).toHaveLength(0);
      expect(clear.smtp.badLogins).toBe(0);
    });
  });

  it('a refused login and an untrusted certificate fail at once, saying what to fix, without the password or the link', async () => {
    const w = await world(
      { tls: 'implicit', certs, auth: { user: 'relay-user', pass: 'another' } },
      `SMTP_USE_TLS=true\nSMTP_USERNAME=relay-user\nSMTP_PASSWORD=${PASSWORD}`,
    );
    const mailer = w.mailer({ ca, retryDelayMs: 1 });
    const untrusted = w.mailer({ retryDelayMs: 1 });
    await using(w.smtp, mailer, async () => {
      const refused = await mailer.send(invitation(1));
      expect(refused).toMatchObject({ sent: false, error: expect.stringContaining('refused the login (SMTP_USERNAME / SMTP_PASSWORD)') });
      expect(w.smtp.badLogins).toBe(1);
      const notTrusted = await untrusted.send(invitation(1));
      untrusted.close();
      expect(notTrusted).toMatchObject({ sent: false, error: expect.stringContaining('NODE_EXTRA_CA_CERTS=') });
      expect(w.smtp.badLogins).toBe(1);
      for (const o of [refused, notTrusted]) {
        const text = JSON.stringify(o);
        expect(text).not.toContain(PASSWORD);
        expect(text).not.toContain(invitation(1).link.split('token=')[1]);
      }
      expect(w.smtp.received).toHaveLength(0);
    });
  });

  it('a 4xx answer is tried again (one message arrives); a 5xx is not, and its reason is reported without the link', async () => {
    const token = invitation(1).link.split('token=')[1]!;
    const w = await world(
      {
        tls: 'none',
        refuse: (n) => (n === 1 ? { code: 451, text: 'try later' } : n === 3 ? { code: 550, text: `no such user ${token}` } : undefined),
      },
      'SMTP_USE_TLS=false',
    );
    const mailer = w.mailer({ retryDelayMs: 1 });
    await using(w.smtp, mailer, async () => {
      expect(await mailer.send(invitation(1))).toEqual({ sent: true });
      expect(w.smtp.received.map((r) => r.to)).toEqual([[invitation(1).email]]);
      const failed = await mailer.send(invitation(1));
      expect(failed).toMatchObject({ sent: false, error: expect.stringContaining('550') });
      expect(JSON.stringify(failed)).not.toContain(token);
      expect(w.smtp.refused).toBe(2);
      expect(w.smtp.received).toHaveLength(1);
    });
  });
});
