import { readFile, writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildArtifactDescriptor, chunkArtifact } from '../../../shared/manifest/index.js';
import { PartialDownload } from '../../../edge/updates/partial.js';
import { modelBytes, tempDir } from './fixtures.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

const bytes = modelBytes(5000); // 5 chunks of 1024, the last 904
const artifact = buildArtifactDescriptor(bytes, { chunkSize: 1024, quantization: 'fp32' });
const chunks = chunkArtifact(bytes, 1024);

describe('PartialDownload', () => {
  it('accepts chunks in any order, skips duplicates, and assembles a verified file', async () => {
    const p = await PartialDownload.open({ dataDir: dir, artifact });
    for (const i of [4, 1, 0, 3]) expect(await p.accept(i, chunks[i]!)).toBe('written');
    expect(await p.accept(1, chunks[1]!)).toBe('duplicate');
    expect(p.contiguousChunks()).toBe(2);
    expect(p.complete).toBe(false);
    await expect(p.finish()).rejects.toMatchObject({ reason: 'download_failed' });
    await p.accept(2, chunks[2]!);
    const path = await p.finish();
    expect((await readFile(path)).equals(bytes)).toBe(true);
  });

  it('checks index, then exact length, then hash, and writes nothing wrong', async () => {
    const p = await PartialDownload.open({ dataDir: dir, artifact });
    await expect(p.accept(5, chunks[0]!)).rejects.toMatchObject({ reason: 'length_mismatch' });
    await expect(p.accept(-1, chunks[0]!)).rejects.toMatchObject({ reason: 'length_mismatch' });
    await expect(p.accept(0, Buffer.concat([chunks[0]!, Buffer.from([1])]))).rejects.toMatchObject({ reason: 'length_mismatch' });
    await expect(p.accept(4, chunks[0]!)).rejects.toMatchObject({ reason: 'length_mismatch' }); // the last chunk is shorter
    await expect(p.accept(0, chunks[1]!)).rejects.toMatchObject({ reason: 'hash_mismatch' });
    expect(p.verified).toBe(0);
    await p.close();
  });

  it('resumes from its progress record, re-verifying what the record claims', async () => {
    const a = await PartialDownload.open({ dataDir: dir, artifact });
    for (const i of [0, 1, 3]) await a.accept(i, chunks[i]!);
    await a.close();
    const b = await PartialDownload.open({ dataDir: dir, artifact });
    expect(b.resumed).toBe(3);
    expect(b.has(3) && !b.has(2)).toBe(true);
    await b.close();
    // Corrupt chunk 1 on disk: it is dropped on the next open, the others kept.
    const raw = await readFile(b.partPath);
    raw[1024 + 5] = raw[1024 + 5]! ^ 0xff;
    await writeFile(b.partPath, raw);
    const c = await PartialDownload.open({ dataDir: dir, artifact });
    expect(c.resumed).toBe(2);
    expect(c.has(1)).toBe(false);
    for (const i of [1, 2, 4]) await c.accept(i, chunks[i]!);
    expect((await readFile(await c.finish())).equals(bytes)).toBe(true);
  });

  it('starts over when the record belongs to another chunking or is garbage', async () => {
    const a = await PartialDownload.open({ dataDir: dir, artifact });
    await a.accept(0, chunks[0]!);
    await a.close();
    const other = buildArtifactDescriptor(bytes, { chunkSize: 2048, quantization: 'fp32' });
    const b = await PartialDownload.open({ dataDir: dir, artifact: other });
    expect(b.resumed).toBe(0);
    await b.close();
    await writeFile(b.progressPath, 'not json');
    const c = await PartialDownload.open({ dataDir: dir, artifact });
    expect(c.resumed).toBe(0);
    await c.discard();
  });

  it('finish discards everything when the chunks do not add up to the signed sha256', async () => {
    const lying = { ...artifact, sha256: 'f'.repeat(64) };
    const p = await PartialDownload.open({ dataDir: dir, artifact: lying });
    for (let i = 0; i < 5; i++) await p.accept(i, chunks[i]!);
    await expect(p.finish()).rejects.toMatchObject({ reason: 'hash_mismatch' });
    await expect(readFile(p.partPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
