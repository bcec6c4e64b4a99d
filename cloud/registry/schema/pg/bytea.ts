import { customType } from 'drizzle-orm/pg-core';

/**
 * `bytea` ⇄ Buffer, the twin of SQLite's `blob({ mode: 'buffer' })`. drizzle-orm 0.45's pg-core has no bytea
 * builder; node-postgres already reads bytea as a Buffer and writes a Buffer as bytea, so no mapping is needed.
 */
export const bytea = customType<{ data: Buffer; driverData: Buffer }>({
  dataType() {
    return 'bytea';
  },
});
