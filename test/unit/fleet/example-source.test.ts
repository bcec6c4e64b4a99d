import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { parseExampleBatch } from '../../../cloud/fleet/example-batch.js';
import { PROTOCOL_VERSION } from '../../../shared/protocol/index.js';

const png8 = () => sharp(Buffer.alloc(64, 200), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer();
const example = (source?: { format: string; data: string }) => ({
  id: randomUUID(), input: Buffer.from(new Float32Array(4).buffer).toString('base64'), output: [0.5, 0.5], model: 'cam', release: 1, at: '2030-01-01T00:00:00.000Z', reason: 'low_margin', ...(source ? { source } : {}),
});
const batch = (examples: unknown[]) => Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, deviceId: 'dev-1', batchId: randomUUID(), examples }));

describe('examples with a source image (issue 11)', () => {
  it('stores a source image as bytes with its format, and a row without one as nulls', async () => {
    const png = await png8();
    const p = parseExampleBatch('dev-1', batch([example({ format: 'png', data: png.toString('base64') }), example()]));
    if (!p.ok) throw new Error(p.detail);
    expect(p.rows).toHaveLength(2);
    expect(Buffer.compare(p.rows[0]![9]!, png)).toBe(0);
    expect(p.rows[0]![10]).toBe('png');
    expect([p.rows[1]![9], p.rows[1]![10]]).toEqual([null, null]);
    expect(p.sourcesDropped).toBe(0);
  });

  it('keeps the example but drops a source whose bytes are not the format it claims, and counts it', async () => {
    const png = await png8();
    const p = parseExampleBatch('dev-1', batch([example({ format: 'jpeg', data: png.toString('base64') }), example({ format: 'png', data: Buffer.from('garbage').toString('base64') })]));
    if (!p.ok) throw new Error(p.detail);
    expect(p.rows.map((r) => [r[9], r[10]])).toEqual([[null, null], [null, null]]);
    expect(p.sourcesDropped).toBe(2);
  });

  it('refuses an example whose source is not a PNG/JPEG declaration or is over the protocol bound', () => {
    const p = parseExampleBatch('dev-1', batch([example({ format: 'gif', data: 'R0lG' }), example({ format: 'png', data: 'A'.repeat(400_000) })]));
    if (!p.ok) throw new Error(p.detail);
    expect(p.rows).toHaveLength(0);
    expect(p.refused.map((r) => r.reason)).toEqual(['malformed', 'oversized']);
  });
});
