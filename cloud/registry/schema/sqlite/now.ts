import { sql } from 'drizzle-orm';

/** Column default: the current time as ISO-8601 text in UTC with milliseconds (what `new Date().toISOString()` gives). */
export const now = sql`(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;
