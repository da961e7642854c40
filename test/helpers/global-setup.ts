// Real services for the whole test run: REDIS_URL/DATABASE_URL when set, testcontainers when a
// Docker engine answers, else redis-server and postgres from the system's packages in a temp dir.
// Also builds dist/ once, for the end-to-end tests that run the CLI as a user would.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { createDifyDatabase } from '../../src/services/dify-database.js';
import { startLocalServices } from '../../src/services/local-services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    serverUrl: string;
    templateDb: string;
  }
}

export const TEMPLATE_DB = 'dify_test_template';

async function startContainers(): Promise<{ redisUrl: string; serverUrl: string; stop: () => Promise<void> }> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const redis = await new GenericContainer('redis:7').withExposedPorts(6379).start();
  const pg = await new GenericContainer('postgres:15')
    .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: 'trust' })
    .withExposedPorts(5432)
    .withWaitStrategy(Wait.forLogMessage(/ready to accept connections/, 2))
    .start();
  return {
    redisUrl: `redis://${redis.getHost()}:${redis.getMappedPort(6379)}`,
    serverUrl: `postgres://postgres@${pg.getHost()}:${pg.getMappedPort(5432)}/postgres`,
    stop: async () => {
      await Promise.all([redis.stop(), pg.stop()]);
    },
  };
}

export default async function setup(project: TestProject) {
  execFileSync('npx', ['tsc', '-p', '.'], { stdio: 'inherit' });
  execFileSync('npx', ['tsc', '-p', 'tsconfig.web.json'], { stdio: 'inherit' }); // the dashboard's browser code
  let stop = async () => {};
  let redisUrl = process.env.REDIS_URL;
  let serverUrl = process.env.DATABASE_URL;
  if (!redisUrl || !serverUrl) {
    const docker = spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
    const started = docker
      ? await startContainers()
      : await startLocalServices({ dir: mkdtempSync(join(tmpdir(), 'dify-provision-test-')), say: (m) => console.log(m) }).then((s) => ({
          redisUrl: s.redisUrl,
          serverUrl: s.databaseUrl,
          stop: () => s.stop(),
        }));
    redisUrl ??= started.redisUrl;
    serverUrl ??= started.serverUrl;
    stop = started.stop;
  }
  await createDifyDatabase(serverUrl, TEMPLATE_DB);
  project.provide('redisUrl', redisUrl);
  project.provide('serverUrl', serverUrl);
  project.provide('templateDb', TEMPLATE_DB);
  return async () => {
    await stop();
  };
}
