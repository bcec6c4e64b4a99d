import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateSigningKey, signManifest } from '../../../shared/manifest/index.js';
import { STATE_FILE, UpdateStateError, UpdateStateStore } from '../../../edge/updates/state.js';
import { makeManifest, modelBytes, tempDir } from './fixtures.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

const key = generateSigningKey();
const signed = signManifest(makeManifest(modelBytes(2000), { release: 4 }), key);
const slot = { sha256: signed.manifest.artifact.sha256, signed };

describe('UpdateStateStore', () => {
  it('starts empty on a fresh data dir and persists across instances', async () => {
    const a = await UpdateStateStore.create({ dataDir: dir });
    expect(a.get()).toEqual({ highestRelease: 0, denied: [], current: null, previous: null, trial: null, keyFloors: {} });
    await a.save({ highestRelease: 4, denied: ['e'.repeat(64)], current: slot, previous: null });
    const b = await UpdateStateStore.create({ dataDir: dir });
    expect(b.get().highestRelease).toBe(4);
    expect(b.get().current?.sha256).toBe(slot.sha256);
    expect(b.get().current?.signed).toEqual(JSON.parse(JSON.stringify(signed)));
    expect(b.isDenied('e'.repeat(64))).toBe(true);
  });

  it('never lowers the release floor', async () => {
    const s = await UpdateStateStore.create({ dataDir: dir });
    await s.save({ highestRelease: 7, denied: [], current: null, previous: null });
    await expect(s.save({ highestRelease: 6, denied: [], current: null, previous: null })).rejects.toThrow(UpdateStateError);
    await expect(s.update((x) => ({ ...x, highestRelease: 0 }))).rejects.toThrow(/lower the release floor/);
    expect((await UpdateStateStore.create({ dataDir: dir })).get().highestRelease).toBe(7);
  });

  it('writes atomically: no temp files left, leftovers from a crash are swept', async () => {
    const s = await UpdateStateStore.create({ dataDir: dir });
    await Promise.all([1, 2, 3].map((n) => s.update((x) => ({ ...x, highestRelease: Math.max(x.highestRelease, n) }))));
    expect(s.get().highestRelease).toBe(3);
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    await writeFile(join(dir, `.${STATE_FILE}.123.abcd.tmp`), '{"half');
    await UpdateStateStore.create({ dataDir: dir });
    expect(await readdir(dir)).toEqual([STATE_FILE]);
  });

  it.each([
    ['truncated JSON', '{"v":1,"highestRelease":5'],
    ['empty file', ''],
    ['wrong shape', JSON.stringify({ v: 1, highestRelease: -1, denied: [], current: null, previous: null })],
    ['unknown version', JSON.stringify({ v: 2, highestRelease: 5, denied: [], current: null, previous: null })],
  ])('a corrupt state file (%s) is an error at start, not a silent reset', async (_name, text) => {
    await writeFile(join(dir, STATE_FILE), text);
    await expect(UpdateStateStore.create({ dataDir: dir })).rejects.toThrow(UpdateStateError);
    await expect(UpdateStateStore.create({ dataDir: dir })).rejects.toThrow(/refusing to reset the release floor/);
    expect(await readFile(join(dir, STATE_FILE), 'utf8')).toBe(text);
  });

  it('bounds the deny list and de-duplicates it', async () => {
    const s = await UpdateStateStore.create({ dataDir: dir });
    const many = Array.from({ length: 300 }, (_, i) => i.toString(16).padStart(64, '0'));
    await s.save({ highestRelease: 0, denied: [...many, many[299]!], current: null, previous: null });
    expect(s.get().denied).toHaveLength(256);
    expect(s.get().denied.at(-1)).toBe(many[299]);
  });
});
