// Reveals a batch's sealed API keys once: opens every seal with the operator's private key,
// writes the tokens to a new 0600 file and drops the seals, all or nothing.
import type { KeyObject } from 'node:crypto';
import { unseal } from '../crypto/sealing.js';
import { withTransaction, type Db } from '../db/pool.js';
import { ProvisionError, UsageError } from '../common/errors.js';
import { writeNewFile } from '../common/files.js';
import { lockSealed, markRevealed } from '../store/sealed-secrets.js';

export class AlreadyRevealedError extends ProvisionError {
  override readonly name: string = 'AlreadyRevealedError';
  readonly code = 'ALREADY_REVEALED';
  override readonly httpStatus = 409;
}

/** A wrong key, an existing file or a second call reveals nothing. */
export async function revealSecrets(db: Db, batchId: string, privateKey: KeyObject, out: string): Promise<number> {
  return withTransaction(db, async (tx) => {
    const rows = await lockSealed(tx, batchId);
    if (rows.length === 0) throw new UsageError(`batch "${batchId}" has no sealed API keys (invitation links: \`secrets --invites\`)`);
    const pending = rows.filter((r) => r.jwe !== null && r.revealed_at === null);
    if (pending.length === 0) {
      const when = rows[0]!.revealed_at?.toISOString() ?? 'earlier';
      throw new AlreadyRevealedError(
        `the API keys of batch "${batchId}" were revealed already (${when}); they are shown once — mint new keys if they were lost`,
      );
    }
    const opened = [];
    for (const r of pending) opened.push({ ...r, token: await unseal(r.jwe!, privateKey) });
    const lines = opened.map((o) => `${o.line ?? ''},${o.tenant_id},${o.api_token_id},${o.token}\n`).join('');
    await writeNewFile(out, `line,tenant_id,api_token_id,token\n${lines}`, { mode: 0o600 });
    await markRevealed(
      tx,
      opened.map((o) => o.api_token_id),
    );
    return opened.length;
  });
}
