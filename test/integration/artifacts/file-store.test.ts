/**
 * Issue 15 item 3, the SQLite default: the same artifact-store API over files under the data dir (what the
 * factory picks on SQLite), with the historic paths model and agent releases are recorded under.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry as PromRegistry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ArtifactRejectedError, openArtifacts, type Artifacts } from '../../../cloud/artifacts/index.js';
import { backupCloud, restoreCloud } from '../../../cloud/backup/backup.js';
import { KeyStore } from '../../../cloud/keys/store.js';
import { openRegistry, type StoreRegistry } from '../../../cloud/registry/open.js';
import { silentLogger } from '../../../shared/log/index.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function drain(s: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of s) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

describe('file artifact store (SQLite default)', () => {
  let dir: string;
  let reg: StoreRegistry;
  let metrics: PromRegistry;
  let arts: Artifacts;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'apprentice-file-artifacts-'));
    reg = await openRegistry({ path: join(dir, 'registry.db') });
    metrics = new PromRegistry();
    arts = openArtifacts({ registry: reg, dataDir: dir, log: silentLogger, metrics });
  });
  afterEach(async () => {
    await reg.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is chosen on SQLite and keeps models and agents where releases have always recorded them', async () => {
    expect(arts.blobs.backend).toBe('file');
    const model = randomBytes(70_000);
    const put = await arts.blobs.put('model', model, { sha256: sha(model), bytes: model.length });
    expect(put).toEqual({ sha256: sha(model), bytes: model.length, created: true, relPath: join('artifacts', `${sha(model)}.onnx`) });
    expect(readFileSync(join(dir, put.relPath)).equals(model)).toBe(true);
    const agent = await arts.blobs.put('agent', randomBytes(10));
    expect(agent.relPath).toBe(join('agents', `${agent.sha256}.tar.gz`));
    expect(await arts.blobs.put('model', model)).toMatchObject({ created: false });
    const blob = (await arts.blobs.open('model', sha(model)))!;
    expect((await drain(blob.read(65_535, 65_600))).equals(model.subarray(65_535, 65_601))).toBe(true);
    expect(await arts.blobs.localPath('model', sha(model))).toBe(join(dir, put.relPath));
  });

  it('refuses disagreeing content and leaves neither the file nor a temp file behind', async () => {
    const bytes = randomBytes(4096);
    const src = join(dir, 'upload.bin');
    writeFileSync(src, bytes);
    await expect(arts.blobs.put('teacher', { path: src }, { sha256: sha(randomBytes(3)) })).rejects.toBeInstanceOf(ArtifactRejectedError);
    await expect(arts.blobs.put('teacher', { path: src }, { bytes: 100 })).rejects.toThrow(/more than the expected 100 bytes/);
    expect(existsSync(join(dir, 'teachers', `${sha(bytes)}.onnx`))).toBe(false);
    expect(readdirSync(join(dir, 'teachers'))).toEqual([]);
    expect(await metrics.getSingleMetricAsString('apprentice_artifact_put_refused_total')).toMatch(/reason="sha256_mismatch"} 1[\s\S]*reason="length_mismatch"} 1/);
  });

  it('readAll checks the hash: a file changed on disk is unavailable, not served', async () => {
    const bytes = randomBytes(1000);
    const put = await arts.blobs.put('dataset', bytes);
    writeFileSync(join(dir, put.relPath), randomBytes(1000));
    await expect(arts.blobs.readAll('dataset', put.sha256)).rejects.toThrow(/corrupt/);
    await expect(arts.blobs.readAll('dataset', sha(randomBytes(2)))).rejects.toThrow(/not stored/);
  });

  it('apprentice backup copies every kind the file store keeps, and restore brings them back', async () => {
    KeyStore.open({ dir: join(dir, 'keys') });
    const puts = await Promise.all((['model', 'agent', 'teacher', 'dataset'] as const).map((k) => arts.blobs.put(k, randomBytes(3000))));
    const out = join(dir, 'backup');
    const { manifest } = await backupCloud({ dataDir: dir, out });
    expect(manifest.files.map((f) => f.path)).toEqual(expect.arrayContaining(puts.map((p) => p.relPath)));
    const restored = join(dir, 'restored');
    await restoreCloud({ from: out, dataDir: restored });
    const again = openArtifacts({ registry: reg, dataDir: restored, log: silentLogger });
    for (const [i, k] of (['model', 'agent', 'teacher', 'dataset'] as const).entries()) expect(sha(await again.blobs.readAll(k, puts[i]!.sha256))).toBe(puts[i]!.sha256);
  });
});
