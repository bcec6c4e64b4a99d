import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadCloudConfig } from '../../../cloud/config/load.js';
import { UsageError } from '../../../shared/cli/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'apprentice-cloud-config-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('cloud config', () => {
  it('runs on defaults alone: embedded broker, API on 127.0.0.1:8787', () => {
    const c = loadCloudConfig({ env: {} });
    expect(c).toMatchObject({ version: 1, dataDir: '.apprentice/cloud', api: { bind: '127.0.0.1:8787' }, mqtt: { embedded: { bind: '127.0.0.1:1883' }, sharedSubscriptions: false, protocolVersion: 4 } });
    expect(c.mqtt.url).toBeUndefined();
  });

  it('layers file < environment < flags', () => {
    const f = file('c.json', JSON.stringify({ dataDir: '/from/file', api: { bind: '0.0.0.0:9000' }, mqtt: { url: 'mqtt://file:1883' } }));
    const c = loadCloudConfig({ file: f, env: { APPRENTICE_API_BIND: '127.0.0.1:9100', APPRENTICE_MQTT_SHARED_SUBSCRIPTIONS: 'true' }, overrides: { 'mqtt.url': 'mqtts://flag:8883', dataDir: undefined } });
    expect(c.dataDir).toBe('/from/file');
    expect(c.api.bind).toBe('127.0.0.1:9100');
    expect(c.mqtt.url).toBe('mqtts://flag:8883');
    expect(c.mqtt.sharedSubscriptions).toBe(true);
  });

  it('reports every problem as a `path: message` line, as a UsageError (exit 2)', () => {
    const f = file('bad.json', JSON.stringify({ api: { bind: 'nope', adminToken: 'short' }, mqtt: { url: 'http://x' }, surprise: 1 }));
    let err: unknown;
    try {
      loadCloudConfig({ file: f, env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^api\.bind: expected host:port$/m);
    expect(msg).toMatch(/^api\.adminToken: must be at least 16 characters$/m);
    expect(msg).toMatch(/^mqtt\.url: expected mqtt:\/\//m);
    expect(msg).toMatch(/surprise/);
  });

  it.each([
    ['missing.json', undefined, /cannot read config/],
    ['notjson.json', '{ nope', /not valid JSON/],
    ['array.json', '[1,2]', /must be a JSON object/],
  ])('rejects %s with a clear error', (name, text, re) => {
    const p = text === undefined ? join(dir, name) : file(name, text);
    expect(() => loadCloudConfig({ file: p, env: {} })).toThrow(re);
  });

  it('console: event retention 90 days and 5 failed logins a minute by default; both settable and range-checked', () => {
    expect(loadCloudConfig({ env: {} }).console).toEqual({ eventRetentionDays: 90, loginFailuresPerMinute: 5 });
    const f = file('console.json', JSON.stringify({ console: { eventRetentionDays: 14, loginFailuresPerMinute: 3 } }));
    expect(loadCloudConfig({ file: f, env: {} }).console).toEqual({ eventRetentionDays: 14, loginFailuresPerMinute: 3 });
    const bad = file('console-bad.json', JSON.stringify({ console: { eventRetentionDays: 0 } }));
    expect(() => loadCloudConfig({ file: bad, env: {} })).toThrow(/^console\.eventRetentionDays: /m);
  });
});
