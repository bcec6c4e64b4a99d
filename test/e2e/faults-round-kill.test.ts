/**
 * Issue 9 drill: a kill -9 of the cloud in the middle of a round. The cloud runs as its own process
 * (`apprentice cloud`) with a real round worker training a real student while two daemons keep
 * sending hard examples; it is SIGKILLed while the worker trains, devices keep predicting while it is
 * down, then it restarts. The promise: the worker does not outlive its cloud, the interrupted round
 * ends `failed` with the restart named and is retried as a new round that finishes, and every example
 * the devices selected is stored once (stored = selected, 0 evicted, 0 dropped).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { models, rounds } from '../../cloud/registry/schema.js';
import { denseModel } from '../fixtures/onnx-models.js';
import { skipWithoutMosquitto, sleep, waitFor } from '../helpers/broker.js';
import { childPids, pidAlive } from '../helpers/cloud-process.js';
import { FaultWorld, MODEL } from './fault-harness.js';

interface RoundRow {
  id: string;
  state: string;
  trigger: string;
  error: string | null;
  progress: { phase?: string; epoch?: number } | null;
}

describe.skipIf(skipWithoutMosquitto())('fault drill: the cloud killed (SIGKILL) in the middle of a round', () => {
  let w: FaultWorld | undefined;

  afterAll(async () => {
    await w?.dispose();
  }, 60_000);

  it('the round fails cleanly and is retried after the restart; stored = selected', async () => {
    w = await FaultWorld.create();
    // The drill's model, with a real (tiny, random) teacher, registered before the harness's releases use its name.
    const teacherFile = join(w.dir, 'teacher.onnx');
    writeFileSync(teacherFile, denseModel({ sizes: [784, 32, 10], seed: 3 }).bytes);
    w.registry.db
      .insert(models)
      .values({
        name: MODEL,
        inputSpec: { shape: [784], dtype: 'float32', scaling: { scale: 1 / 255, offset: 0 }, raw: 'uint8' },
        labels: Array.from({ length: 10 }, (_, i) => `digit_${i}`),
        teacher: { files: [teacherFile], outputKind: 'logits' },
        studentSpec: 'mlp:16',
        // Long enough to be killed in (epochs of 3,000 rows), short enough to retry; any accuracy passes the gate.
        distillSettings: { baseData: 'mnist:train', baseLimit: 600, holdout: 'mnist:test', holdoutLimit: 100, epochs: 50, batchSize: 64, hardExampleShare: 0.5, tolerance: 1 },
      })
      .run();
    for (const id of ['dev-a', 'dev-b']) await w.startDevice(id);
    const r1 = w.addRelease({ seed: 1 });
    await w.rollout(r1.seq, { canaryShare: 0.5, soakSeconds: 0 });
    await w.waitConverged(r1.seq, 60_000);
    expect(await w.predict('dev-a', 10)).toBe(10);
    await w.waitNoExampleLost();
    await w.stopCloud();

    // The cloud as a process; a manual round through its API.
    const cloud = await w.spawnCloud();
    const api = (path: string, init: RequestInit = {}) => fetch(`${cloud.apiUrl}${path}`, { ...init, headers: { authorization: `Bearer ${cloud.token}`, 'content-type': 'application/json', ...init.headers } });
    const started = await api(`/v1/models/${MODEL}/rounds`, { method: 'POST', body: '{}' });
    expect(started.status).toBe(202);
    const { id: roundId } = (await started.json()) as { id: string };
    // Devices keep sending while the round runs.
    const during = Promise.all([w.predict('dev-a', 15), w.predict('dev-b', 15)]);
    await waitFor(
      async () => {
        const r = (await (await api(`/v1/rounds/${roundId}`)).json()) as RoundRow;
        return r.state === 'running' && r.progress?.phase === 'train';
      },
      90_000,
      { intervalMs: 100, message: 'the round training' },
    );
    const workers = childPids(cloud.child.pid!);
    expect(workers.length).toBeGreaterThan(0);
    const exited = new Promise<NodeJS.Signals | null>((r) => cloud.child.once('exit', (_c, s) => r(s)));
    cloud.child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(await during).toEqual([15, 15]);

   
    // Down for a while: the devices keep answering and keep their examples.
    expect(await Promise.all([w.predict('dev-a', 10), w.predict('dev-b', 10)])).toEqual([10, 10]);
    await sleep(1_000);
    // The retry needs only to finish, not to be long: one epoch (the registry is edited while the cloud is down).
    const reg = w.openRegistry();
    const m = reg.db.select({ s: models.distillSettings }).from(models).where(eq(models.name, MODEL)).get()!;
    reg.db.update(models).set({ distillSettings: { ...(m.s as object), epochs: 1 } }).where(eq(models.name, MODEL)).run();
    reg.dispose();

    await w.startCloud();
    const killed = w.registry.db.select().from(rounds).where(eq(rounds.id, roundId)).get()!;
    expect(killed.state).toBe('failed');
    expect(killed.error).toMatch(/^cloud restarted during round; retried as /);
    const retryId = killed.error!.replace(/^.* retried as /, '');
    const retry = await w.cloud!.rounds.settled(retryId);
    expect(retry).toMatchObject({ trigger: 'retry', attempts: 2 });
    expect(['released', 'rejected']).toContain(retry!.state);

    const { selected, stored } = await w.waitNoExampleLost(60_000);
    expect(selected).toBe(10 + 30 + 20);
    expect(stored).toBe(selected);
    const ids = w.storedIds();
    expect(new Set(ids).size).toBe(ids.length);
    for (const d of w.daemons.values()) expect(d.snapshot().outbox).toMatchObject({ evicted: 0, dropped: 0, depth: 0 });
    // The killed cloud's worker noticed (IPC disconnect) and exited: no orphan keeps training. It sees
    // the disconnect only between training steps, so this can take a while on a loaded machine.
    await waitFor(() => workers.every((p) => !pidAlive(p)), 60_000, { message: 'the round worker to exit after its cloud died' });
  }, 240_000);
});
