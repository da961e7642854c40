// For end-to-end tests of the CLI: a fresh test env per test, and at most one worker process,
// killed and cleaned up after each test.
import { afterEach, beforeEach } from 'vitest';
import type { Background } from './cli.js';
import { createTestEnv, type TestEnv } from './test-env.js';

export interface CliWorld {
  env: TestEnv;
  worker?: Background;
}

export function useCliWorld(): CliWorld {
  const world = {} as CliWorld;
  beforeEach(async () => {
    world.env = await createTestEnv();
  });
  afterEach(async () => {
    await world.worker?.stop('SIGKILL');
    delete world.worker;
    await world.env.cleanup();
  });
  return world;
}
