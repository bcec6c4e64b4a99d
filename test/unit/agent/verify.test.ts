import { describe, expect, it } from 'vitest';
import { generateSigningKey, signAgentManifest, toTrustedKey } from '../../../shared/manifest/index.js';
import { checkAgentManifest, formatMarker, MarkerError, parseMarker, type AgentCheckContext, type Marker } from '../../../edge/agent/index.js';
import { makeAgentRelease, thisPlatform } from '../../fixtures/agent-release.js';

const key = generateSigningKey();
const other = generateSigningKey();
const files = [{ path: 'bin/apprentice-edge.js', data: 'x', mode: 0o755 }];
const ctx = (over: Partial<AgentCheckContext> = {}): AgentCheckContext => ({ trustedKeys: [toTrustedKey(key)], now: new Date(), floor: 3, platform: thisPlatform(), running: '1.0.0', cloudProtocol: 2, ...over });

describe('checkAgentManifest', () => {
  const rel = makeAgentRelease(key, { version: '2.0.0', agentSeq: 4, files, upgradeFrom: ['1.0.0'], minProtocolVersion: 2 });

  it('accepts a signed release for this platform above the floor', () => {
    const v = checkAgentManifest(JSON.stringify(rel.signed), ctx());
    expect(v.ok).toBe(true);
  });

  it('refuses each failed condition with its reason', () => {
    const cases: Array<[unknown, Partial<AgentCheckContext>, string]> = [
      ['{not json', {}, 'malformed_manifest'],
      [JSON.stringify({ manifest: rel.manifest }), {}, 'malformed_manifest'],
      [JSON.stringify(rel.signed), { trustedKeys: [toTrustedKey(other)] }, 'unknown_key'],
      [JSON.stringify({ ...rel.signed, manifest: { ...rel.manifest, version: '6.6.6' } }), {}, 'bad_signature'],
      [JSON.stringify(rel.signed), { floor: 4 }, 'stale_release'],
      [JSON.stringify(rel.signed), { now: new Date(Date.now() + 2 * 86_400_000) }, 'expired'],
      [JSON.stringify(rel.signed), { platform: thisPlatform() === 'linux-arm64' ? 'linux-x64' : 'linux-arm64' }, 'wrong_platform'],
      [JSON.stringify(rel.signed), { running: '0.9.0' }, 'not_upgradable'],
      [JSON.stringify(rel.signed), { cloudProtocol: 1 }, 'protocol_too_old'],
    ];
    for (const [payload, over, reason] of cases) {
      const v = checkAgentManifest(payload, ctx(over));
      expect(v.ok, reason).toBe(false);
      if (!v.ok) expect(v.reason).toBe(reason);
    }
  });

  it('a model manifest signature never passes as an agent manifest', () => {
    const wrongKind = { ...rel.manifest, kind: 'model' };
    const signedAsIs = { manifest: wrongKind, signature: signAgentManifest(rel.manifest, key).signature };
    const v = checkAgentManifest(signedAsIs, ctx());
    expect(v.ok).toBe(false);
  });
});

describe('marker', () => {
  const m: Marker = { state: 'pending', pending: '2.0.0', previous: '/opt/apprentice', previousVersion: '1.0.0', agentSeq: 4, attempts: 1, maxAttempts: 2, deadline: 1_900_000_000, reported: false };

  it('round-trips', () => {
    expect(parseMarker(formatMarker(m))).toEqual(m);
    expect(parseMarker(formatMarker({ ...m, state: 'rolled_back', reason: 'health_timeout', reported: true }))).toMatchObject({ reason: 'health_timeout', reported: true });
  });

  it('refuses malformed or newer markers with a reason', () => {
    const text = formatMarker(m);
    for (const [bad, re] of [
      [text.replace('v=1', 'v=2'), /format v=2/],
      [text.replace('state=pending', 'state=weird'), /unknown state/],
      [text.replace('attempts=1', 'attempts=-1'), /attempts/],
      [text.replace('pending=2.0.0', 'pending=2.0.0 ; rm -rf /'), /pending/],
      [`${text}garbage\n`, /without key=value/],
      [text.replace(/deadline=.*\n/, ''), /deadline/],
    ] as const) {
      expect(() => parseMarker(bad), String(re)).toThrow(MarkerError);
      expect(() => parseMarker(bad)).toThrow(re);
    }
    expect(() => formatMarker({ ...m, previous: 'a b' })).toThrow(MarkerError);
  });
});
