// API keys: `keys list` (masked, like Dify's console), `keys create` for existing workspaces
// (tokens go once to a new 0600 file, or sealed to the operator's key), and `secrets` to reveal a
// batch's sealed keys once.
import { createReadStream } from 'node:fs';
import { readFlagFile } from './options.js';
import { parse } from 'csv-parse';
import type { Config } from '../config/config.js';
import { describeError, UsageError } from '../common/errors.js';
import { openNewFile } from '../common/files.js';
import { withProvisioner } from './context.js';
import { escapeControls } from './terminal.js';
import { loadSealKey, seal } from '../crypto/sealing.js';

export const keysListCommand = (flags: { tenant: string; json?: boolean }, config: Config) =>
  withProvisioner(config, async (p) => {
    const keys = await p.listApiKeys(flags.tenant);
    if (flags.json) process.stdout.write(`${JSON.stringify(keys)}\n`);
    else for (const k of keys) process.stdout.write(`${k.masked.padEnd(14)} ${k.type.padEnd(8)} ${k.id}  ${k.scope}\n`);
    return 0;
  });

export interface KeysCreateFlags {
  tenant?: string;
  dataset?: string[];
  from?: string;
  out?: string;
  sealTo?: string;
}

/** tenant_id[,dataset_id] rows; several datasets for one key: separate them with ';'. */
async function requestsFrom(file: string): Promise<{ tenantId: string; datasetIds: string[] }[]> {
  const out = [];
  for await (const rec of createReadStream(file).pipe(
    parse({ columns: (h: string[]) => h.map((c) => c.trim().toLowerCase()), bom: true, skip_empty_lines: true, trim: true }),
  ) as AsyncIterable<Record<string, string>>) {
    if (!rec.tenant_id) throw new UsageError(`${file}: every row needs a tenant_id (columns: tenant_id, dataset_id)`);
    out.push({
      tenantId: rec.tenant_id,
      datasetIds: (rec.dataset_id ?? '')
        .split(';')
        .map((d) => d.trim())
        .filter(Boolean),
    });
  }
  return out;
}

export async function keysCreateCommand(flags: KeysCreateFlags, config: Config): Promise<number> {
  if (!flags.out === !flags.sealTo)
    throw new UsageError('keys create needs exactly one of --out FILE (a new 0600 file) or --seal-to operator-public.pem');
  if (!flags.tenant === !flags.from) throw new UsageError('keys create needs --tenant ID or --from pairs.csv');
  const requests = flags.from ? await requestsFrom(flags.from) : [{ tenantId: flags.tenant!, datasetIds: flags.dataset ?? [] }];
  const sealKey = flags.sealTo ? loadSealKey(await readFlagFile('--seal-to', flags.sealTo)) : undefined;
  // Opened, and the header written, before anything is minted; each token is written (and synced)
  // before its key commits: a key never exists in Dify without its token in the output.
  const fh = flags.out ? await openNewFile(flags.out, 0o600) : undefined;
  // A failed write to standard output (ENOSPC, EPIPE) is answered by its callback: that key is
  // rolled back and the command says so. Meanwhile the stream's 'error' event must not end the
  // process first (main's broken-pipe handler would), so it is set aside until we are done.
  const onError = process.stdout.rawListeners('error') as ((err: Error) => void)[];
  const quiet = () => {};
  if (!fh) {
    process.stdout.removeAllListeners('error');
    process.stdout.on('error', quiet);
  }
  let size = 0;
  const write = async (text: string): Promise<() => Promise<void>> => {
    const at = size;
    if (fh) {
      const bytes = Buffer.from(text);
      const { bytesWritten } = await fh.write(bytes, 0, bytes.length, at).catch(async (err: unknown) => {
        await fh.truncate(at).catch(() => {});
        throw err;
      });
      if (bytesWritten !== bytes.length) {
        await fh.truncate(at).catch(() => {});
        throw new Error(`only ${bytesWritten} of ${bytes.length} bytes could be written (the disk is full?)`);
      }
      await fh.sync();
    } else {
      await new Promise<void>((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())));
    }
    size += Buffer.byteLength(text);
    return async () => {
      if (fh) await fh.truncate(at);
      size = at;
    };
  };
  const where = flags.out ? `${flags.out}` : 'standard output';
  try {
    try {
      await write(`tenant_id,api_token_id,scope,${sealKey ? 'sealed_token' : 'token'}\n`);
    } catch (err) {
      throw new UsageError(`cannot write to ${where} (${describeError(err)}): no key was minted`);
    }
    let delivered = 0;
    let writeFailed = false;
    const results = await withProvisioner(config, (p) =>
      p.mintApiKeys(requests, {
        async deliver(key) {
          const scope = key.datasetIds.length > 0 ? key.datasetIds.join(';') : 'workspace';
          const secret = sealKey ? await seal(key.token, sealKey, key.id) : key.token;
          const undo = await write(`${key.tenantId},${key.id},${scope},${secret}\n`).catch((err: unknown) => {
            writeFailed = true;
            throw err;
          });
          delivered++;
          return async () => {
            await undo();
            delivered--;
          };
        },
      }),
    ).catch((err: unknown) => {
      if (!writeFailed) throw err;
      throw new UsageError(
        `cannot write to ${where} (${describeError(err)}): the key being written was not minted, nor any after it; ${delivered} key(s) before it are in the output`,
      );
    });
    let written = 0;
    for (const r of results) {
      if (!r.key) {
        process.stderr.write(`${escapeControls(`tenant ${r.tenantId}: ${r.error}`)}\n`);
        continue;
      }
      written++;
      const scope = r.key.datasetIds.length > 0 ? r.key.datasetIds.join(';') : 'workspace';
      process.stderr.write(`tenant ${r.key.tenantId}: key ${r.key.masked} (${scope})\n`);
    }
    if (fh) process.stderr.write(`${written} key(s) written to ${flags.out} (mode 0600): they are shown once\n`);
    return written === results.length ? 0 : 1;
  } finally {
    await fh?.close();
    if (!fh) {
      process.stdout.off('error', quiet);
      for (const l of onError) process.stdout.on('error', l);
    }
  }
}

export const secretsCommand = (
  batchId: string,
  flags: { key: string; out?: string; invites?: boolean; byWorkspace?: string },
  config: Config,
) =>
  withProvisioner(config, async (p) => {
    if (flags.byWorkspace !== undefined && (!flags.invites || flags.out !== undefined))
      throw new UsageError('--by-workspace <dir> goes with --invites, instead of --out');
    const out = flags.out ?? flags.byWorkspace;
    if (out === undefined) throw new UsageError('--out <file> is required (with --invites, or --by-workspace <dir>)');
    const pem = await readFlagFile('--key', flags.key);
    if (flags.invites) {
      const n = await p.revealInvitations(batchId, pem, out, { byWorkspace: flags.byWorkspace !== undefined });
      process.stdout.write(
        `${n} invitation link(s) of batch ${batchId} written to ${out}${flags.byWorkspace !== undefined ? ', one file per workspace' : ''} (mode 0600); they cannot be revealed again (\`invite --resend ${batchId}\` issues fresh ones)\n`,
      );
      return 0;
    }
    const n = await p.revealSecrets(batchId, pem, out);
    process.stdout.write(`${n} API key(s) of batch ${batchId} written to ${flags.out} (mode 0600); they cannot be revealed again\n`);
    return 0;
  });

export const inviteCommand = (flags: { resend?: string; batch?: string; sealTo?: string; sendInvites?: boolean }, config: Config) => {
  if (flags.resend && flags.batch) throw new UsageError('invite takes a batch, or --resend BATCH, not both');
  if (flags.resend && (flags.sealTo || flags.sendInvites))
    throw new UsageError("--resend uses the batch's own seal key and mail setting: leave --seal-to and --send-invites out");
  if (flags.batch) return inviteBatch(flags.batch, flags, config);
  if (!flags.resend) throw new UsageError('invite BATCH (its pending people, never invited) or invite --resend BATCH (fresh links)');
  const resendOf = flags.resend;
  return withProvisioner(config, async (p) => {
    const batchId = resendOf;
    const { resent, skipped, withheld } = await p.resendInvitations(batchId);
    // A file name of its own: the first links were revealed to links.csv, which secrets never overwrites.
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
    process.stdout.write(
      `${resent} person(s) of batch ${batchId} got a fresh invitation (their older tokens are deleted from Dify's Redis); ` +
        `${skipped} activated already or their workspace is not active.\n` +
        (withheld > 0
          ? `${withheld} got none: they are in another workspace too, and a link would set their password there as well (they sign in with Dify's email code; see the report's invitations column).\n`
          : '') +
        `The links: dify-provision secrets ${batchId} --invites --key operator.pem --out links-${batchId}-resent-${stamp}.csv\n`,
    );
    return 0;
  });
};

/** `invite BATCH`: invitations for the pending people the batch created without --invite (the home rule applies). */
const inviteBatch = (batchId: string, flags: { sealTo?: string; sendInvites?: boolean }, config: Config) =>
  withProvisioner(config, async (p) => {
    const { invited, mailOnly, withheld } = await p.inviteUninvited(batchId, {
      send: flags.sendInvites ?? false,
      ...(flags.sealTo ? { sealTo: flags.sealTo } : {}),
    });
    process.stdout.write(
      `${invited} pending person(s) of batch ${batchId} got an invitation` +
        (mailOnly > 0 ? ` (${mailOnly} by mail only: they are in another workspace too, so their link is never revealed)` : '') +
        (flags.sendInvites ? '; each link is mailed to its person' : '') +
        '.\n' +
        (withheld > 0
          ? `${withheld} got none: they are in another workspace too, and a link would set their password there as well (they sign in with Dify's email code, or run this with --send-invites to mail them one).\n`
          : '') +
        (invited - mailOnly > 0
          ? `The links: dify-provision secrets ${batchId} --invites --key operator.pem --out links-${batchId}.csv\n`
          : ''),
    );
    return 0;
  });
