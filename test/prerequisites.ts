// `npm test` runs this first (pretest; .ci/run too): the system packages the suite starts
// (Redis, PostgreSQL, PgBouncer, Chromium, OpenSSL, redis-cli, python3 with xlwt, odfpy and Celery) and a second local account with
// uid 1001 (Dify's container user: the key-ownership tests chown to it). As root on Debian/Ubuntu
// it installs what is missing, saying so, as the demo does; elsewhere it says what to run.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { canInstallWithApt, installWithApt } from '../src/services/local-services.js';

const DIFY_UID = 1001;
const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
/** A module of Debian's own python3 (the legacy-workbook writers, the Celery worker). */
const hasPythonModule = (module: string) => spawnSync('/usr/bin/python3', ['-c', `import ${module}`], { stdio: 'ignore' }).status === 0;
const hasInitdb = () =>
  existsSync('/usr/lib/postgresql') && readdirSync('/usr/lib/postgresql').some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));

/** Debian package → whether this machine has what the tests use from it. */
const PACKAGES: [string, () => boolean][] = [
  ['redis-server', () => has('redis-server')],
  ['postgresql', hasInitdb],
  ['openssl', () => has('openssl')],
  ['chromium', () => existsSync(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium')], // the dashboard's browser test
  ['pgbouncer', () => has('pgbouncer')], // the transaction-pooling test
  ['redis-tools', () => has('redis-cli')], // Cluster and Sentinel set-up
  ['iproute2', () => has('ip')], // the compose recipe's network namespace (dify-env-cli test)
  ['util-linux', () => has('unshare') && has('setpriv')], // its namespaces and the services' users
  ['python3', () => has('python3')], // samples/provision_client.py, run against the HTTP API
  ['python3-xlwt', () => hasPythonModule('xlwt')], // a real Excel 97-2003 .xls (input-formats e2e test)
  ['python3-odf', () => hasPythonModule('odf')], // a real OpenDocument .ods (odfpy)
  // a real Celery worker taking Dify's default-plugin task from a Redis broker (default-plugins test)
  ['python3-celery', () => hasPythonModule('celery')],
  ['python3-redis', () => hasPythonModule('redis')],
];

const say = (m: string) => process.stderr.write(`test prerequisites: ${m}\n`);
const hasUid = (uid: number) => spawnSync('getent', ['passwd', String(uid)], { stdio: 'ignore' }).status === 0;

async function main(): Promise<number> {
  const missing = PACKAGES.filter(([, present]) => !present()).map(([pkg]) => pkg);
  // The tests that chown to uid 1001 or run as another user run only as root (skipped otherwise).
  const noUser = process.getuid?.() === 0 && !hasUid(DIFY_UID);
  if (missing.length === 0 && !noUser) return 0;
  if (!canInstallWithApt()) {
    say(
      `missing ${[...missing, ...(noUser ? [`a local account with uid ${DIFY_UID}`] : [])].join(', ')}. ` +
        `The suite starts these itself; install them once (Debian/Ubuntu, as root):\n` +
        (missing.length ? `  apt-get update && apt-get install -y --no-install-recommends ${missing.join(' ')}\n` : '') +
        (noUser ? `  useradd --uid ${DIFY_UID} --user-group --no-create-home --shell /usr/sbin/nologin dify\n` : '') +
        `(elsewhere: the same programs from your system's packages; CHROMIUM_PATH names another Chromium)`,
    );
    return 1;
  }
  if (missing.length) await installWithApt(missing, say);
  if (noUser) {
    say(`creating the account "dify" with uid ${DIFY_UID} (Dify's container user; the key-ownership tests need it)`);
    const made = spawnSync(
      'useradd',
      ['--uid', String(DIFY_UID), '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'dify'],
      {
        stdio: 'inherit',
      },
    );
    if (made.status !== 0) return 1;
  }
  const still = PACKAGES.filter(([, present]) => !present()).map(([pkg]) => pkg);
  if (still.length) {
    say(`apt-get did not provide ${still.join(', ')}`);
    return 1;
  }
  return 0;
}

process.exitCode = await main();
