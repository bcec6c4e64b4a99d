/**
 * Issue 10 item 5, round side: each device gets at most `maxDeviceShare` of the hard-example window
 * (water-filled), labels count only on feedback rows, and a feedback label the teacher contradicts
 * goes to quarantine until the operator accepts or drops it.
 */
import { desc, eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { shareIndices, waterFill } from '../../../cloud/rounds/device-share.js';
import { acceptQuarantined, contradicts, dropQuarantined, listQuarantined } from '../../../cloud/rounds/label-review.js';
import { loadHardExamples, newestHard } from '../../../cloud/rounds/transfer-set.js';
import { Teacher } from '../../../cloud/teacher/ort-teacher.js';
import { denseModel, sampleInputs, writeModel } from '../../fixtures/onnx-models.js';
import { registryDialects } from '../../helpers/dialects.js';
import { insertExamples, insertModel, tempDir } from './helpers.js';

const dialects = registryDialects();

const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

describe('waterFill', () => {
  it('caps each device at its share while others can fill the window', () => {
    const a = waterFill(new Map([['flood', 100_000], ['a', 5000], ['b', 5000], ['c', 5000]]), 20_000, 0.25);
    expect(Object.fromEntries(a)).toEqual({ flood: 5000, a: 5000, b: 5000, c: 5000 });
  });
  it('gives the room others cannot fill to the devices that have more', () => {
    const a = waterFill(new Map([['flood', 100_000], ['a', 100], ['b', 7]]), 1000, 0.25);
    expect(Object.fromEntries(a)).toEqual({ flood: 893, a: 100, b: 7 });
    const b = waterFill(new Map([['x', 900], ['y', 900], ['z', 3]]), 1000, 0.25);
    expect(Object.fromEntries(b)).toEqual({ x: 499, y: 498, z: 3 });
  });
  it('a one-device fleet uses its whole window; a small fleet takes everything', () => {
    expect(Object.fromEntries(waterFill(new Map([['only', 50_000]]), 20_000, 0.25))).toEqual({ only: 20_000 });
    expect(Object.fromEntries(waterFill(new Map([['a', 3], ['b', 4]]), 20_000, 0.25))).toEqual({ a: 3, b: 4 });
  });
  it('is fair with more devices than 1/share, and never exceeds the window', () => {
    const many = new Map(Array.from({ length: 7 }, (_, i) => [`d${i}`, 1000] as [string, number]));
    const a = waterFill(many, 100, 0.25);
    expect(sum(a)).toBe(100);
    expect(Math.max(...a.values()) - Math.min(...a.values())).toBeLessThanOrEqual(1);
    expect(() => waterFill(many, 100, 0)).toThrow(RangeError);
  });
  it('shareIndices keeps order and picks the newest of each device', () => {
    const ids = ['f', 'f', 'f', 'a', 'f', 'f', 'b', 'f'];
    expect(shareIndices(ids, 4, 0.25)).toEqual([0, 1, 3, 6]);
  });
});

describe.each(dialects)('hard examples with device shares and label quarantine on $name', (d) => {
  const tmp = tempDir();
  let registry: StoreRegistry;
  let teacher: Teacher;
  const x = sampleInputs(1, 4);
  const row = (): Float32Array => x.slice(0, 4);
  const rows = (n: number): Float32Array[] => Array.from({ length: n }, row);

  beforeAll(async () => {
    teacher = await Teacher.create([await writeModel(tmp.dir, denseModel({ sizes: [4, 3], seed: 3 }))]);
  });
  beforeEach(async (ctx) => {
    registry = await d.open(ctx);
    await insertModel(registry, { name: 'm' });
    await insertModel(registry, { name: 'solo' });
    await insertModel(registry, { name: 'lab' });
  });
  afterEach(() => d.close());
  afterAll(async () => {
    await teacher.dispose();
    tmp.cleanup();
  });

  it('one device flooding gets at most its share of the window and of the recent evaluation', async () => {
    // The flood is the newest traffic: without shares it would fill the whole window.
    for (const dev of ['a', 'b', 'c']) await insertExamples(registry, 'm', rows(60), [], '2030-01-01T00:00:00.000Z', { deviceId: dev });
    await insertExamples(registry, 'm', rows(400), [], '2030-01-02T00:00:00.000Z', { deviceId: 'flood' });
    const h = await loadHardExamples(registry, 'm', teacher, { inputSize: 4, classes: 3, window: 200, maxDeviceShare: 0.25 });
    const by = (ids: string[]) => ids.reduce<Record<string, number>>((acc, d) => ((acc[d] = (acc[d] ?? 0) + 1), acc), {});
    expect(h.count).toBe(200);
    expect(by(h.deviceIds)).toEqual({ flood: 50, a: 50, b: 50, c: 50 });
    // Newest first, still: the flood's rows come first.
    expect(h.deviceIds.slice(0, 50).every((d) => d === 'flood')).toBe(true);
    const recent = newestHard(h, 40, 4, 3, 0.25);
    expect(recent.count).toBe(40);
    // For contrast: the newest 200 rows (what a round took before) are the flood's only.
    const { examples } = registry.t;
    const newest = await registry.q.select({ d: examples.deviceId }).from(examples).where(eq(examples.model, 'm')).orderBy(desc(examples.ingestedAt)).limit(200);
    expect(by(newest.map((r) => r.d))).toEqual({ flood: 200 });
  });

  it('a one-device fleet uses the whole window', async () => {
    await insertExamples(registry, 'solo', rows(300), [], undefined, { deviceId: 'only' });
    const h = await loadHardExamples(registry, 'solo', teacher, { inputSize: 4, classes: 3, window: 250, maxDeviceShare: 0.25 });
    expect(h.count).toBe(250);
    expect(newestHard(h, 100, 4, 3, 0.25).count).toBe(100);
  });

  it('trusts labels only on feedback rows and quarantines the ones the teacher contradicts', async () => {
    // Teacher logits stored for this teacher: class 0 with ~0.9999, so label 1 is contradicted, label 0 is not.
    const t = { id: teacher.id, logits: () => Float32Array.of(10, 0, 0) };
    const [agrees] = await insertExamples(registry, 'lab', rows(1), [0], undefined, { teacher: t });
    const [contra] = await insertExamples(registry, 'lab', rows(1), [1], undefined, { teacher: t });
    const [notFeedback] = await insertExamples(registry, 'lab', rows(1), [2], undefined, { teacher: t, reason: 'audit' });
    const [contra2] = await insertExamples(registry, 'lab', rows(1), [2], undefined, { teacher: t });
    const opts = { inputSize: 4, classes: 3, window: 100, maxDeviceShare: 0.25 };
    const h = await loadHardExamples(registry, 'lab', teacher, opts);
    expect(h.quarantined).toBe(2);
    expect(h.ids).not.toContain(contra);
    expect(h.ids).not.toContain(contra2);
    expect(h.labels[h.ids.indexOf(agrees!)]).toBe(0);
    expect(h.labels[h.ids.indexOf(notFeedback!)]).toBe(-1);
    const { examples } = registry.t;
    const state = async (id: string) => (await registry.q.select({ s: examples.labelState }).from(examples).where(eq(examples.id, id)))[0]?.s;
    expect([await state(agrees!), await state(contra!), await state(notFeedback!)]).toEqual(['ok', 'quarantined', null]);

    const listed = await listQuarantined(registry, { model: 'lab' });
    expect(listed.map((e) => e.id).sort()).toEqual([contra, contra2].sort());
    expect(listed.find((e) => e.id === contra)).toMatchObject({ label: 1, teacherClass: 0 });
    expect(listed[0]!.teacherProb!).toBeGreaterThan(0.99);

    // Still out of the next round until the operator acts.
    expect((await loadHardExamples(registry, 'lab', teacher, opts)).ids).not.toContain(contra);
    expect(await acceptQuarantined(registry, contra!)).toBe(true);
    expect(await acceptQuarantined(registry, contra!)).toBe(false); // no longer in quarantine
    expect(await dropQuarantined(registry, contra2!)).toBe(true);
    const after = await loadHardExamples(registry, 'lab', teacher, opts);
    expect(after.labels[after.ids.indexOf(contra!)]).toBe(1);
    expect(after.ids).not.toContain(contra2);
    expect(await registry.q.select().from(examples).where(eq(examples.id, contra2!))).toHaveLength(0);
  });

  it('contradicts() follows the thresholds', () => {
    expect(contradicts([10, 0, 0], 1)).toBe(true);
    expect(contradicts([10, 0, 0], 0)).toBe(false);
    expect(contradicts([2, 0, 0], 1)).toBe(false); // p(other) ≈ 0.79 < 0.9
    expect(contradicts([10, 0, 0], 1, { otherMin: 0.9, givenMax: 1e-6 })).toBe(false);
  });
});
