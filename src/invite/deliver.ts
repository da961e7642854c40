// --send-invites: each link a batch asked to mail is sent the moment its token is valid in Dify's
// Redis (the inviter's onIssued, in the worker, its sweep and `invite --resend`), and what became
// of it is recorded on the invitation (the row's report shows it). A failed send loses nothing:
// the workspace and the token stay, the link stays sealed for `secrets --invites`, and
// `invite --resend` sends fresh links to whoever has not activated yet.
import type { Logger } from 'pino';
import { requireMail, type Config } from '../config/config.js';
import type { Db } from '../db/pool.js';
import { ConfigError } from '../common/errors.js';
import type { IssuedInvitation, OnIssued } from './inviter.js';
import { recordMail } from '../store/invitations.js';
import { openMailer, type Mailer, type MailOutcome } from './mail.js';

export interface InvitationMail {
  /** Mails the invitation if its batch asked for it, then records the outcome; never throws for a failed send. */
  onIssued: OnIssued;
  close(): void;
}

/**
 * The mail of this process's config (Dify's SMTP settings), opened at the first invitation to
 * send; `then`, the caller's own hook, is called after it for every invitation.
 */
export function invitationMail(config: Config, db: Db, logger?: Logger, then?: OnIssued): InvitationMail {
  let mailer: Mailer | undefined;
  let problem: string | undefined;
  const open = (): Mailer | undefined => {
    if (mailer || problem) return mailer;
    try {
      mailer = openMailer(requireMail(config));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problem = err.message.replace(/^invalid configuration:\s*/, '');
    }
    return mailer;
  };
  const mail = async (inv: IssuedInvitation) => {
    if (!inv.send) return;
    const m = open();
    const outcome: MailOutcome = m
      ? await m.send({
          email: inv.email,
          workspaceName: inv.workspaceName,
          link: inv.link,
          expiresAt: new Date(Date.now() + inv.expiresInSeconds * 1000),
        })
      : { sent: false, error: `this process has no mail to send it with: ${problem}` };
    await recordMail(db, inv.id, outcome);
    if (!outcome.sent)
      logger?.warn(
        { batchId: inv.batchId, line: inv.line, invitation: inv.id, error: outcome.error },
        'invitation mail not sent: the workspace and its token stay; `invite --resend` sends fresh links',
      );
  };
  return {
    async onIssued(inv) {
      try {
        await mail(inv);
      } finally {
        await then?.(inv);
      }
    },
    close: () => mailer?.close(),
  };
}
