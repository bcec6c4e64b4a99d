/**
 * For suites whose broker outlives each test: clears what earlier tests retained (an empty retained
 * publish deletes a retained message), so a new device does not read an old release or status.
 */
import { randomUUID } from 'node:crypto';
import { connectAsync } from 'mqtt';

export async function clearRetained(url: string, topics: readonly string[]): Promise<void> {
  const c = await connectAsync(url, { clientId: `cleaner-${randomUUID().slice(0, 6)}`, clean: true, reconnectPeriod: 0, connectTimeout: 5000 });
  try {
    for (const t of topics) await c.publishAsync(t, Buffer.alloc(0), { qos: 1, retain: true });
  } finally {
    await c.endAsync();
  }
}
