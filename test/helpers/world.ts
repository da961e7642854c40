// The set-up most integration tests share: a fresh TestEnv (its own database, queue prefix and
// storage folder), and a Provisioner on it where the test needs one, for each test of the file
// or describe block that calls it; both are closed after the test. Files whose tests open their
// own (module variables) close them with closeEachTest.
import type { Redis } from 'ioredis';
import type { PoolClient } from 'pg';
import { afterEach, beforeEach } from 'vitest';
import { createProvisioner, type Provisioner } from '../../src/provisioner.js';
import type { TestSmtp } from './smtp-server.js';
import { createTestEnv, type TestEnv } from './test-env.js';

type EnvOptions = Parameters<typeof createTestEnv>[0];

/** `set` receives each test's env before the test runs: `freshEnvEachTest((e) => (env = e))`. */
export function freshEnvEachTest(set: (env: TestEnv) => void, opts?: EnvOptions): void {
  let env: TestEnv | undefined;
  beforeEach(async () => {
    env = await createTestEnv(opts);
    set(env);
  });
  afterEach(async () => {
    await env?.cleanup();
    env = undefined;
  });
}

/**
 * The same with a Provisioner: `const world = freshProvisionerEachTest((w) => ({ env, provisioner } = w))`.
 * `world.reopen(opts)` replaces the test's env and provisioner with new ones (say, on a Redis
 * database of its own); they are closed after the test like the first.
 */
export function freshProvisionerEachTest(
  set: (w: { env: TestEnv; provisioner: Provisioner }) => void,
  opts?: EnvOptions,
): { reopen(opts?: EnvOptions): Promise<void> } {
  let w: { env: TestEnv; provisioner: Provisioner } | undefined;
  const close = async () => {
    await w?.provisioner.close();
    await w?.env.cleanup();
    w = undefined;
  };
  const open = async (o?: EnvOptions) => {
    const env = await createTestEnv(o);
    w = { env, provisioner: await createProvisioner(env.config) };
    set(w);
  };
  beforeEach(() => open(opts));
  afterEach(close);
  return {
    async reopen(o) {
      await close();
      await open(o);
    },
  };
}

/** What a test opened itself and closeEachTest closes. */
export interface Opened {
  /** A pool client holding a transaction open: rolled back and released. */
  held?: PoolClient | undefined;
  provisioner?: Provisioner | undefined;
  /** A client of Dify's Redis. */
  dify?: Redis | undefined;
  smtp?: TestSmtp | undefined;
  env?: TestEnv | undefined;
}

/**
 * For a file whose tests open their env, provisioner, Dify's Redis client or SMTP server into
 * module variables: after each test, what `opened()` returns is closed (the held transaction, the
 * provisioner, Dify's Redis, the SMTP server, then the env) and `clear` empties the variables:
 * `closeEachTest(() => ({ provisioner, env }), (none) => ({ provisioner, env } = none))`.
 */
export function closeEachTest(opened: () => Opened, clear: (none: Opened) => void): void {
  afterEach(async () => {
    const { held, provisioner, dify, smtp, env } = opened();
    clear({});
    await held?.query('ROLLBACK').catch(() => undefined);
    held?.release();
    await provisioner?.close();
    dify?.disconnect();
    await smtp?.stop();
    await env?.cleanup();
  });
}
