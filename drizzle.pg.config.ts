import { defineConfig } from 'drizzle-kit';

/** The registry's PostgreSQL dialect (issue 15); drizzle.config.ts is the SQLite one. */
export default defineConfig({
  dialect: 'postgresql',
  schema: ['./cloud/registry/schema-pg.ts', './cloud/cluster/schema-pg.ts'],
  out: './cloud/registry/migrations-pg',
});
