/** Shadow mode's protocol (issue 13 item 4): the signed `manifest.shadow`, `telemetry.shadow` and the `shadow_disagreement` reason, both ways. */
import { describe, expect, it } from 'vitest';
import { generateSigningKey, signManifest } from '../../../shared/manifest/index.js';
import {
  CLOUD_FEATURES,
  DEVICE_CAPABILITIES,
  EXAMPLE_REASONS,
  MANIFEST_REQUIREMENTS,
  NEWER_EXAMPLE_REASONS,
  cloudInfo,
  cloudAccepts,
  desiredFor,
  deviceCompat,
  exampleReasonForCloud,
  manifestSchema,
  shadowTelemetrySchema,
  telemetrySchema,
} from '../../../shared/protocol/index.js';
import { EDGE_CAPABILITIES } from '../../../edge/status/status.js';
import { createSelector } from '../../../edge/selection/index.js';
import { makeManifest, modelBytes } from '../updates/fixtures.js';

const key = generateSigningKey();
const until = '2030-01-01T01:00:00.000Z';
const base = makeManifest(modelBytes(2000));
const shadowSigned = signManifest(manifestSchema.parse({ ...base, shadow: { until } }), key);

describe('manifest.shadow', () => {
  it('is never sent to a device without the manifest.shadow capability: the rollout says incompatible', () => {
    expect(MANIFEST_REQUIREMENTS.find((r) => r.path === 'shadow')?.capability).toBe(DEVICE_CAPABILITIES.shadow);
    expect(desiredFor(shadowSigned, deviceCompat(null))).toEqual({ compatible: false, missing: [DEVICE_CAPABILITIES.shadow] });
    expect(desiredFor(shadowSigned, deviceCompat({ protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.assignment] }))).toEqual({ compatible: false, missing: [DEVICE_CAPABILITIES.shadow] });
    expect(desiredFor(shadowSigned, deviceCompat({ protocolVersion: 2, capabilities: [DEVICE_CAPABILITIES.shadow] }))).toMatchObject({ compatible: true });
    // The same release without the field goes to everyone, as before.
    expect(desiredFor(signManifest(base, key), deviceCompat(null))).toMatchObject({ compatible: true });
    // This daemon declares it (it has the code).
    expect(EDGE_CAPABILITIES).toContain(DEVICE_CAPABILITIES.shadow);
  });

  it('refuses malformed shadow fields', () => {
    for (const shadow of [{}, { until: 'tomorrow' }, { until, mode: 'shadow' }, { until: 12 }, null]) {
      expect(manifestSchema.safeParse({ ...base, shadow }).success, JSON.stringify(shadow)).toBe(false);
    }
  });
});

const figures = { model: 'm', release: 7, sha256: 'a'.repeat(64), until, state: 'running', requests: 10, agreements: 9, skipped: 0, latencyMs: { p50: 0.5, p95: null } };

describe('telemetry.shadow', () => {
  it('parses the figures, refuses malformed ones', () => {
    expect(shadowTelemetrySchema.parse(figures)).toEqual(figures);
    for (const bad of [
      { ...figures, agreements: 11 },
      { ...figures, requests: -1 },
      { ...figures, state: 'paused' },
      { ...figures, reason: 'Not Snake' },
      { ...figures, sha256: 'xyz' },
      { ...figures, extra: 1 },
      { ...figures, latencyMs: { p50: 1 } },
    ]) {
      expect(shadowTelemetrySchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    }
  });

  it('is a feature this cloud accepts; a device checks it before sending (no info = older cloud = no)', () => {
    expect(cloudAccepts(cloudInfo(new Date()), CLOUD_FEATURES.telemetryShadow)).toBe(true);
    expect(cloudAccepts(undefined, CLOUD_FEATURES.telemetryShadow)).toBe(false);
    const t = { v: 1, deviceId: 'pi-1', at: until, model: 'm', release: 1, uptimeSeconds: 1, requests: 1, errors: 0, latencyMs: { p50: null, p95: null }, rssBytes: 1, outbox: { depth: 0, bytes: 0, dropped: 0, evicted: 0, selected: 0, published: 0 }, health: 'ok' };
    expect(telemetrySchema.safeParse({ ...t, shadow: figures }).success).toBe(true);
    expect(telemetrySchema.safeParse({ ...t, shadow: { ...figures, agreements: 99 } }).success).toBe(false);
  });
});

describe('shadow_disagreement examples', () => {
  it('goes as is to a cloud that accepts it, as low_margin to an older one', () => {
    expect(EXAMPLE_REASONS).toContain('shadow_disagreement');
    expect(NEWER_EXAMPLE_REASONS.shadow_disagreement).toEqual({ feature: CLOUD_FEATURES.shadowExamples, older: 'low_margin' });
    const accepts = cloudInfo(new Date()).accepts;
    expect(exampleReasonForCloud('shadow_disagreement', (f) => accepts.includes(f))).toBe('shadow_disagreement');
    expect(exampleReasonForCloud('shadow_disagreement', () => false)).toBe('low_margin');
    expect(exampleReasonForCloud('audit', () => false)).toBe('audit');
  });

  it('stays within the selector caps and its de-duplication', () => {
    let t = 0;
    const s = createSelector({ caps: { perMinute: 2, perHour: null } }, { now: () => t });
    const x = (v: number) => Float32Array.of(v, v, v);
    expect([s.admit(x(1), 'shadow_disagreement'), s.admit(x(1), 'shadow_disagreement'), s.admit(x(2), 'shadow_disagreement'), s.admit(x(3), 'shadow_disagreement')]).toEqual([true, false, true, false]);
    t = 60_001;
    expect(s.admit(x(3), 'shadow_disagreement')).toBe(true);
    expect(s.counters()).toMatchObject({ selected: { shadow_disagreement: 3 }, duplicate: { shadow_disagreement: 1 }, capped: { shadow_disagreement: 1 } });
  });
});
