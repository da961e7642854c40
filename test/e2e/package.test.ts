// Installable and shippable: `npm pack` of a clean checkout (no dist/: `prepare` builds it, as for a
// git-URL install), that tarball installed by npm into an empty folder, and `npx dify-provision`
// run from there, far from this repository (so nothing is found in the work tree by accident).
// No network at test time: the install uses a lock made from this repository's package-lock.json
// (the exact tree the suite tests) and npm's cache (`npm ci` filled it), with --offline. A plain
// `npm install <tarball>` resolves the dependency ranges from the registry instead.
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIFY_SCHEMAS, PACKAGE_ROOT, projectFile } from '../../src/common/project-files.js';
import { runProgram, type Ran } from '../helpers/cli.js';

interface Packed {
  filename: string;
  version: string;
  integrity: string;
  files: { path: string; mode: number }[];
}
interface LockEntry {
  dev?: boolean;
  [k: string]: unknown;
}

const pkg = JSON.parse(await readFile(projectFile('package.json'), 'utf8')) as {
  name: string;
  version: string;
  dependencies: Record<string, string>;
  bin: Record<string, string>;
  engines: Record<string, string>;
  license: string;
};
let dir: string;
let packed: Packed;
let app: string;

/** A user's shell: none of npm's own variables of the run that started the tests. */
const shell = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'INIT_CWD' && k !== 'DIFY_ENV_FILE'));

const run = (command: string, args: string[], cwd: string) => runProgram(command, args, shell(), undefined, cwd);
const ok = (r: Ran, what: string): Ran => {
  expect(r.code, `${what}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dify-provision-package-'));
  // A clean checkout: the work tree's files as git would clone them (tracked and new, not ignored:
  // no dist/, no node_modules), with this repository's node_modules for `prepare` (tsc).
  const checkout = join(dir, 'checkout');
  const listed = ok(await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], PACKAGE_ROOT), 'git ls-files');
  for (const file of listed.stdout.split('\0').filter(Boolean)) {
    await mkdir(dirname(join(checkout, file)), { recursive: true });
    await copyFile(join(PACKAGE_ROOT, file), join(checkout, file)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err; // deleted in the work tree, not yet in git
    });
  }
  await symlink(projectFile('node_modules'), join(checkout, 'node_modules'));
  const pack = ok(await run('npm', ['pack', '--json', '--pack-destination', dir], checkout), 'npm pack');
  packed = (JSON.parse(pack.stdout) as Packed[])[0]!;

  // An empty project that depends on the tarball, locked to the tree this repository tests.
  app = join(dir, 'app');
  await mkdir(app);
  const tarball = `file:../${packed.filename}`;
  const lock = JSON.parse(await readFile(projectFile('package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const packages: Record<string, LockEntry> = {
    '': { name: 'app', dependencies: { [pkg.name]: tarball } },
    [`node_modules/${pkg.name}`]: {
      version: pkg.version,
      resolved: tarball,
      integrity: packed.integrity,
      license: pkg.license,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  for (const [path, entry] of Object.entries(lock.packages)) if (path.startsWith('node_modules/') && !entry.dev) packages[path] = entry;
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, dependencies: { [pkg.name]: tarball } }));
  await writeFile(join(app, 'package-lock.json'), JSON.stringify({ name: 'app', lockfileVersion: 3, requires: true, packages }));
  ok(
    await run('npm', ['ci', '--offline', '--no-audit', '--no-fund'], app),
    'npm ci --offline (the tarball and its dependencies from the cache)',
  );
}, 600_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the package, packed and installed', () => {
  it('ships the built CLI, the dashboard page, the SQL and the samples, and nothing of the sources, tests or deployments', () => {
    const paths = packed.files.map((f) => f.path);
    const bin = Object.values(pkg.bin)[0]!;
    expect(paths).toContain(bin);
    expect(packed.files.find((f) => f.path === bin)!.mode & 0o111).not.toBe(0);
    for (const schema of Object.values(DIFY_SCHEMAS)) expect(paths).toContain(schema.slice(PACKAGE_ROOT.length + 1));
    expect(paths).toEqual(expect.arrayContaining(['package.json', 'README.md', 'samples/workspaces.csv', 'web/index.html']));
    expect(paths.filter((p) => /^(src|test|deploy|node_modules|\.)|\.test\.|^dist\/test\//.test(p))).toEqual([]);
  });

  it('npx dify-provision --version and --help, from the installed package', async () => {
    const version = ok(await run('npx', ['--offline', 'dify-provision', '--version'], app), '--version');
    expect(version.stdout.trim()).toBe(pkg.version);
    const help = ok(await run('npx', ['--offline', 'dify-provision', '--help'], app), '--help');
    for (const command of ['ingest', 'worker', 'status', 'report', 'dashboard', 'doctor'])
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
  });

  it("runs a command from the installed package's own files: a dry run of its sample CSV", async () => {
    const installed = join(app, 'node_modules', pkg.name);
    const r = await runProgram(
      join(app, 'node_modules', '.bin', 'dify-provision'),
      ['ingest', '--dry-run', join(installed, 'samples', 'workspaces.csv')],
      {
        PATH: process.env.PATH,
        HOME: dir,
      },
    );
    expect(r.stdout, r.stderr).toMatch(/would queue 12, reject 5/);
  });
});
