// The set-up most integration tests share: a fresh TestEnv (its own database, queue prefix and
// storage folder), and a Provisioner on it where the test needs one, for each test of the file
// or describe block that calls it; both are closed after the test.
import { afterEach, beforeEach } from 'vitest';
import { createProvisioner, type Provisioner } from '../../src/provisioner.js';
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
