import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { SourceImages } from '../../../edge/outbox/source-image.js';
import { buildExample } from '../../../edge/outbox/example.js';
import { silentLogger } from '../../../shared/log/index.js';
import { exampleSchema } from '../../../shared/protocol/index.js';

/** An 8×8 RGB test image with a gradient (so PNG cannot compress it to nothing). */
const raw = Buffer.from(Array.from({ length: 8 * 8 * 3 }, (_, i) => (i * 29) % 256));
const png8 = () => sharp(raw, { raw: { width: 8, height: 8, channels: 3 } }).png().toBuffer();
const jpeg8 = () => sharp(raw, { raw: { width: 8, height: 8, channels: 3 } }).withMetadata({ orientation: 6 }).jpeg({ quality: 95 }).toBuffer();
const sources = (maxBytes: number) => new SourceImages({ maxBytes, maxPixels: 1_000_000, log: silentLogger });

describe('source images of hard examples (issue 11)', () => {
  it('re-encodes a PNG as a PNG with the same pixels, and a JPEG as a JPEG with its EXIF orientation applied', async () => {
    const s = sources(16 * 1024);
    const p = (await s.encode(await png8()))!;
    expect(p.format).toBe('png');
    const decoded = await sharp(Buffer.from(p.data, 'base64')).raw().toBuffer({ resolveWithObject: true });
    expect(decoded.info).toMatchObject({ width: 8, height: 8, channels: 3 });
    expect(Buffer.compare(decoded.data, raw)).toBe(0);

    const j = (await s.encode(await jpeg8()))!;
    expect(j.format).toBe('jpeg');
    const meta = await sharp(Buffer.from(j.data, 'base64')).metadata();
    expect(meta).toMatchObject({ format: 'jpeg', width: 8, height: 8 });
    expect(meta.orientation ?? 1).toBe(1); // applied, not carried
    expect(s.stats()).toEqual({ attached: 2, tooLarge: 0, failed: 0 });
  });

  it('omits and counts an image over the byte bound, a malformed one and a truncated one; 0 disables', async () => {
    const s = sources(40);
    expect(await s.encode(await png8())).toBeUndefined();
    expect(await s.encode(Buffer.from('definitely not an image'))).toBeUndefined();
    const png = await png8();
    expect(await s.encode(png.subarray(0, png.length - 20))).toBeUndefined();
    expect(s.stats()).toEqual({ attached: 0, tooLarge: 1, failed: 2 });
    const off = sources(0);
    expect(off.enabled).toBe(false);
    expect(await off.encode(png)).toBeUndefined();
    expect(off.stats()).toEqual({ attached: 0, tooLarge: 0, failed: 0 });
  });

  it('refuses an image over the pixel bound before decoding it', async () => {
    const s = new SourceImages({ maxBytes: 16 * 1024, maxPixels: 63, log: silentLogger });
    expect(await s.encode(await png8())).toBeUndefined();
    expect(s.stats().failed).toBe(1);
  });

  it('an example carries the source only when given one, and the protocol checks it', async () => {
    const s = sources(16 * 1024);
    const source = (await s.encode(await png8()))!;
    const base = { input: new Float32Array(4), probs: new Float32Array([0.5, 0.5]), reason: 'low_margin' as const, model: 'cam', release: 1 };
    expect(buildExample(base)).not.toHaveProperty('source');
    const ex = buildExample({ ...base, source });
    expect(exampleSchema.parse(ex).source).toEqual(source);
    expect(exampleSchema.safeParse({ ...ex, source: { ...source, format: 'gif' } }).success).toBe(false);
    expect(exampleSchema.safeParse({ ...ex, source: { ...source, data: '' } }).success).toBe(false);
    expect(exampleSchema.safeParse({ ...ex, source: { ...source, data: 'A'.repeat(400_000) } }).success).toBe(false);
  });
});
