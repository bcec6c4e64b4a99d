/**
 * Issue 13 item 1, quotas: the per-device share applies within each cohort's window, so a one-device
 * cohort trains on its own examples (up to the whole window) while the base round still caps every
 * device at its share of the model's window.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StoreRegistry } from '../../../cloud/registry/open.js';
import { selectHardRows } from '../../../cloud/rounds/device-share.js';
import { registryDialects } from '../../helpers/dialects.js';
import { insertExamples, insertModel } from '../rounds/helpers.js';

const dialects = registryDialects();

describe.each(dialects)('hard-example quotas per cohort window on $name', (d) => {
  let registry: StoreRegistry;
  const count = (rows: { deviceId: string }[]) => rows.reduce<Record<string, number>>((m, r) => ({ ...m, [r.deviceId]: (m[r.deviceId] ?? 0) + 1 }), {});

  beforeEach(async (ctx) => {
    registry = await d.open(ctx);
    await insertModel(registry);
    const x = () => new Float32Array(784);
    // Two busy devices of cohort "rot", one quieter device alone in cohort "solo".
    await insertExamples(registry, 'mnist', Array.from({ length: 60 }, x), [], undefined, { deviceId: 'rot-a' });
    await insertExamples(registry, 'mnist', Array.from({ length: 60 }, x), [], undefined, { deviceId: 'rot-b' });
    await insertExamples(registry, 'mnist', Array.from({ length: 30 }, x), [], undefined, { deviceId: 'solo-1' });
  });
  afterEach(() => d.close());

  it('the base window caps each device at its share of the whole model window', async () => {
    // 10 each (a quarter of 40), then the 10 left evenly, the last unit by device id.
    expect(count(await selectHardRows(registry, 'mnist', 40, 0.25))).toEqual({ 'rot-a': 14, 'rot-b': 13, 'solo-1': 13 });
  });
  it("a one-device cohort's window holds its own examples, beyond the share", async () => {
    expect(count(await selectHardRows(registry, 'mnist', 40, 0.25, ['solo-1']))).toEqual({ 'solo-1': 30 });
  });
  it("a cohort's devices share its window by the same water-filling, and no other device enters it", async () => {
    expect(count(await selectHardRows(registry, 'mnist', 40, 0.25, ['rot-a', 'rot-b']))).toEqual({ 'rot-a': 20, 'rot-b': 20 });
    expect(await selectHardRows(registry, 'mnist', 40, 0.25, [])).toEqual([]);
    expect(count(await selectHardRows(registry, 'mnist', 40, 0.25, ['rot-a', 'nobody']))).toEqual({ 'rot-a': 40 });
  });
});
