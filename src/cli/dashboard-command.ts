// `dify-provision dashboard`: the web dashboard, on loopback by default, behind a token.
//
// No token is ever an argument (every user of the machine reads arguments with `ps`) or printed
// where logs keep it: the tokens come from the environment or from files, and a token generated
// for the run goes to a new 0600 file (or, when stdout is a terminal, is shown there once).
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/config.js';
import { buildDashboard } from '../dashboard/server.js';
import { ConfigError } from '../common/errors.js';
import { writeNewFile } from '../common/files.js';
import { provisionerOn } from '../provisioner.js';
import { openQueueRuntime } from '../runtime/runtime.js';

export interface DashboardFlags {
  host: string;
  port: number;
  /** Files of read-only tokens, one a line (--read-token-file, repeatable). */
  readTokenFile?: string[];
  /** Where a generated token is written (0600); default: a new private folder under the temp dir. */
  tokenFile?: string;
  maxBytes?: number;
  /** The removed --read-token: refused, naming what to use instead. */
  readToken?: string;
}

/** The read-only tokens of a --read-token-file: one a line; blank lines and # comments are skipped. */
export async function readTokenFile(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new ConfigError(`--read-token-file ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  });
  const tokens = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (tokens.length === 0) throw new ConfigError(`--read-token-file ${path}: has no token (one a line)`);
  tokens.forEach((t, i) => {
    if (t.length < 16) throw new ConfigError(`--read-token-file ${path}: token ${i + 1} is shorter than 16 characters`);
  });
  return tokens;
}

export async function dashboardCommand(flags: DashboardFlags, config: Config): Promise<void> {
  if (flags.readToken !== undefined)
    throw new ConfigError(
      '--read-token is gone: a token in the arguments shows in `ps` to every user of the machine; put read-only tokens in DASHBOARD_READ_TOKENS or in a file for --read-token-file (one a line)',
    );
  const fromFiles = (await Promise.all((flags.readTokenFile ?? []).map(readTokenFile))).flat();
  const readTokens = [...(config.dashboardReadTokens ?? []), ...fromFiles];
  const token = config.dashboardToken ?? randomBytes(24).toString('base64url');
  if (readTokens.includes(token))
    throw new ConfigError('a read-only token (DASHBOARD_READ_TOKENS, --read-token-file) is the dashboard token');
  // A generated token: into a new 0600 file, unless a person is at the terminal to see it once.
  let ownFolder: string | undefined;
  let tokenFile: string | undefined;
  if (!config.dashboardToken && (flags.tokenFile !== undefined || !process.stdout.isTTY)) {
    if (flags.tokenFile === undefined) ownFolder = await mkdtemp(join(tmpdir(), 'dify-provision-dashboard-')); // 0700
    tokenFile = flags.tokenFile ?? join(ownFolder!, 'token');
    await writeNewFile(tokenFile, `${token}\n`, { mode: 0o600, overwrite: true });
  }
  const rt = await openQueueRuntime(config);
  const app = await buildDashboard({
    db: rt.db,
    queue: rt.queue,
    redis: rt.redis,
    token,
    readTokens,
    provisioner: provisionerOn(rt),
    ...(flags.maxBytes ? { maxBytes: flags.maxBytes } : {}),
  });
  const address = await app.listen({ host: flags.host, port: flags.port });
  const url = new URL(address);
  if (config.dashboardToken) {
    process.stdout.write(`dashboard: ${url.toString()} (token: DASHBOARD_TOKEN)\n`);
  } else if (tokenFile) {
    process.stdout.write(
      `dashboard: ${url.toString()}\n(token generated for this run, in ${tokenFile} (0600): open the address with ?token=<that token>; set DASHBOARD_TOKEN to choose one)\n`,
    );
  } else {
    url.searchParams.set('token', token);
    process.stdout.write(
      `dashboard: ${url.toString()}\n(token generated for this run, shown only here; set DASHBOARD_TOKEN to choose one)\n`,
    );
  }
  const stop = async () => {
    await app.close();
    await rt.close();
    // The generated token ends with this process: so does the folder we made for it.
    if (ownFolder) await rm(ownFolder, { recursive: true, force: true });
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
