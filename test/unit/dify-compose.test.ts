// deploy/dify-compose/docker-compose.yaml against Dify's own docker-compose.yaml and .env.example
// (test/fixtures/dify-docker, Dify 1.16.1 byte for byte), and the README's copy-paste steps (with
// docs/deploying.md's `docker run` one-liner) against both. Where a docker compose CLI exists, `docker compose config` checks the file too.
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { parseComposeDotenv } from '../../src/config/compose-dotenv.js';
import { composeHostsOf, difySettings, storageFromDify } from '../../src/config/dify-env.js';
import { projectFile } from '../../src/common/project-files.js';
import { docsSection, readmeSection, shellBlocks } from '../helpers/readme.js';

interface Service {
  image?: string;
  user?: string;
  command?: string[] | string;
  environment?: Record<string, string | null>;
  volumes?: string[];
  networks?: string[] | Record<string, unknown>;
  ports?: string[];
  profiles?: string[];
  working_dir?: string;
}
interface ComposeFile {
  name?: string;
  services: Record<string, Service>;
  networks?: Record<string, { name?: string; external?: boolean } | null>;
}

const OURS = projectFile('deploy', 'dify-compose', 'docker-compose.yaml');
const DIFY = projectFile('test', 'fixtures', 'dify-docker');
const load = async (file: string) => parse(await readFile(file, 'utf8'), { merge: true }) as ComposeFile;
const ours = await load(OURS);
const dify = await load(join(DIFY, 'docker-compose.yaml'));
const difyEnv = parseComposeDotenv(await readFile(join(DIFY, '.env.example'), 'utf8'), () => undefined);

/** `${NAME:-default}` → default; `${NAME}` / `${NAME:?message}` → the value given for NAME. */
const interpolate = (s: string, vars: Record<string, string> = {}) =>
  s.replace(
    /\$\{(\w+)(?::([-?])((?:[^{}]|\{[^}]*\})*))?\}/g,
    (_, name: string, op?: string, arg?: string) => vars[name] ?? (op === '-' ? arg! : ''),
  );
/** Dify's network as our file names it, with the defaults. */
const ourNetwork = () => interpolate(ours.networks!.dify!.name!);
const networksOf = (s: Service) => (Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? { default: null }));
const mounts = (s: Service, vars: Record<string, string> = {}) =>
  (s.volumes ?? []).map((v) => {
    const [source, target, mode] = interpolate(v, vars).split(':');
    return { source: source!, target: target!, readOnly: mode === 'ro' };
  });
describe("deploy/dify-compose/docker-compose.yaml in Dify's compose project", () => {
  it("joins Dify's default network: the network Dify's db_postgres and redis (the .env's DB_HOST, REDIS_HOST) are on", () => {
    // Dify's project name is its folder's (docker/): its file sets no name, its .env no COMPOSE_PROJECT_NAME.
    expect(dify.name).toBeUndefined();
    expect(difyEnv.COMPOSE_PROJECT_NAME).toBeUndefined();
    expect(ours.networks!.dify).toMatchObject({ external: true });
    expect(ourNetwork()).toBe('docker_default');
    // The hosts Dify's .env names are services of Dify's file, on its default network.
    const hosts = composeHostsOf({ get: (n) => difyEnv[n], label: (n) => n, where: () => '', files: [] });
    expect(hosts.map((h) => h.host).sort()).toEqual(['db_postgres', 'redis']);
    for (const { host } of hosts) {
      expect(Object.keys(dify.services), host).toContain(host);
      expect(networksOf(dify.services[host]!), host).toContain('default');
    }
    for (const [name, service] of Object.entries(ours.services)) expect(networksOf(service), name).toEqual(['dify']);
  });

  it("mounts Dify's .env, compose file, envs/ and storage where --dify-env finds them, and writes keys as Dify's uid", async () => {
    // Dify's api and worker mount ./volumes/app/storage at /app/api/storage; init_permissions gives it to 1001:1001.
    for (const name of ['api', 'worker']) expect(dify.services[name]!.volumes).toContain('./volumes/app/storage:/app/api/storage');
    const chown = /chown -R (\d+:\d+) \/app\/api\/storage/.exec(String(dify.services.init_permissions!.command))?.[1];
    expect(chown).toBe('1001:1001');

    // Lay the files out as the worker's container sees them, then let --dify-env resolve the storage.
    const root = await mkdtemp(join(tmpdir(), 'dify-provision-compose-'));
    try {
      const worker = ours.services.worker!;
      expect(worker.user).toBe(chown);
      const vars = { DIFY_DOCKER: '/srv/dify/docker' };
      const seen = mounts(worker, vars);
      const bySource = (tail: string) => seen.find((m) => m.source === `/srv/dify/docker/${tail}`);
      expect(bySource('.env')).toMatchObject({ readOnly: true });
      expect(bySource('docker-compose.yaml')).toMatchObject({ readOnly: true });
      expect(bySource('envs')).toMatchObject({ readOnly: true });
      const storage = bySource('volumes/app/storage')!;
      expect(storage).toMatchObject({ readOnly: false });
      await mkdir(join(root, storage.target), { recursive: true });
      for (const [tail, from] of [
        ['.env', '.env.example'],
        ['docker-compose.yaml', 'docker-compose.yaml'],
      ])
        await copyFile(join(DIFY, from!), join(root, bySource(tail!)!.target));
      const envFile = worker.environment!.DIFY_ENV_FILE!;
      expect(envFile).toBe(bySource('.env')!.target);
      expect(worker.command).toEqual(expect.arrayContaining(['worker']));
      const resolved = storageFromDify(difySettings({ DIFY_ENV_FILE: join(root, envFile) }), undefined);
      expect(resolved?.settings).toEqual({ kind: 'local', root: join(root, storage.target) });
      // Every service reads the same .env, mounted the same way.
      for (const [name, service] of Object.entries(ours.services)) {
        expect(service.environment?.DIFY_ENV_FILE, name).toBe(envFile);
        expect(
          mounts(service, vars).find((m) => m.target === envFile),
          name,
        ).toEqual(bySource('.env'));
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('publishes nothing but our dashboard on loopback; the dashboard runs as the image user (non-root), without the storage', async () => {
    for (const [name, service] of Object.entries(ours.services))
      for (const p of service.ports ?? []) expect(`${name}: ${interpolate(p)}`).toBe('dashboard: 127.0.0.1:3000:3000');
    const dashboard = ours.services.dashboard!;
    expect(dashboard.user).toBeUndefined();
    expect(dashboard.command).toEqual(['dashboard', '--host', '0.0.0.0', '--port', '3000', '--token-file', '/tmp/dashboard-token']);
    expect(mounts(dashboard).some((m) => m.target.includes('storage'))).toBe(false);
    const users = [...(await readFile(projectFile('Dockerfile'), 'utf8')).matchAll(/^USER (\S+)/gm)].map((m) => m[1]);
    expect(users.at(-1)).toBe('node');
    // Nothing runs as root here.
    for (const [name, service] of Object.entries(ours.services)) expect(service.user ?? 'node', name).not.toMatch(/^(root|0)(:|$)/);
  });

  it("the README's steps (and docs/deploying.md's recipe in full) use this file, its services, its mounts and Dify's network", async () => {
    const heading = 'A docker-compose Dify: join its network, publish nothing';
    const text = readmeSection(`### ${heading}`);
    const recipe = await docsSection('deploying.md', `## ${heading}`);
    expect(text).toContain('(deploy/dify-compose/docker-compose.yaml)');
    expect(recipe).toContain('(../deploy/dify-compose/docker-compose.yaml)');
    const [steps] = shellBlocks(text);
    const [oneLiner] = shellBlocks(recipe);
    expect(steps).toMatch(/^cd deploy\/dify-compose$/m);
    expect(dirname(OURS)).toBe(projectFile('deploy', 'dify-compose'));
    expect(steps).toMatch(/^export DIFY_DOCKER=/m);
    const commands = [...(await readFile(projectFile('src', 'cli', 'main.ts'), 'utf8')).matchAll(/\.command\('([\w-]+)'\)/g)].map(
      (m) => m[1],
    );
    const cli = ours.services.cli!;
    for (const m of steps!.matchAll(/docker compose (run|logs|up|exec)\b([^#\n]*)/g)) {
      const words = m[2]!.trim().split(/\s+/);
      if (m[1] === 'logs' || m[1] === 'exec') expect(Object.keys(ours.services)).toContain(words[0]);
      if (m[1] !== 'run') continue;
      const service = words.find((w) => !w.startsWith('-'))!;
      expect(service).toBe('cli');
      expect(commands).toContain(words[words.indexOf(service) + 1]);
    }
    // The input file is copied into ./files, which cli mounts at /files.
    const files = mounts(cli).find((m) => m.source === './files')!;
    expect(files).toMatchObject({ target: '/files', readOnly: true });
    expect(steps).toContain('cp /path/to/customers.csv files/');
    expect(steps).toContain(`cli ingest ${files.target}/customers.csv`);
    // Files a command writes and the operator keeps (secrets are revealed once) leave the container through ./out.
    const out = mounts(cli).find((m) => m.source === './out')!;
    expect(out).toMatchObject({ target: '/out', readOnly: false });
    const secrets =
      /`mkdir -p out && docker compose run --rm --user "\$\(id -u\):\$\(id -g\)" cli secrets <batch-id> --key \/files\/(\S+) --out (\S+)`/.exec(
        recipe,
      );
    expect(secrets?.[2]).toMatch(new RegExp(`^${out.target}/`));
    expect(cli.profiles).toEqual(['cli']);
    expect(cli.user).toBe(ours.services.worker!.user);

    // The docker run one-liner: the worker's network, user, mounts and command.
    const worker = ours.services.worker!;
    const args = oneLiner!.trim().split(/\s+/);
    expect(args.slice(0, 2)).toEqual(['docker', 'run']);
    expect(args[args.indexOf('--network') + 1]).toBe(ourNetwork());
    expect(args[args.indexOf('--user') + 1]).toBe(worker.user);
    const volumes = args.flatMap((a, i) =>
      args[i - 1] === '-v' ? [a.replace(/^"|"$/g, '').replace('$DIFY_DOCKER', '${DIFY_DOCKER}')] : [],
    );
    expect(volumes.sort()).toEqual(worker.volumes!.map((v) => v.replace(/\$\{DIFY_DOCKER:\?[^}]*\}/, '${DIFY_DOCKER}')).sort());
    expect(args.slice(-4)).toEqual([worker.image, 'worker', '--dify-env', worker.environment!.DIFY_ENV_FILE]);
    expect(text).toContain(`\`${ourNetwork()}\``);
    expect(recipe).toContain(`\`${ourNetwork()}\``);
  });

  it("is a valid Compose file: the Compose Specification schema accepts it (and Dify's own file)", async () => {
    const schema = JSON.parse(await readFile(projectFile('test', 'fixtures', 'compose-spec', 'compose-spec.json'), 'utf8')) as object;
    const validate = new Ajv({ allErrors: true, strict: false, validateFormats: false, validateSchema: false }).compile(schema);
    for (const [name, file] of [
      ['ours', ours],
      ["Dify's", dify],
    ] as const)
      expect(validate(file) ? [] : validate.errors, name).toEqual([]);
  });

  const compose = spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!compose)('docker compose config accepts it (needs only the docker compose CLI, no engine)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'dify-provision-compose-config-'));
    try {
      const r = spawnSync('docker', ['compose', '-f', OURS, '--profile', 'cli', 'config', '--format', 'json'], {
        env: { ...process.env, DIFY_DOCKER: posix.join(root, 'docker') },
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      const config = JSON.parse(r.stdout) as ComposeFile;
      expect(Object.keys(config.services).sort()).toEqual(['cli', 'dashboard', 'worker']);
      expect(config.networks!.dify).toMatchObject({ name: 'docker_default', external: true });
      const unset = spawnSync('docker', ['compose', '-f', OURS, 'config'], { env: { ...process.env, DIFY_DOCKER: '' }, encoding: 'utf8' });
      expect(unset.status).not.toBe(0);
      expect(unset.stderr).toContain("set DIFY_DOCKER to Dify's docker folder");
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
