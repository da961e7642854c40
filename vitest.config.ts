import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/chaos/**', 'node_modules/**'],
    globalSetup: ['test/helpers/global-setup.ts'],
    // A backstop only: waits on work fail on a stall (no row moved for a while, naming what is
    // stuck: helpers/batch.ts waitUntilDone, helpers/cli-world.ts until), never on wall-clock time
    // while the work still moves, however busy the machine.
    testTimeout: 600_000,
    hookTimeout: 120_000,
    // Two cores: key generation saturates them; more files at once only adds contention.
    maxWorkers: 2,
  },
});
