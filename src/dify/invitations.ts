// Dify's invitation tokens exactly as RegisterService.generate_invite_token stores them
// (api/services/account_service.py; shared notes dify/NOTES.md, Invitations): the key
// `member_invite:token:<uuid4>` in Dify's own Redis (REDIS_DB; from 1.14 under
// `<REDIS_KEY_PREFIX>:` when set), SETEX for INVITE_EXPIRY_HOURS × 3600 s, the value Python's
// json.dumps of account_id, email, workspace_id (and from 1.15, band D: role, requires_setup).
// A token is a secret: it leaves this module only towards Dify's Redis or inside a sealed link.
import { randomUUID } from 'node:crypto';
import type { RedisClient } from '../queue/connection.js';
import type { Band } from './schema-probe.js';

export interface Invitee {
  accountId: string;
  /** The account's email as Dify stores it (Dify compares it exactly). */
  email: string;
  workspaceId: string;
  /** The role the person has in the workspace (owner for the owner). */
  role: string;
  /** A pending account (no password yet): true for every account we create. */
  requiresSetup: boolean;
}

/** How the connected Dify keeps tokens: from its band (the value) and its settings (prefix, TTL). */
export interface TokenFormat {
  band: Band;
  /** REDIS_KEY_PREFIX, trimmed ('' = none). */
  keyPrefix: string;
  expiryHours: number;
}

/**
 * The key prefix this release applies: REDIS_KEY_PREFIX exists from 1.14 (band C's last
 * releases, and D), trimmed as Dify's normalize_redis_key_prefix does; before, Dify has no prefix.
 */
export const appliedPrefix = (f: TokenFormat): string =>
  f.keyPrefix.trim() && (f.band === 'C' || f.band === 'D') ? `${f.keyPrefix.trim()}:` : '';

export const inviteKey = (f: TokenFormat, token: string): string => `${appliedPrefix(f)}member_invite:token:${token}`;

export const ttlSeconds = (f: TokenFormat): number => f.expiryHours * 3600;

/** A new token, as Dify draws it: str(uuid.uuid4()). */
export const newToken = (): string => randomUUID();

/** Python's json.dumps string (ensure_ascii: everything outside printable ASCII as \uXXXX). */
function pyString(s: string): string {
  return JSON.stringify(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The value, byte for byte as json.dumps(invitation_data) writes it for this band. */
export function inviteValue(f: TokenFormat, i: Invitee): string {
  const fields: [string, string][] = [
    ['account_id', pyString(i.accountId)],
    ['email', pyString(i.email)],
    ['workspace_id', pyString(i.workspaceId)],
  ];
  if (f.band === 'D') fields.push(['role', pyString(i.role)], ['requires_setup', i.requiresSetup ? 'true' : 'false']);
  return `{${fields.map(([k, v]) => `"${k}": ${v}`).join(', ')}}`;
}

/** Python's urllib.parse.quote (safe '/'): what Dify's console puts in a link. */
export function pyQuote(s: string): string {
  return encodeURIComponent(s)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%2F/g, '/');
}

/** The link Dify's console shows for an invitation. */
export const inviteLink = (consoleWebUrl: string, email: string, token: string): string =>
  `${consoleWebUrl}/activate?email=${pyQuote(email)}&token=${token}`;

/** The fields Dify reads back from a stored value. */
export interface StoredInvitation {
  account_id: string;
  email: string;
  workspace_id: string;
  role?: string;
  requires_setup?: boolean;
}

/** Dify's Redis, for invitation tokens only. */
export class DifyTokens {
  constructor(
    readonly redis: RedisClient,
    readonly format: TokenFormat,
  ) {}

  /** SETEX each token (the same token again only renews it: completing twice is harmless). */
  async store(tokens: { token: string; invitee: Invitee }[]): Promise<void> {
    if (tokens.length === 0) return;
    const ttl = ttlSeconds(this.format);
    // One key each (a Cluster spreads them over slots): sent at once, each checked.
    await Promise.all(tokens.map((t) => this.redis.setex(inviteKey(this.format, t.token), ttl, inviteValue(this.format, t.invitee))));
  }

  /** DEL these tokens (one key each: a Cluster spreads them over slots). */
  async remove(tokens: string[]): Promise<void> {
    await Promise.all(tokens.map((t) => this.redis.del(inviteKey(this.format, t))));
  }

  async read(token: string): Promise<StoredInvitation | undefined> {
    const v = await this.redis.get(inviteKey(this.format, token));
    return v === null ? undefined : (JSON.parse(v) as StoredInvitation);
  }

  /**
   * Deletes every invitation token for these (account, workspace) pairs except the one kept for
   * each: the ones we issued before and any Dify's console issued.
   */
  async revokeOthers(keep: Map<string, string>): Promise<number> {
    if (keep.size === 0) return 0;
    return this.deleteWhere((pair, token) => {
      const kept = keep.get(pair);
      return kept !== undefined && kept !== token;
    });
  }

  /** Deletes every invitation token for these (account, workspace) pairs (pairOf): links revoked. */
  async revokePairs(pairs: Set<string>): Promise<number> {
    if (pairs.size === 0) return 0;
    return this.deleteWhere((pair) => pairs.has(pair));
  }

  /**
   * Every invitation token key in Dify's Redis by the (account, workspace) pair (pairOf) its value
   * names: one SCAN (every master of a Cluster). Dify keeps tokens by token only, so this is the
   * one way to find the tokens of a person that we did not issue ourselves (Dify's console's).
   */
  async index(): Promise<Map<string, string[]>> {
    const found = new Map<string, string[]>();
    for await (const page of this.scan())
      for (const t of page) {
        const keys = found.get(t.pair);
        if (keys) keys.push(t.key);
        else found.set(t.pair, [t.key]);
      }
    return found;
  }

  /** DEL these keys (as index() names them); returns how many existed. */
  async removeKeys(keys: string[]): Promise<number> {
    const gone = await Promise.all(keys.map((k) => this.redis.del(k)));
    return gone.reduce((a, b) => a + b, 0);
  }

  /** Deletes the tokens that `doomed(pair, token)` names, as a SCAN finds them. */
  private async deleteWhere(doomed: (pair: string, token: string) => boolean): Promise<number> {
    let revoked = 0;
    for await (const page of this.scan()) {
      for (const t of page) if (doomed(t.pair, t.token)) revoked += await this.redis.del(t.key);
    }
    return revoked;
  }

  /**
   * Dify keeps no index of tokens, so the keys are scanned (every master of a Cluster) and their
   * values read in pipelines: each page's tokens with the pair their value names.
   */
  private async *scan(): AsyncGenerator<{ key: string; token: string; pair: string }[]> {
    const pattern = `${appliedPrefix(this.format).replace(/[*?[\]\\]/g, '\\$&')}member_invite:token:*`;
    const nodes = 'nodes' in this.redis ? this.redis.nodes('master') : [this.redis];
    const at = appliedPrefix(this.format).length + 'member_invite:token:'.length;
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        if (keys.length === 0) continue;
        const values = await Promise.all(keys.map((k) => this.redis.get(k)));
        const page = [];
        for (const [i, k] of keys.entries()) {
          const v = values[i];
          if (!v) continue;
          let data: Partial<StoredInvitation>;
          try {
            data = JSON.parse(v) as Partial<StoredInvitation>;
          } catch {
            continue;
          }
          page.push({ key: k, token: k.slice(at), pair: pairOf(String(data.account_id), String(data.workspace_id)) });
        }
        yield page;
      } while (cursor !== '0');
    }
  }
}

/** Every token naming one of these (account, workspace) pairs (pairOf) goes: a person removed from a workspace. */
export async function revokeAllOf(tokens: DifyTokens, pairs: string[]): Promise<number> {
  // No token is '' (uuid4s): keeping '' keeps none.
  return pairs.length === 0 ? 0 : tokens.revokeOthers(new Map(pairs.map((p) => [p, ''])));
}

/** The map key of an (account, workspace) pair for revokeOthers. */
export const pairOf = (accountId: string, workspaceId: string) => `${accountId}|${workspaceId}`;
