import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'sqlite',
  schema: './cloud/registry/schema.ts',
  out: './cloud/registry/migrations',
});
