import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'postgresql',
  schema: ['./cloud/registry/schema-pg.ts', './cloud/cluster/schema-pg.ts'],
  out: './cloud/registry/migrations-pg',
});
