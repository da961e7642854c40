// Invitations by mail (--send-invites): each person gets their own activation link through Dify's
// SMTP settings (config/dify-env.ts smtpFromDify), connected the way Dify's SMTPClient connects, in our own
// short template naming the workspace. A link is a secret: it goes into the message and nowhere
// else (never into an error, a log or a report), and so does the SMTP password.
import nodemailer from 'nodemailer';
import type { SmtpSettings } from '../config/dify-env.js';

/** One person's invitation. */
export interface Invitation {
  /** The person's email address: the recipient. */
  email: string;
  workspaceName: string;
  /** The activation link (a secret). */
  link: string;
  /** When the link's token expires. */
  expiresAt: Date;
}

/** What became of one message; `error` never holds the link or a credential. */
export type MailOutcome = { sent: true } | { sent: false; error: string };

export interface MailerOptions {
  /** CA certificates (PEM) to trust instead of Node's own (NODE_EXTRA_CA_CERTS adds to Node's). */
  ca?: string | Buffer;
  /** Tries per message while the failure may pass (a 4xx answer, a lost connection); default 3. */
  attempts?: number;
  /** The wait before the second try, doubled for each further one; default 2000 ms. */
  retryDelayMs?: number;
}

export interface Mailer {
  /** Sends one invitation; never throws for a failed send (the outcome says why). */
  send(invitation: Invitation): Promise<MailOutcome>;
  /** Closes the pooled connections. */
  close(): void;
}

/** A pool of SMTP connections to Dify's mail server. */
export function openMailer(settings: SmtpSettings, opts: MailerOptions = {}): Mailer {
  const transport = nodemailer.createTransport({
    pool: true,
    maxConnections: 2,
    host: settings.host,
    port: settings.port,
    // Dify's SMTPClient: SMTP_SSL, or SMTP + starttls() (fails when not offered), or plain SMTP.
    secure: settings.tls === 'implicit',
    requireTLS: settings.tls === 'starttls',
    ignoreTLS: settings.tls === 'none',
    ...(settings.auth ? { auth: { user: settings.auth.user, pass: settings.auth.pass } } : {}),
    ...(settings.localHostname ? { name: settings.localHostname } : {}),
    // Unlike Python's smtplib, the server's certificate is checked: the message carries a link
    // that sets the account's password.
    ...(opts.ca ? { tls: { ca: opts.ca } } : {}),
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: 60_000,
    logger: false,
    debug: false,
  });
  const attempts = Math.max(1, opts.attempts ?? 3);
  const delay = opts.retryDelayMs ?? 2000;
  return {
    async send(invitation) {
      const message = invitationMessage(invitation);
      const secrets = [invitation.link, ...new URL(invitation.link, 'http://x').searchParams.getAll('token'), settings.auth?.pass ?? ''];
      for (let attempt = 1; ; attempt++) {
        try {
          await transport.sendMail({ from: settings.from, to: invitation.email, ...message });
          return { sent: true };
        } catch (err) {
          if (attempt >= attempts || !mayPass(err)) return { sent: false, error: describeMailError(err, settings, secrets) };
          await new Promise((r) => setTimeout(r, delay * 2 ** (attempt - 1)));
        }
      }
    },
    close: () => transport.close(),
  };
}

interface SmtpError {
  code?: string;
  responseCode?: number;
  message?: string;
}

const CERT_PROBLEM = /certificate|self[- ]signed|unable to (get|verify)|altnames|CERT_/i;

/** A 4xx answer or a lost connection may pass on another try; a 5xx, a refused login or an untrusted certificate will not. */
function mayPass(err: unknown): boolean {
  const e = err as SmtpError;
  if (typeof e.responseCode === 'number') return e.responseCode >= 400 && e.responseCode < 500;
  if (CERT_PROBLEM.test(e.message ?? '')) return false;
  return ['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ECONNRESET'].includes(e.code ?? '');
}

/** Why a message was not sent, naming the settings to look at; the secrets given are cut out. */
export function describeMailError(err: unknown, settings: SmtpSettings, secrets: readonly string[]): string {
  const e = err as SmtpError;
  const server = `${settings.host}:${settings.port}`;
  let text = (e.message ?? String(err)).replace(/\s+/g, ' ').trim();
  for (const s of secrets) if (s) text = text.split(s).join('[secret]');
  if (e.code === 'EAUTH') return `the SMTP server ${server} refused the login (SMTP_USERNAME / SMTP_PASSWORD): ${text}`;
  if (CERT_PROBLEM.test(text))
    return (
      `the SMTP server ${server} has a certificate this machine does not trust (${text}); dify-provision checks it (Dify does not): ` +
      `give its CA with NODE_EXTRA_CA_CERTS=/path/ca.pem`
    );
  if (settings.tls === 'starttls' && /STARTTLS/i.test(text))
    return `the SMTP server ${server} does not offer STARTTLS, which SMTP_OPPORTUNISTIC_TLS=true requires: nothing was sent in clear (${text})`;
  return `the SMTP server ${server}: ${e.code ? `${e.code}: ` : ''}${text}`;
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** "2026-11-29 04:00 UTC" */
const utc = (d: Date) => `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;

/** Our template: plain text and simple HTML naming the workspace, the link and when it expires. */
export function invitationMessage(inv: Invitation): { subject: string; text: string; html: string } {
  const until = utc(inv.expiresAt);
  const subject = `Your invitation to the Dify workspace "${inv.workspaceName}"`;
  const text = [
    'Hello,',
    '',
    `You have been invited to the Dify workspace "${inv.workspaceName}".`,
    '',
    'To activate your account and choose your password, open this link:',
    '',
    inv.link,
    '',
    `The link works until ${until}, once. If it has expired, ask whoever invited you for a new one.`,
    'If you did not expect this invitation, you can ignore this message.',
    '',
  ].join('\n');
  const name = escapeHtml(inv.workspaceName);
  const link = escapeHtml(inv.link);
  const html = [
    '<!doctype html>',
    '<html><body style="font-family: sans-serif; line-height: 1.5">',
    '<p>Hello,</p>',
    `<p>You have been invited to the Dify workspace <strong>${name}</strong>.</p>`,
    `<p><a href="${link}">Activate your account and choose your password</a></p>`,
    `<p style="font-size: small">Or open this link: ${link}</p>`,
    `<p>The link works until ${until}, once. If it has expired, ask whoever invited you for a new one.<br>`,
    'If you did not expect this invitation, you can ignore this message.</p>',
    '</body></html>',
    '',
  ].join('\n');
  return { subject, text, html };
}
