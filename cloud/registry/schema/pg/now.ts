import { sql } from 'drizzle-orm';

/**
 * Column default: the current time as ISO-8601 text in UTC with milliseconds, character for character what
 * the SQLite default (`strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`) and `new Date().toISOString()` give, so times
 * compare and sort as text the same on both dialects.
 */
export const now = sql`to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
