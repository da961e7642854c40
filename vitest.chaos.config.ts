import { defineConfig } from 'vitest/config';

// npm run test:chaos: crashes and outages against services of its own, bounded in time.
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    globalSetup: ['test/chaos/global-setup.ts'],
    testTimeout: 1_200_000,
    hookTimeout: 120_000,
    maxWorkers: 1,
  },
});
