/**
 * Issue 15 item 2 through the artifact store: a teacher file and a dataset stored on one replica are used by
 * another (its own cache dir, its own registry connection) through `artifact:SHA256` references: the real
 * teacher runs in onnxruntime from the resolved path, the CSV dataset loads from it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { artifactRefsIn, openArtifacts, resolveArtifactRefs, storeFilesAsRefs, type Artifacts } from '../../../cloud/artifacts/index.js';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import { loadDataset } from '../../../shared/data/index.js';
import { silentLogger } from '../../../shared/log/index.js';
import { registryDialects } from '../../helpers/dialects.js';

const TEACHER = join(import.meta.dirname, '../../bench/fixtures/teacher-cnn16x32x128.onnx');
const dialects = registryDialects();

describe.each(dialects)('artifact references on $name (registry store)', (d) => {
  let reg: StoreRegistry;
  let dir: string;
  let a: Artifacts;
  let b: Artifacts;
  beforeEach(async (ctx) => {
    reg = await d.open(ctx);
    dir = mkdtempSync(join(tmpdir(), 'apprentice-artifact-refs-'));
    a = openArtifacts({ registry: reg, dataDir: join(dir, 'replica-a'), log: silentLogger, backend: 'registry' });
    b = openArtifacts({ registry: await d.openAnother(), dataDir: join(dir, 'replica-b'), log: silentLogger, backend: 'registry' });
  });
  afterEach(async () => {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a teacher stored by one replica runs on another, with the same logits as from the original file', async () => {
    const [ref] = await storeFilesAsRefs(a.blobs, 'teacher', [TEACHER]);
    expect(ref).toMatch(/^artifact:[0-9a-f]{64}$/);
    const local = await resolveArtifactRefs(b.blobs, 'teacher', ref!);
    expect(local.startsWith(join(dir, 'replica-b', 'cache', 'artifacts'))).toBe(true);
    const input = new Float32Array(2 * 784).map((_, i) => (i % 97) / 97);
    const [fromStore, original] = [await Teacher.create([local]), await Teacher.create([TEACHER])];
    try {
      const [x, y] = [await fromStore.logits(input, 784), await original.logits(input, 784)];
      expect(x.classes).toBe(10);
      expect([...x.logits]).toEqual([...y.logits]);
    } finally {
      await fromStore.dispose();
      await original.dispose();
    }
  });

  it('dataset specs resolve every reference in place; text without one is unchanged; an unknown one is refused', async () => {
    const csv = join(dir, 'd.csv');
    writeFileSync(csv, 'x1,label,x2\n1.5,1,-3\n0.25,0,100\n');
    const [ref] = await storeFilesAsRefs(a.blobs, 'dataset', [csv]);
    const spec = await resolveArtifactRefs(b.blobs, 'dataset', `csv:${ref}`);
    expect(spec).toMatch(/^csv:\/.*\/replica-b\/cache\/artifacts\/[0-9a-f]{64}$/);
    const ds = await loadDataset(spec);
    expect([...ds.features]).toEqual([1.5, -3, 0.25, 100]);
    expect([...ds.labels!]).toEqual([1, 0]);
    expect(artifactRefsIn(`idx:${ref},${ref}`)).toHaveLength(2);
    expect(await resolveArtifactRefs(b.blobs, 'dataset', 'mnist:train')).toBe('mnist:train');
    await expect(resolveArtifactRefs(b.blobs, 'dataset', `csv:artifact:${randomBytes(32).toString('hex')}`)).rejects.toThrow(/not stored/);
  });
});
