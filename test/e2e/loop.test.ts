/**
 * The short form of `apprentice demo` (issue 5): the real cloud (embedded broker, API, round workers),
 * two `apprentice edge` child processes provisioned through POST /v1/devices, a tiny augmented teacher,
 * round 0 from clean MNIST, shifted traffic, hard examples back to the cloud, one scheduled round.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { count, countDistinct, eq } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { runDemo, type DemoSummary } from '../../cloud/demo/run.js';
import { trainDemoTeacher } from '../../cloud/demo/teacher.js';
import { Registry } from '../../cloud/registry/db.js';
import { devices, examples, releases } from '../../cloud/registry/schema.js';

/** Cached across runs: trained once (a few seconds), keyed by its settings. */
const TEACHER = join(tmpdir(), 'apprentice-loop-teacher-mlp128-e1-n4000.onnx');

describe('closed loop (short form of apprentice demo)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'apprentice-loop-'));
  let summary: DemoSummary;
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('round 0 → shifted traffic → hard examples → scheduled round 1 on every device', { timeout: 110_000 }, async () => {
    const t0 = Date.now();
    if (!existsSync(TEACHER)) await trainDemoTeacher({ out: TEACHER, arch: 'mlp:128', epochs: 1, limit: 4000, testLimit: 0 });
    summary = await runDemo({
      dataDir,
      cacheDir: join(dataDir, 'cache'),
      fresh: true,
      rounds: 1,
      teacher: TEACHER,
      devices: 2,
      traffic: 300,
      evalPool: 500,
      student: 'mlp:16',
      baseLimit: 3000,
      epochs: 1,
      hardExampleShare: 0.5,
      teacherArch: 'mlp:128',
      teacherEpochs: 1,
      roundTimeoutMs: 60_000,
      out: () => undefined,
      progress: false,
    });
    const seconds = (Date.now() - t0) / 1000;
    expect(summary.stoppedBy).toBe('rounds');
    expect(summary.rows.map((r) => r.round)).toEqual([0, 1]);
    const [r0, r1] = summary.rows as [DemoSummary['rows'][0], DemoSummary['rows'][0]];
    expect(r1.release).toBeGreaterThan(r0.release!);
    // Every device answered all of its round-1 traffic with the latest release (the demo waited for all to serve it).
    for (const d of r1.devices) expect(d.examples).toBe(300);
    // Accuracies come from each device's evaluation pool, disjoint from its traffic (issue 11).
    expect(summary.pools.perDevice).toEqual([
      { id: 'demo-1-rotation', traffic: 4500, evaluation: 500 },
      { id: 'demo-2-thickness', traffic: 4500, evaluation: 500 },
    ]);
    for (const r of summary.rows) {
      for (const d of r.devices) {
        expect(d.evaluated).toBe(500);
        expect(d.studentAccuracy).toBeGreaterThan(0.1);
        expect(d.gap).toBeCloseTo(d.teacherAccuracy - d.studentAccuracy, 9);
      }
    }

    const registry = Registry.open(join(dataDir, 'cloud', 'registry.db'));
    try {
      const latest = registry.db.select().from(releases).where(eq(releases.seq, r1.release!)).get()!;
      expect(latest).toBeDefined();
      const lineage = (latest.manifest as { lineage?: { exampleCount?: number } }).lineage;
      expect(lineage?.exampleCount ?? 0).toBeGreaterThan(0);
      expect(r1.exampleCount).toBeGreaterThan(0);
      // The cloud's view agrees: every device reported running the round-1 release.
      const fleet = registry.db.select({ id: devices.id, running: devices.runningSeq }).from(devices).all();
      expect(fleet).toHaveLength(2);
      for (const d of fleet) expect(d.running, d.id).toBe(r1.release);
      // Zero lost, zero duplicated: what each device selected is what the cloud stored, once per UUID.
      for (const e of summary.examples) {
        expect(e.selected, e.id).toBeGreaterThan(0);
        expect(e.stored, e.id).toBe(e.selected);
      }
      const total = registry.db.select({ n: count(), ids: countDistinct(examples.id) }).from(examples).get()!;
      expect(total.ids).toBe(total.n);
      expect(total.n).toBe(summary.examples.reduce((a, e) => a + e.stored, 0));
    } finally {
      registry.dispose();
    }
    console.log(`loop e2e: ${seconds.toFixed(1)} s; rows ${JSON.stringify(summary.rows.map((r) => ({ release: r.release, exampleCount: r.exampleCount, rollout: r.rolloutSeconds })))}`);
  });
});
