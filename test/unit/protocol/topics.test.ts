import { describe, expect, it } from 'vitest';
import { assertPublishable, parseTopic, TopicError, topics, TOPIC_PREFIX, DEVICE_TOPIC_KINDS } from '../../../shared/protocol/index.js';

const sha = 'ab'.repeat(32);

describe('topic helpers', () => {
  it('builds every device topic under the prefix', () => {
    expect(topics.desired('pi-01')).toBe(`${TOPIC_PREFIX}/devices/pi-01/desired`);
    expect(topics.status('pi-01')).toBe('apprentice/v1/devices/pi-01/status');
    expect(topics.telemetry('a')).toBe('apprentice/v1/devices/a/telemetry');
    expect(topics.events('a.b_c-d')).toBe('apprentice/v1/devices/a.b_c-d/events');
    expect(topics.examples('A1')).toBe('apprentice/v1/devices/A1/examples');
    for (const kind of DEVICE_TOPIC_KINDS) expect(topics.device('x', kind)).toBe(`apprentice/v1/devices/x/${kind}`);
  });

  it.each(['', '+', '#', 'a/b', 'pi+1', 'pi#', 'a\u0000b', '-leading', '.hidden', 'x'.repeat(65), 'sp ace'])('refuses device id %j', (id) => {
    expect(() => topics.desired(id)).toThrow(TopicError);
    expect(() => topics.status(id)).toThrow(TopicError);
  });

  it('builds artifact chunk topics and the per-artifact filter', () => {
    expect(topics.artifactChunk(sha, 0)).toBe(`apprentice/v1/artifacts/${sha}/0`);
    expect(topics.artifactChunk(sha, 41)).toBe(`apprentice/v1/artifacts/${sha}/41`);
    expect(topics.artifactChunks(sha)).toBe(`apprentice/v1/artifacts/${sha}/+`);
  });

  it.each(['', 'AB'.repeat(32), 'ab'.repeat(31), 'ab'.repeat(33), `${'ab'.repeat(31)}+#`, 'zz'.repeat(32)])('refuses sha256 %j', (bad) => {
    expect(() => topics.artifactChunk(bad, 0)).toThrow(TopicError);
    expect(() => topics.artifactChunks(bad)).toThrow(TopicError);
  });

  it.each([-1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1])('refuses chunk index %s', (i) => {
    expect(() => topics.artifactChunk(sha, i)).toThrow(TopicError);
  });

  it('builds fleet filters, shared or not', () => {
    expect(topics.allDevices('events')).toBe('apprentice/v1/devices/+/events');
    expect(topics.allDevices('examples', 'cloud')).toBe('$share/cloud/apprentice/v1/devices/+/examples');
  });
});

describe('assertPublishable', () => {
  it('passes concrete topics through', () => {
    expect(assertPublishable(topics.events('pi'))).toBe('apprentice/v1/devices/pi/events');
    expect(assertPublishable(topics.artifactChunk(sha, 3))).toContain('/3');
  });
  it.each([topics.artifactChunks(sha), topics.allDevices('status'), 'a/#', '', 'a\u0000b'])('refuses %j', (t) => {
    expect(() => assertPublishable(t)).toThrow(TopicError);
  });
});

describe('parseTopic', () => {
  it('parses what the helpers build', () => {
    expect(parseTopic(topics.desired('pi-01'))).toEqual({ type: 'device', deviceId: 'pi-01', kind: 'desired' });
    expect(parseTopic(topics.artifactChunk(sha, 12))).toEqual({ type: 'artifact', sha256: sha, index: 12 });
  });
  it.each([
    'other/v1/devices/pi/status',
    'apprentice/v2/devices/pi/status',
    'apprentice/v1/devices/pi/unknown',
    'apprentice/v1/devices/+/status',
    'apprentice/v1/devices/pi/status/extra',
    `apprentice/v1/artifacts/${sha}/+`,
    `apprentice/v1/artifacts/${sha}/-1`,
    `apprentice/v1/artifacts/${sha}/1.5`,
    `apprentice/v1/artifacts/${sha}/1234567890`,
    `apprentice/v1/artifacts/${sha.toUpperCase()}/1`,
    'apprentice/v1',
  ])('ignores %j', (t) => {
    expect(parseTopic(t)).toBeUndefined();
  });
});
