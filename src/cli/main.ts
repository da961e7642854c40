#!/usr/bin/env -S node --max-semi-space-size=4 --max-old-space-size=256
// (A small young generation keeps ingest's peak RSS flat however large the CSV: 170 MB for a
// million rows, against 320 MB with V8's defaults; see BENCHMARKS.md.)
// dify-provision: the command line, a thin door into the library.
import { readFileSync } from 'node:fs';
import { readFlagFile } from './options.js';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Config } from '../config/config.js';
import { DIFY_SCHEMA_NAMES, projectFile } from '../common/project-files.js';
import { DEFAULT_LOCK_MS } from '../common/limits.js';
import { byteSize, columnMapping, delimiter, duration, positiveInt, rateLimit, trustedAccount } from './options.js';
import { quietOnBrokenPipe } from './broken-pipe.js';

// Each command's modules (the database and queue clients, the dashboard, the cloud SDKs) are
// loaded when that command runs, so `--help`, `--version` and a typo answer at once.
const config = async (): Promise<Config> => (await import('../config/config.js')).loadConfig();
const ingest = () => import('./ingest-command.js');
const batches = () => import('./batch-commands.js');
const keysCommands = () => import('./keys-commands.js');

function buildProgram(exit: (code: number) => void): Command {
  const program = new Command('dify-provision')
    .description('Provision Dify workspaces (tenants) in bulk from a CSV, through a BullMQ queue.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Configuration (every command):
  --dify-env FILE   read Dify's own settings from its docker/.env (and the envs/ files beside it):
                    DB_HOST, DB_PORT, DB_USERNAME, DB_PASSWORD, DB_DATABASE, REDIS_*, STORAGE_TYPE and
                    its settings, MAIL_TYPE and SMTP_*, CONSOLE_WEB_URL; also DIFY_ENV_FILE=FILE.
                    Without it, those settings are read from the environment only.
  Our own variables (they win over Dify's): DATABASE_URL, REDIS_URL, DIFY_STORAGE_DIR,
  DASHBOARD_TOKEN, DASHBOARD_READ_TOKENS, WORKER_CONCURRENCY, KEY_FILE_OWNER,
  DIFY_PROVISION_LOG_LEVEL, DIFY_PROVISION_DEBUG (docs/configuration.md).`,
    );

  program
    .command('ingest')
    .description('validate a CSV of workspaces and queue one job per valid row (FILE or - for stdin)')
    .argument('<file>', 'CSV or .xlsx file, or - for standard input')
    .option('--batch-id <id>', 'name the batch (default: from the file name and content)')
    .option(
      '--dry-run',
      'validate and print what would be queued, writing nothing (with a database set: a read-only plan from PostgreSQL; never Redis); exit 2 if any row would not go',
    )
    .addOption(
      new Option(
        '--rows [n]',
        'with --dry-run: list the first n rows (default 1000), each with its verdict and the accounts it would create',
      ).argParser(positiveInt('--rows')),
    )
    .option('--ignore-unknown-columns', 'drop columns dify-provision does not know instead of refusing the file')
    .addOption(new Option('--delimiter <d>', 'CSV column delimiter: , ; or tab (default: detected from the header)').argParser(delimiter))
    .option('--encoding <name>', 'the CSV is not UTF-8 (or UTF-16 with a BOM): e.g. windows-1252')
    .option('--sheet <name>', '.xlsx: the sheet to read (default: the first)')
    .addOption(
      new Option(
        '--header-row <n>',
        "the header's line (the sheet's row number); the lines above it are skipped (default: the first of the first 10 lines that names workspace_name and owner_email)",
      ).argParser(positiveInt('--header-row')),
    )
    .addOption(
      new Option(
        '--map <heading=column>',
        'read a heading as a column, e.g. --map "Owner E-mail=owner_email" (repeatable; column - drops it); common spellings are read without it',
      ).argParser(columnMapping),
    )
    .option('--allow-duplicate-names', 'let rows through whose owner already has a workspace of that name (in the file or in Dify)')
    .option('--strict', 'if any row is invalid, queue nothing and list every invalid row')
    .option('--create-missing-owners', 'owners/members without a Dify account get one (pending, as Dify invites do)')
    .addOption(
      new Option(
        '--trust-account <email>',
        "let rows join this existing account although another batch's operator was given its link (docs/security.md); repeatable",
      ).argParser(trustedAccount),
    )
    .option('--wait', 'follow the batch until it is done, then write its report; exit 0 only if every row was created or existing')
    .option('--report-dir <dir>', 'where --wait writes <batch>-report.csv/.json', '.')
    .option('--overwrite', 'let --wait replace report files of an earlier run (else an existing file is an error)')
    .option('--mint-dataset-keys', 'mint a workspace-wide knowledge-base API key with every new workspace (needs --seal-to)')
    .option('--seal-to <pem>', "the operator's RSA public key: minted API keys are sealed to it, revealed once by `secrets`")
    .option(
      '--invite',
      "every account the batch creates gets Dify's invitation token (in Dify's Redis) and link (sealed to --seal-to; `secrets --invites`)",
    )
    .option('--invite-pending', "with --invite: also the batch's existing accounts that are still pending")
    .option(
      '--send-invites',
      "with --invite (implied): also mail each person their link through Dify's SMTP settings (MAIL_TYPE=smtp, SMTP_*, MAIL_DEFAULT_SEND_FROM)",
    )
    .option('--json', 'print the summary as one JSON object')
    .addOption(new Option('--attempts <n>', 'attempts per row for transient errors').default(5).argParser(positiveInt('--attempts')))
    .addOption(
      new Option('--backoff-ms <ms>', 'first retry delay, doubling each time').default(1000).argParser(positiveInt('--backoff-ms')),
    )
    .addOption(
      new Option('--max-rows <n>', 'refuse a batch of more rows than this, queueing nothing (default 1,000,000)').argParser(
        positiveInt('--max-rows'),
      ),
    )
    .addOption(
      new Option('--max-bytes <size>', 'refuse a batch whose recorded rows take more than this, queueing nothing (default 1GiB)').argParser(
        byteSize('--max-bytes'),
      ),
    )
    .action(async (file: string, flags) =>
      exit(
        await (
          await ingest()
        ).ingestCommand(
          file,
          { ...flags, ...(flags.sealTo ? { sealTo: await readFlagFile('--seal-to', flags.sealTo) } : {}) },
          await config(),
        ),
      ),
    );

  program
    .command('apply')
    .description(
      'change existing workspaces, one change per row: add_member, remove_member, set_role, transfer_owner, rename, archive, restore (FILE or - for stdin)',
    )
    .argument('<file>', 'CSV or .xlsx file (columns action, workspace_id or external_id, email, role, name), or - for standard input')
    .option('--batch-id <id>', 'name the batch (default: the file name and a fresh stamp: applying a file again is a new batch)')
    .option(
      '--sync',
      "the file lists each workspace's complete membership (workspace_id or external_id, email, role): add, re-role and remove to match; the owner changes only if the file says owner for another person",
    )
    .option(
      '--dry-run',
      'print the plan (would add, remove, re-role, transfer, rename, archive, restore; unchanged; refused) from PostgreSQL without writing, naming each removal of --sync; exit 2 if any row would be refused',
    )
    .addOption(
      new Option(
        '--rows [n]',
        'with --dry-run: list the first n rows (default 1000), each with its verdict and why (--sync names every removal without it)',
      ).argParser(positiveInt('--rows')),
    )
    .addOption(
      new Option(
        '--within <batch[,batch...]>',
        'act only on the workspaces these ingest batches created (repeatable): a row naming any other is rejected. Use it for every changes file a customer supplies',
      ).argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]),
    )
    .option('--ignore-unknown-columns', 'drop columns dify-provision does not know instead of refusing the file')
    .addOption(new Option('--delimiter <d>', 'CSV column delimiter: , ; or tab (default: detected from the header)').argParser(delimiter))
    .option('--encoding <name>', 'the CSV is not UTF-8 (or UTF-16 with a BOM): e.g. windows-1252')
    .option('--sheet <name>', '.xlsx: the sheet to read (default: the first)')
    .addOption(
      new Option(
        '--header-row <n>',
        "the header's line (the sheet's row number); the lines above it are skipped (default: the first of the first 10 lines that names the file's required columns)",
      ).argParser(positiveInt('--header-row')),
    )
    .addOption(
      new Option(
        '--map <heading=column>',
        'read a heading as a column, e.g. --map "Person=email" (repeatable; column - drops it); common spellings are read without it',
      ).argParser(columnMapping),
    )
    .option('--strict', 'if any row is invalid, queue nothing and list every invalid row')
    .option('--create-missing-owners', 'add_member of an email without a Dify account creates it (pending, as Dify invites do)')
    .addOption(
      new Option(
        '--trust-account <email>',
        "let rows join this existing account although another batch's operator was given its link (docs/security.md); repeatable",
      ).argParser(trustedAccount),
    )
    .option('--wait', 'follow the batch until it is done, then write its report; exit 0 only if every row was applied or unchanged')
    .option('--report-dir <dir>', 'where --wait writes <batch>-report.csv/.json', '.')
    .option('--overwrite', 'let --wait replace report files of an earlier run (else an existing file is an error)')
    .option('--seal-to <pem>', "the operator's RSA public key: invitation links are sealed to it, revealed once by `secrets --invites`")
    .option('--invite', "every account add_member creates gets Dify's invitation token (in Dify's Redis) and link (sealed to --seal-to)")
    .option('--send-invites', "with --invite (implied): also mail each link through Dify's SMTP settings")
    .option('--json', 'print the summary as one JSON object')
    .addOption(new Option('--attempts <n>', 'attempts per row for transient errors').default(5).argParser(positiveInt('--attempts')))
    .addOption(
      new Option('--backoff-ms <ms>', 'first retry delay, doubling each time').default(1000).argParser(positiveInt('--backoff-ms')),
    )
    .addOption(new Option('--max-rows <n>', 'refuse a batch of more rows than this, queueing nothing').argParser(positiveInt('--max-rows')))
    .addOption(
      new Option('--max-bytes <size>', 'refuse a batch whose recorded rows take more than this, queueing nothing').argParser(
        byteSize('--max-bytes'),
      ),
    )
    .action(async (file: string, flags) =>
      exit(
        await (
          await import('./apply-command.js')
        ).applyCommand(
          file,
          { ...flags, ...(flags.sealTo ? { sealTo: await readFlagFile('--seal-to', flags.sealTo) } : {}) },
          await config(),
        ),
      ),
    );

  program
    .command('worker')
    .description('process queued workspaces until stopped (SIGINT/SIGTERM finish in-flight jobs; a second signal stops at once)')
    .addOption(
      new Option('--concurrency <n>', 'jobs in flight in this process (default: WORKER_CONCURRENCY, else 4 × cores, at least 8)').argParser(
        positiveInt('--concurrency'),
      ),
    )
    .option('--rate-limit <rate>', 'global limit across all workers, e.g. 10/s', rateLimit)
    .addOption(
      new Option(
        '--lock-duration-ms <ms>',
        "BullMQ's job lock and stalled-check interval: a killed worker's jobs are back in the queue within three times this",
      )
        .default(DEFAULT_LOCK_MS)
        .argParser(positiveInt('--lock-duration-ms')),
    )
    .addOption(
      new Option('--grace-period <duration>', 'on SIGTERM/SIGINT, how long in-flight jobs may take before it stops anyway: 30, 30s, 2m')
        .default(30)
        .argParser(duration('--grace-period')),
    )
    .action(
      async (flags: {
        concurrency?: number;
        rateLimit?: { max: number; durationMs: number };
        lockDurationMs: number;
        gracePeriod: number;
      }) => {
        const { runWorker } = await import('../worker/run-worker.js');
        await runWorker(await config(), {
          ...(flags.concurrency ? { concurrency: flags.concurrency } : {}),
          handleSignals: true,
          gracePeriodMs: flags.gracePeriod * 1000,
          lockDurationMs: flags.lockDurationMs,
          // The identity changed under it (`identity --new` on a copy): stopped; exit non-zero so a supervisor restarts it on the new queue.
          onIdentityMoved: () => {
            process.exitCode = 1;
          },
          ...(flags.rateLimit ? { limiter: flags.rateLimit } : {}),
        });
      },
    );

  program
    .command('identity')
    .description(
      'which identity (and queue) this Dify database has, and whether another live PostgreSQL server claims it (a physical copy)',
    )
    .option('--new', 'on a physical copy (pg_basebackup, a copied volume, a snapshot): give it an identity and a queue of its own')
    .option('--adopt <lineage>', 'rows queued under this earlier lineage of this server are run here (a crash restart no worker saw)')
    .option('--json', 'print as JSON')
    .action(async (flags) => exit(await (await import('./identity-command.js')).identityCommand(flags, await config())));

  program
    .command('status')
    .description("a batch's counts per outcome, from PostgreSQL")
    .argument('<batch>', 'batch id')
    .option('--json', 'print as JSON')
    .action(async (batch: string, flags) => exit(await (await batches()).statusCommand(batch, flags, await config())));

  program
    .command('wait')
    .description(
      'follow a batch until it is done (progress bar on a TTY), then write its report; exit 0 only if every row was created or existing',
    )
    .argument('<batch>', 'batch id')
    .option('--report-dir <dir>', 'where to write <batch>-report.csv/.json', '.')
    .option('--overwrite', 'replace report files of an earlier run (else an existing file is an error)')
    .option('--json', 'print the final status as JSON')
    .action(async (batch: string, flags) => exit(await (await batches()).waitCommand(batch, flags, await config())));

  program
    .command('report')
    .description('one row per input row, in input order: outcome, tenant id, key fingerprint, attempts, error')
    .argument('<batch>', 'batch id')
    .addOption(new Option('--format <format>', 'csv or json').choices(['csv', 'json']).default('csv'))
    .option('--out <file>', 'write to a new file instead of standard output')
    .option('--overwrite', 'with --out: replace an existing file')
    .action(async (batch: string, flags) => exit(await (await batches()).reportCommand(batch, flags, await config())));

  program
    .command('retry')
    .description("queue a batch's failed rows again (after fixing the cause); --cancelled: its cancelled rows (undoes cancel)")
    .argument('<batch>', 'batch id')
    .option('--cancelled', 'queue the cancelled rows again instead of the failed ones')
    .addOption(
      new Option(
        '--trust-account <email>',
        "as ingest's: let the rows join this existing account although another batch's operator was given its link (recorded with the batch; docs/security.md); repeatable",
      ).argParser(trustedAccount),
    )
    .option(
      '--create-missing-owners',
      "as ingest's: the rows queued again create the owners and members they name that have no Dify account (pending, as Dify's invite does; recorded with the batch)",
    )
    .action(async (batch: string, flags: { cancelled?: boolean; trustAccount?: string[]; createMissingOwners?: boolean }) =>
      exit(await (await batches()).retryCommand(batch, flags, await config())),
    );

  program
    .command('cancel')
    .description("cancel a batch's waiting rows; rows being processed finish")
    .argument('<batch>', 'batch id')
    .action(async (batch: string) => exit(await (await batches()).cancelCommand(batch, await config())));

  program
    .command('batches')
    .description('list batches with their totals and state')
    .option('--json', 'print as JSON')
    .action(async (flags) => exit(await (await batches()).batchesCommand(flags, await config())));

  program
    .command('demo')
    .description('run the sample batch end to end (starts local Redis + PostgreSQL when no URLs are set)')
    .option('--dir <dir>', 'project-relative folder for key files and reports', '.demo')
    .action(async (flags) => exit(await (await import('./demo-command.js')).demoCommand(flags, await config())));

  const keys = program.command('keys').description("API keys of existing workspaces (Dify's dataset keys)");
  keys
    .command('list')
    .description("a workspace's API keys, masked as Dify's console shows them, with their scope")
    .requiredOption('--tenant <id>', 'workspace (tenant) id')
    .option('--json', 'print as JSON')
    .action(async (flags) => exit(await (await keysCommands()).keysListCommand(flags, await config())));
  keys
    .command('create')
    .description('mint a dataset API key for an existing workspace (or one per row of --from), workspace-wide or bound to knowledge bases')
    .option('--tenant <id>', 'workspace (tenant) id')
    .option('--dataset <id...>', 'bind the key to these knowledge bases (strict UUIDs of this workspace)')
    .option('--from <csv>', 'mint in bulk: a CSV with tenant_id and optional dataset_id (several separated by ;)')
    .option('--out <file>', 'write the tokens to this new file, mode 0600 (they are shown once)')
    .option('--seal-to <pem>', "instead, print each token sealed to the operator's RSA public key (JWE)")
    .action(async (flags) => exit(await (await keysCommands()).keysCreateCommand(flags, await config())));

  program
    .command('secrets')
    .description("write a batch's sealed API keys (or, --invites, its invitation links) to a new 0600 file, once")
    .argument('<batch>', 'batch id')
    .requiredOption('--key <pem>', "the operator's RSA private key the keys were sealed to")
    .option('--out <file>', 'a new file for the tokens (mode 0600)')
    .option('--invites', 'the invitation links (with email and workspace) instead of the API keys')
    .option(
      '--by-workspace <dir>',
      "with --invites, instead of --out: a new folder with one 0600 file per workspace, <workspace id>.csv, each holding only that workspace's links",
    )
    .action(async (batch: string, flags) => exit(await (await keysCommands()).secretsCommand(batch, flags, await config())));

  program
    .command('invite [batch]')
    .description(
      "invitations (Dify's own tokens and links): `invite BATCH` for the pending people a batch created without --invite; --resend BATCH fresh ones",
    )
    .option('--resend <batch>', 'fresh links for the people who have not activated yet; their old tokens are deleted')
    .option('--seal-to <pem>', "the operator's RSA public key, for a batch that has none: links are sealed to it (`secrets --invites`)")
    .option('--send-invites', "also mail each person their link through Dify's SMTP settings (MAIL_TYPE=smtp, SMTP_*)")
    .action(async (batch: string | undefined, flags: { resend?: string; sealTo?: string; sendInvites?: boolean }) =>
      exit(
        await (
          await keysCommands()
        ).inviteCommand(
          { ...flags, ...(batch ? { batch } : {}), ...(flags.sealTo ? { sealTo: await readFlagFile('--seal-to', flags.sealTo) } : {}) },
          await config(),
        ),
      ),
    );

  program
    .command('doctor')
    .description('check tenants, key files and the ledger against each other; exit non-zero while findings remain')
    .option('--fix', "remove orphan key folders and repair modes (never touches an existing tenant's key)")
    .addOption(
      new Option('--min-age <duration>', 'leave key folders younger than this alone (a tenant may be mid-creation): 600, 600s, 10m, 2h')
        .default(600)
        .argParser(duration('--min-age')),
    )
    .option('--json', 'print findings as JSON')
    .action(async (flags) => exit(await (await import('./doctor-command.js')).doctorCommand(flags, await config())));

  program
    .command('dashboard')
    .description('web dashboard of batches and rows (live), queue internals, /healthz and /metrics; needs the token')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .addOption(
      new Option('--port <port>', 'port (0: any free port)').default(3000).argParser((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('--port must be 0-65535');
        return n;
      }),
    )
    .addOption(
      new Option(
        '--read-token-file <path>',
        'a file of read-only tokens for the API and pages, one a line (status and reports; repeatable; also DASHBOARD_READ_TOKENS)',
      ).argParser((v: string, all: string[] = []) => [...all, v]),
    )
    // Gone: the token showed in `ps` to every user of the machine (refused by the command, which
    // does not repeat the value, as an argument parser's message would).
    .addOption(new Option('--read-token <token>').hideHelp())
    .option(
      '--token-file <path>',
      'without DASHBOARD_TOKEN: where the generated token is written (0600; default: a new folder under the temp dir)',
    )
    .addOption(
      new Option('--max-bytes <size>', "API uploads' cap, and a batch's bound of recorded rows, as ingest's (default 1GiB)").argParser(
        byteSize('--max-bytes'),
      ),
    )
    .action(async (flags) => (await import('./dashboard-command.js')).dashboardCommand(flags, await config()));

  program
    .command('services')
    .description('run local Redis + PostgreSQL (Dify schema) from the system packages until Ctrl-C; prints the env to export')
    .option('--dir <dir>', 'data folder (default: a new folder under the system temp dir, which the postgres user can reach)')
    .addOption(
      new Option('--dify-schema <release>', "which Dify release's schema the database gets").choices(DIFY_SCHEMA_NAMES).default('latest'),
    )
    .action(async (flags) => exit(await (await import('./services-command.js')).servicesCommand(flags)));

  return program;
}

/** The package's own version (package.json is shipped with it). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(projectFile('package.json'), 'utf8')) as { version: string }).version;
}

/** DEBUG, through the config module (false when the configuration itself is what failed). */
async function debugging(): Promise<boolean> {
  try {
    return (await config()).debug;
  } catch {
    return false;
  }
}

/**
 * `--dify-env FILE`, anywhere on the line: Dify's docker/.env as configuration (DIFY_ENV_FILE
 * does the same). Taken out before commander sees the arguments, so every command accepts it.
 */
function takeDifyEnv(argv: string[]): string[] {
  const at = argv.findIndex((a) => a === '--dify-env' || a.startsWith('--dify-env='));
  if (at < 0) return argv;
  const inline = argv[at]!.includes('=');
  const value = inline ? argv[at]!.slice('--dify-env='.length) : argv[at + 1];
  if (!value) throw new InvalidArgumentError("--dify-env needs the path of Dify's .env file");
  process.env.DIFY_ENV_FILE = value;
  return argv.filter((_, i) => i !== at && !(i === at + 1 && !inline));
}

async function main(): Promise<void> {
  const exit = (code: number) => {
    process.exitCode = code;
  };
  quietOnBrokenPipe();
  try {
    await buildProgram(exit).parseAsync(takeDifyEnv(process.argv));
  } catch (err) {
    // Our own errors carry their exit code; anything else is unexpected (its stack with DEBUG=1).
    const { describeError, ProvisionError } = await import('../common/errors.js');
    const { escapeControls } = await import('./terminal.js');
    process.stderr.write(`dify-provision: ${escapeControls(describeError(err))}\n`);
    if (!(err instanceof ProvisionError) && (await debugging())) process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = err instanceof ProvisionError ? err.exitCode : 1;
  }
}

await main();
