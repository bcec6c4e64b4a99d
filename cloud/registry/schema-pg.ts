// Placeholder so drizzle.pg.config.ts resolves in this branch: the PostgreSQL registry dialect (h15a) replaces it.
export {};
