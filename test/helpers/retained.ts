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

/**
 * What the broker retains on `topics` now, as a device subscribing fresh sees it: topic → payload (empty
 * topics absent). Waits `settleMs` after the SUBACK for the retained messages to arrive.
 */
export async function readRetained(url: string, topics: readonly string[], settleMs = 300): Promise<Map<string, Buffer>> {
  const c = await connectAsync(url, { clientId: `reader-${randomUUID().slice(0, 6)}`, clean: true, reconnectPeriod: 0, connectTimeout: 5000 });
  const got = new Map<string, Buffer>();
  try {
    c.on('message', (topic, payload, packet) => {
      if (packet.retain && payload.length) got.set(topic, payload);
    });
    await c.subscribeAsync([...topics], { qos: 1 });
    await new Promise((r) => setTimeout(r, settleMs));
  } finally {
    await c.endAsync();
  }
  return got;
}
