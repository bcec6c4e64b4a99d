import { readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256Of } from '../../../shared/manifest/index.js';
import { SlotStore } from '../../../edge/updates/slots.js';
import { UpdateError } from '../../../edge/updates/types.js';
import { modelBytes, tempDir } from './fixtures.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

const ref = (b: Buffer) => ({ sha256: sha256Of(b), bytes: b.length });

describe('SlotStore', () => {
  it('writes content-addressed slots and verifies them', async () => {
    const slots = await SlotStore.create({ dataDir: dir });
    const b = modelBytes(3000);
    const path = await slots.write(ref(b), b);
    expect(path).toBe(join(dir, 'models', `${sha256Of(b)}.onnx`));
    expect(await slots.verify(ref(b))).toBe(true);
    expect(await slots.list()).toEqual([sha256Of(b)]);
    expect((await readdir(join(dir, 'models'))).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('discards a truncated or corrupted slot on verify', async () => {
    const slots = await SlotStore.create({ dataDir: dir });
    const a = modelBytes(3000);
    const b = modelBytes(3000);
    await slots.write(ref(a), a);
    await slots.write(ref(b), b);
    await truncate(slots.pathOf(sha256Of(a)), 1000);
    await writeFile(slots.pathOf(sha256Of(b)), modelBytes(3000));
    expect(await slots.verify(ref(a))).toBe(false);
    expect(await slots.verify(ref(b))).toBe(false);
    expect(await slots.list()).toEqual([]);
    expect(await slots.verify(ref(modelBytes(10)))).toBe(false); // missing: just false
  });

  it('adopt checks length, then hash, and deletes a wrong source file', async () => {
    const slots = await SlotStore.create({ dataDir: dir });
    const b = modelBytes(3000);
    const src = join(dir, 'download.part');
    await writeFile(src, Buffer.concat([b, Buffer.from('x')]));
    await expect(slots.adopt(ref(b), src)).rejects.toMatchObject({ reason: 'length_mismatch' });
    await writeFile(src, modelBytes(3000));
    await expect(slots.adopt(ref(b), src)).rejects.toMatchObject({ reason: 'hash_mismatch' });
    await expect(slots.adopt(ref(b), src)).rejects.toMatchObject({ reason: 'download_failed' });
    await writeFile(src, b);
    expect(await slots.adopt(ref(b), src)).toBe(slots.pathOf(sha256Of(b)));
    expect(await readdir(dir)).not.toContain('download.part');
  });

  it('prunes everything but the kept slots and sweeps temp leftovers at start', async () => {
    const slots = await SlotStore.create({ dataDir: dir });
    const [a, b, c] = [modelBytes(1100), modelBytes(1200), modelBytes(1300)];
    for (const x of [a, b, c]) await slots.write(ref(x), x);
    expect(await slots.prune([sha256Of(b), null, sha256Of(c)])).toEqual([sha256Of(a)]);
    expect((await slots.list()).sort()).toEqual([sha256Of(b), sha256Of(c)].sort());
    await writeFile(join(dir, 'models', '.x.onnx.1.ab.tmp'), 'partial');
    await SlotStore.create({ dataDir: dir });
    expect((await readdir(join(dir, 'models'))).some((n) => n.endsWith('.tmp'))).toBe(false);
  });

  it('refuses a non-sha slot name', async () => {
    const slots = await SlotStore.create({ dataDir: dir });
    expect(() => slots.pathOf('../../etc/passwd')).toThrow(UpdateError);
  });
});
