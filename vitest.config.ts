import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: training-heavy files must not fight each other for the CPU.
    fileParallelism: true,
    maxWorkers: 2,
    pool: 'forks',
  },
});
