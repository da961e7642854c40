// Invitations (--invite): a token in Dify's Redis for each person a batch creates, as Dify's own
// invite flow stores it, and the link sealed to the operator's key.
//
// Order of the two stores (PostgreSQL has the workspace, Dify's Redis the token):
//   1. In the workspace's own transaction: a token is drawn for each invitee and recorded with
//      its sealed link as *pending* (the token in the clear, in our schema only).
//   2. After COMMIT: SETEX in Dify's Redis, then the record is marked stored and its token
//      cleared (markStored; the one call that moves it also hands the link to `onIssued`).
// So a token never exists for a workspace that did not commit (nothing reaches Redis before the
// COMMIT, and a rolled-back transaction takes its records with it), and a committed workspace
// never loses its token: its record stays pending until the SETEX is done. A crash (or Dify's
// Redis down) between the two leaves a pending record; a run of the row's job again (BullMQ
// takes up a stalled job) and every worker's sweep complete it with the very same token (a second
// SETEX of it only renews it), so retries and the sweep converge on one token per person.
import type { KeyObject } from 'node:crypto';
import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { loadOpenKey, loadSealKey, publicPemOf, seal, unseal } from '../crypto/sealing.js';
import { withTransaction, type Db, type Tx } from '../db/pool.js';
import type { InvitationSettings } from '../config/dify-env.js';
import { DifyTokens, inviteLink, newToken, pairOf, ttlSeconds, type Invitee } from '../dify/invitations.js';
import type { Band } from '../dify/schema-probe.js';
import { redisConnection } from '../queue/connection.js';
import { UsageError } from '../common/errors.js';
import { writeNewFile } from '../common/files.js';
import { csvCell } from '../report/format.js';
import { AlreadyRevealedError } from '../secrets/reveal.js';
import { revokeWithdrawn } from './revoke.js';
import { batchOptions, keepSealKey } from '../store/batches.js';
import { lockBatch } from '../store/locks.js';
import {
  lockCurrentInvitations,
  lockUninvited,
  lockUnrevealedLinks,
  markLinksRevealed,
  markStored,
  pendingInvitations,
  recordInvitations,
  supersede,
  superseded,
  type InvitationRecord,
  type PendingInvitation,
} from '../store/invitations.js';

/** A link just made valid in Dify's Redis: what the mail (--send-invites) needs. Never log it. */
export interface IssuedInvitation {
  id: string;
  batchId: string;
  line: number;
  tenantId: string;
  workspaceName: string;
  email: string;
  role: string;
  /** The secret: whoever holds it can set the account's password. */
  link: string;
  expiresInSeconds: number;
  /** The batch asked for the link to be mailed (sendInvites). */
  send: boolean;
  /**
   * The person is in other workspaces too: the link may reach only the person (their own
   * address), never a workspace's links (docs/security.md). It is never revealed.
   */
  mailOnly: boolean;
}

/** Called once per stored token, after it is in Dify's Redis; a failure is logged (without the link) and changes nothing. */
export type OnIssued = (invitation: IssuedInvitation) => Promise<void> | void;

interface Pending {
  id: string;
  batchId: string;
  line: number;
  workspaceName: string;
  token: string;
  invitee: Invitee;
  revokeOthers: boolean;
  send: boolean;
  mailOnly: boolean;
}

/** Someone to invite, and whether the link may only be mailed to them (they are in other workspaces too). */
export type InviteeFor = Invitee & { mailOnly?: boolean };

export class Inviter {
  constructor(
    readonly tokens: DifyTokens,
    readonly consoleWebUrl: string,
    private readonly opts: { onIssued?: OnIssued; logger?: Logger } = {},
  ) {}

  /**
   * In the caller's transaction (the workspace's, or a resend's): a token for each invitee,
   * recorded pending with its link sealed to `sealKey`. Nothing is in Dify's Redis yet.
   */
  async prepare(
    tx: Tx,
    row: { batchId: string; line: number; workspaceName: string; send: boolean; revokeOthers?: boolean },
    invitees: InviteeFor[],
    sealKey: KeyObject,
  ): Promise<Pending[]> {
    const pending: Pending[] = [];
    const records: InvitationRecord[] = [];
    for (const invitee of invitees) {
      const id = randomUUID();
      const token = newToken();
      const mailOnly = invitee.mailOnly ?? false;
      // A link only mailed to the person is never sealed for a reveal.
      const jwe = mailOnly ? null : await seal(inviteLink(this.consoleWebUrl, invitee.email, token), sealKey, id);
      const { mailOnly: _, ...plain } = invitee;
      const p = { id, batchId: row.batchId, line: row.line, workspaceName: row.workspaceName, token, invitee: plain };
      pending.push({ ...p, revokeOthers: row.revokeOthers ?? false, send: row.send, mailOnly });
      records.push({
        id,
        batchId: row.batchId,
        line: row.line,
        tenantId: invitee.workspaceId,
        accountId: invitee.accountId,
        email: invitee.email,
        role: invitee.role,
        requiresSetup: invitee.requiresSetup,
        pendingToken: token,
        revokeOthers: row.revokeOthers ?? false,
        send: row.send,
        jwe,
        mailOnly,
        ttlSeconds: ttlSeconds(this.tokens.format),
      });
    }
    await recordInvitations(tx, records);
    return pending;
  }

  /**
   * After the commit: SETEX each token in Dify's Redis, delete the other tokens of a resend's
   * people, and mark them stored. Returns how many this call moved (each is moved, and handed to
   * onIssued, once).
   */
  async complete(db: Db, pending: Pending[]): Promise<number> {
    if (pending.length === 0) return 0;
    await this.tokens.store(pending);
    const resent = pending.filter((p) => p.revokeOthers);
    if (resent.length > 0)
      await this.tokens.revokeOthers(new Map(resent.map((p) => [pairOf(p.invitee.accountId, p.invitee.workspaceId), p.token])));
    const moved = await markStored(
      db,
      pending.map((p) => p.id),
    );
    // Not moved: stored by another worker meanwhile (the same token: nothing to do), or replaced
    // by a resend since this list was read: then the token just stored must not stay valid.
    const stale = await superseded(
      db,
      pending.filter((p) => !moved.has(p.id)).map((p) => p.id),
    );
    if (stale.size > 0) await this.tokens.remove(pending.filter((p) => stale.has(p.id)).map((p) => p.token));
    for (const p of pending) {
      if (!moved.has(p.id) || !this.opts.onIssued) continue;
      try {
        await this.opts.onIssued({
          id: p.id,
          batchId: p.batchId,
          line: p.line,
          tenantId: p.invitee.workspaceId,
          workspaceName: p.workspaceName,
          email: p.invitee.email,
          role: p.invitee.role,
          link: inviteLink(this.consoleWebUrl, p.invitee.email, p.token),
          expiresInSeconds: ttlSeconds(this.tokens.format),
          send: p.send,
          mailOnly: p.mailOnly,
        });
      } catch (err) {
        // The message of a mail error must not carry the link: only its class and code are said.
        const e = err as { name?: string; code?: unknown };
        this.opts.logger?.warn(
          { batchId: p.batchId, line: p.line, invitation: p.id, error: `${e.name ?? 'Error'}${e.code ? ` ${String(e.code)}` : ''}` },
          'the invitation is in Dify; handing its link on failed',
        );
      }
    }
    return moved.size;
  }

  /** Deletes from Dify's Redis the tokens of revoked links (revoke.ts revokeWithdrawn). */
  async revokeWithdrawn(db: Db, opts: { ids?: string[]; idleSeconds?: number } = {}): Promise<number> {
    return revokeWithdrawn(db, this.tokens, opts);
  }

  /**
   * Completes pending invitations (of one row, or every one idle for `idleSeconds`): those a
   * crash or an outage of Dify's Redis left between the commit and the SETEX.
   */
  async completePending(db: Db, opts: { batchId?: string; line?: number; idleSeconds?: number } = {}): Promise<number> {
    let done = 0;
    for (;;) {
      const page = await pendingInvitations(db, { ...opts, limit: 500 });
      if (page.length === 0) return done;
      done += await this.completeRecorded(db, page);
      if (page.length < 500) return done;
    }
  }

  /** complete() for pending records as read from our table (they may have been stored or replaced since). */
  async completeRecorded(db: Db, page: PendingInvitation[]): Promise<number> {
    return this.complete(
      db,
      page.map((r) => ({
        id: r.id,
        batchId: r.batch_id,
        line: r.line,
        workspaceName: r.workspace_name,
        token: r.pending_token,
        invitee: {
          accountId: r.account_id,
          email: r.email,
          workspaceId: r.tenant_id,
          role: r.role,
          requiresSetup: r.requires_setup,
        },
        revokeOthers: r.revoke_others,
        send: r.send,
        mailOnly: r.mail_only,
      })),
    );
  }
}

/**
 * An inviter on its own connection to Dify's Redis (which fails a command fast when Redis is
 * down: the tokens then wait in PostgreSQL for the sweep).
 */
export function openInviter(
  settings: Required<Pick<InvitationSettings, 'redis' | 'consoleWebUrl'>> & InvitationSettings,
  band: Band,
  opts: { onIssued?: OnIssued; logger?: Logger } = {},
): { inviter: Inviter; close(): void } {
  const redis = redisConnection(settings.redis, 'producer');
  const tokens = new DifyTokens(redis, { band, keyPrefix: settings.keyPrefix, expiryHours: settings.expiryHours });
  return { inviter: new Inviter(tokens, settings.consoleWebUrl, opts), close: () => redis.disconnect() };
}

/** What a resend did. */
export interface Resent {
  /** People sent a fresh link (their old tokens are deleted). */
  resent: number;
  /** People of the batch who activated already (or whose workspace is not normal): left alone. */
  skipped: number;
  /**
   * People still pending who are in other workspaces too (and the workspace is not the one they
   * own): no link may go with this batch's workspace (docs/security.md); with --send-invites
   * they are mailed one (counted in `resent`), else none.
   */
  withheld: number;
}

/**
 * `invite --resend`: a fresh token for each person the batch invited who has not activated yet,
 * sealed to the batch's operator key (revealed with `secrets --invites`); every other token of
 * theirs for that workspace is deleted from Dify's Redis.
 */
export async function resendInvitations(db: Db, inviter: Inviter, batchId: string): Promise<Resent> {
  const { sealTo } = await batchOptions<{ sealTo: string }>(db, batchId);
  if (!sealTo) throw new UsageError(`batch "${batchId}" has no --seal-to key: its invitations cannot be sealed`);
  const sealKey = loadSealKey(sealTo);
  const { pending, skipped, withheld } = await withTransaction(db, async (tx) => {
    const current = await lockCurrentInvitations(tx, batchId);
    if (current.length === 0) throw new UsageError(`batch "${batchId}" has no invitations (was it ingested with --invite?)`);
    // A link goes with the workspace only while it is the person's home; else it may only be mailed to them.
    // A link mailed only once stays so: the person was in another workspace when this one invited
    // them, and owning this one since (say, B making A's member its owner) makes it no home of theirs.
    const open = current.filter((c) => c.open && (c.home || c.send));
    await supersede(
      tx,
      open.map((c) => c.id),
    );
    const names = await workspaceNames(tx, [...new Set(open.map((c) => c.tenant_id))]);
    const made = [];
    for (const c of open) {
      made.push(
        ...(await inviter.prepare(
          tx,
          { batchId, line: c.line, workspaceName: names.get(c.tenant_id) ?? '', send: c.send, revokeOthers: true },
          [
            {
              accountId: c.account_id,
              email: c.email,
              workspaceId: c.tenant_id,
              role: c.role,
              requiresSetup: true,
              mailOnly: c.mail_only || !c.home,
            },
          ],
          sealKey,
        )),
      );
    }
    const withheld = current.filter((c) => c.open && !c.home && !c.send).length;
    return { pending: made, skipped: current.length - open.length - withheld, withheld };
  });
  await inviter.complete(db, pending);
  return { resent: pending.length, skipped, withheld };
}

async function workspaceNames(tx: Tx, ids: string[]): Promise<Map<string, string>> {
  const { rows } = await tx.query<{ id: string; name: string }>(`SELECT id, name FROM tenants WHERE id = ANY($1::uuid[])`, [ids]);
  return new Map(rows.map((r) => [r.id, r.name]));
}

/**
 * `secrets --invites`: the batch's invitation links whose token is in Dify's Redis and that were
 * not revealed yet, written to a new 0600 file (with email and workspace beside each); their
 * seals are dropped. All or nothing. Only links that may go with their workspace are revealed
 * (docs/security.md): one whose person has joined another workspace since is revoked instead.
 * `byWorkspace`: `out` is a new folder (0700) holding one 0600 file per workspace,
 * `<workspace id>.csv`, each with that workspace's links only — the file to hand to it.
 */
export async function revealInvitations(
  db: Db,
  batchId: string,
  privateKeyPem: string,
  out: string,
  opts: { byWorkspace?: boolean } = {},
): Promise<number> {
  const key = loadOpenKey(privateKeyPem);
  return withTransaction(db, async (tx) => {
    const { links, waiting, total } = await lockUnrevealedLinks(tx, batchId);
    if (links.length === 0) {
      if (total === 0) throw new UsageError(`batch "${batchId}" has no invitations (was it ingested with --invite?)`);
      if (waiting > 0)
        throw new UsageError(
          `${waiting} invitation(s) of batch "${batchId}" are not in Dify's Redis yet (a running worker completes them): try again in a minute`,
        );
      throw new AlreadyRevealedError(
        `the invitation links of batch "${batchId}" were revealed already; they are shown once — \`invite --resend ${batchId}\` issues fresh ones`,
      );
    }
    const files = new Map<string, string[]>();
    for (const l of links) {
      const link = await unseal(l.jwe, key);
      const line =
        [l.line, l.tenant_id, l.workspace_name, l.email, l.role, link, l.expires_at.toISOString()].map((v) => csvCell(v)).join(',') + '\n';
      const file = opts.byWorkspace ? join(out, `${l.tenant_id}.csv`) : out;
      files.set(file, [...(files.get(file) ?? []), line]);
    }
    const header = 'line,workspace_id,workspace_name,email,role,link,expires_at\n';
    if (opts.byWorkspace) {
      // A new folder of our own: a file in it is either one we wrote now or none.
      await mkdir(out, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') throw new UsageError(`${out} exists already: --by-workspace writes a new folder`);
        throw err;
      });
      try {
        for (const [file, lines] of files) await writeNewFile(file, header + lines.join(''), { mode: 0o600 });
      } catch (err) {
        await rm(out, { recursive: true, force: true });
        throw err;
      }
    } else await writeNewFile(out, header + files.get(out)!.join(''), { mode: 0o600 });
    await markLinksRevealed(
      tx,
      links.map((l) => l.id),
    );
    return links.length;
  });
}

/** What `invite <batch>` did. */
export interface Invited {
  /** Invitations issued (tokens in Dify's Redis), mailOnly ones included. */
  invited: number;
  /** Of them, links only mailed to the person (they are in another workspace too): never revealed. */
  mailOnly: number;
  /** People in another workspace too, without send: no link (a link would set their password there as well). */
  withheld: number;
}

/**
 * `invite <batch>`: invitations for the people the batch created who are still pending and have
 * none of it (a batch made with --create-missing-owners but no --invite), under the worker's rule
 * (docs/security.md): a link goes with the workspace only if it is the person's home; else it is
 * only mailed to them (`send`), or none is made. The links are sealed to the batch's key, or to
 * `sealTo` when the batch has none (then kept as the batch's, for resend and reveal). Run again,
 * it invites only people it has not (`invite --resend` issues fresh links).
 */
export async function inviteUninvited(
  db: Db,
  inviter: Inviter,
  batchId: string,
  opts: { sealTo?: string; send: boolean },
): Promise<Invited> {
  const recorded = (await batchOptions<{ sealTo: string }>(db, batchId)).sealTo;
  const given = opts.sealTo ? publicPemOf(loadSealKey(opts.sealTo)) : undefined;
  if (recorded && given && given !== recorded)
    throw new UsageError(`batch "${batchId}" has a seal key already (its links are sealed to it): leave --seal-to out`);
  const sealTo = recorded ?? given;
  if (!sealTo)
    throw new UsageError(
      `batch "${batchId}" has no seal key: give --seal-to operator-public.pem (each link lets its holder set the password, so it is sealed to that key and revealed once with \`secrets --invites\`)`,
    );
  const sealKey = loadSealKey(sealTo);
  const { pending, mailOnly, withheld } = await withTransaction(db, async (tx) => {
    await lockBatch(tx, batchId);
    if (!recorded) await keepSealKey(tx, batchId, sealTo);
    const made = [];
    let mailOnly = 0;
    let withheld = 0;
    for (const p of await lockUninvited(tx, batchId)) {
      if (!p.home && !opts.send) {
        withheld++;
        continue;
      }
      if (!p.home) mailOnly++;
      made.push(
        ...(await inviter.prepare(
          tx,
          { batchId, line: p.line, workspaceName: p.workspace_name, send: opts.send, revokeOthers: true },
          [{ accountId: p.account_id, email: p.email, workspaceId: p.tenant_id, role: p.role, requiresSetup: true, mailOnly: !p.home }],
          sealKey,
        )),
      );
    }
    return { pending: made, mailOnly, withheld };
  });
  await inviter.complete(db, pending);
  return { invited: pending.length, mailOnly, withheld };
}
