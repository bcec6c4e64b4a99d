import { describe, expect, it } from 'vitest';
import { ConfigError, EDGE_ENV, parseEdgeConfig } from '../../../edge/config/index.js';
import { generateSigningKey, toTrustedKey } from '../../../shared/manifest/index.js';

const bundle = (extra: Record<string, unknown> = {}) => ({
  version: 1,
  deviceId: 'pi-kitchen-01',
  mqtt: { url: 'mqtts://broker.example.com:8883', username: 'pi-kitchen-01', password: 's3cret' },
  trustedKeys: [toTrustedKey(generateSigningKey())],
  ...extra,
});

function issues(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('edge config: mqtt.maxPacketBytes and outbox.write (issue 9)', () => {
  it('defaults to a 1 MiB packet and a 100 ms / 64-row writer', () => {
    const c = parseEdgeConfig(bundle());
    expect(c.mqtt.maxPacketBytes).toBe(1024 * 1024);
    expect(c.outbox.write).toEqual({ flushMs: 100, batchRows: 64, maxPending: 512 });
  });

  it('refuses out-of-range values with path: message lines', () => {
    const b = bundle();
    expect(issues(() => parseEdgeConfig({ ...b, mqtt: { ...b.mqtt, maxPacketBytes: 100 } }))).toEqual([expect.stringMatching(/^mqtt\.maxPacketBytes: .*16384/)]);
    expect(issues(() => parseEdgeConfig(bundle({ outbox: { write: { batchRows: 100, maxPending: 10 } } })))).toEqual(['outbox.write.maxPending: maxPending must be >= batchRows']);
    expect(issues(() => parseEdgeConfig(bundle({ outbox: { write: { flushMs: 'soon' } } })))).toEqual([expect.stringMatching(/^outbox\.write\.flushMs: /)]);
  });

  it('takes both from the environment like every other field', () => {
    const names = EDGE_ENV.map((e) => e.name);
    expect(names).toContain('APPRENTICE_MQTT_MAX_PACKET_BYTES');
    expect(names).toContain('APPRENTICE_OUTBOX_WRITE_FLUSH_MS');
  });
});
