// The dashboard as a user starts it (the built CLI, a process of its own) and the headless
// Chromium the browser tests drive (playwright-core, Debian's chromium or CHROMIUM_PATH); and the
// dashboard built in the test's own process, for tests over real HTTP.
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { chromium, type Browser } from 'playwright-core';
import { buildDashboard, type DashboardDeps } from '../../src/dashboard/server.js';
import { freePort } from '../../src/services/local-services.js';
import { envQueue } from './batch.js';
import { startCli, type Background } from './cli.js';
import type { TestEnv } from './test-env.js';

/** Starts `dify-provision dashboard` on a free port; resolves once it prints its address (or ends). */
export async function startDashboard(
  env: NodeJS.ProcessEnv,
  args: string[] = [],
): Promise<{ dash: Background; base: string; port: number }> {
  const port = await freePort();
  const dash = startCli(['dashboard', '--port', String(port), ...args], env);
  let ended = false;
  void dash.exited.then(() => (ended = true));
  for (let i = 0; i < 1200 && !ended && !dash.output().includes('dashboard: '); i++) await new Promise((r) => setTimeout(r, 100));
  return { dash, base: `http://127.0.0.1:${port}`, port };
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * The dashboard built in this process on a test env's services (its uploads in a fresh folder of
 * the env), listening on a free loopback port; `close()` stops it and its queue.
 */
export async function listeningDashboard(
  env: TestEnv,
  deps: Omit<DashboardDeps, 'db' | 'queue' | 'redis' | 'tmpDir'>,
): Promise<{ app: FastifyInstance; queue: Queue; uploads: string; port: number; base: string; close(): Promise<void> }> {
  const uploads = join(env.dir, 'uploads');
  await mkdir(uploads);
  const queue = await envQueue(env);
  const app = await buildDashboard({ db: env.db, queue, redis: env.redis, tmpDir: uploads, ...deps });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  return {
    app,
    queue,
    uploads,
    port,
    base: `http://127.0.0.1:${port}`,
    async close() {
      await app.close();
      await queue.close();
    },
  };
}
