/**
 * Issue 9 drill: the cloud SIGKILLed in the ack window, made deterministic by the cloud's fault hook
 * (`APPRENTICE_FAULT_KILL`): once right before an example commit (received, nothing on disk, no PUBACK
 * yet) and once right after one (on disk, no PUBACK yet). Real Mosquitto with persistence, real
 * daemons, the real cloud as its own process. The promise: every example the devices selected is
 * stored once, with 0 evictions and 0 drops.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { skipWithoutMosquitto } from '../helpers/broker.js';
import { FaultWorld } from './fault-harness.js';

describe.skipIf(skipWithoutMosquitto())('fault drill: cloud SIGKILLed in the ack window', () => {
  let w: FaultWorld | undefined;

  afterAll(async () => {
    await w?.dispose();
  }, 30_000);

  it('killed before and after an example commit: stored = selected, 0 evicted, 0 dropped', async () => {
    w = await FaultWorld.create();
    for (const id of ['dev-a', 'dev-b']) await w.startDevice(id);
    const r1 = w.addRelease({ seed: 1 });
    await w.rollout(r1.seq, { canaryShare: 0.5, soakSeconds: 0 });
    await w.waitConverged(r1.seq, 60_000);
    await w.predict('dev-a', 5);
    await w.waitNoExampleLost();
    await w.stopCloud();

    let sent = 5;
    for (const fault of ['before-commit:3', 'after-commit:2']) {
      const cloud = await w.spawnCloud({ APPRENTICE_FAULT_KILL: fault });
      let died = false;
      const exited = new Promise<NodeJS.Signals | null>((r) =>
        cloud.child.once('exit', (_code, signal) => {
          died = true;
          r(signal);
        }),
      );
      // Ingest commits the batches that arrive together in one transaction, so how many commits some
      // number of examples takes depends on timing (fewer on a loaded machine). Keep sending, 10 per
      // device at a time (4 batches of 5), until the hook has killed the process; 20 turns at most.
      for (let turn = 0; !died && turn < 20; turn++) {
        const answered = await Promise.all([w.predict('dev-a', 10), w.predict('dev-b', 10)]);
        expect(answered).toEqual([10, 10]);
        sent += 20;
        await new Promise((r) => setTimeout(r, 300));
      }
      // The hook, not the test, ended the process: it died inside the ack window.
      const how = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running 30 s after the last turn'), 30_000))]);
      expect(how, fault).toBe('SIGKILL');
      // Restarted without the hook: what the killed process had received comes again from the broker.
      await w.startCloud();
      await w.waitNoExampleLost(60_000);
      await w.stopCloud();
    }

    await w.startCloud();
    const { selected, stored } = await w.waitNoExampleLost(60_000);
    expect(selected).toBe(sent);
    expect(stored).toBe(selected);
    const ids = w.storedIds();
    expect(new Set(ids).size).toBe(ids.length);
    for (const d of w.daemons.values()) expect(d.snapshot().outbox).toMatchObject({ evicted: 0, dropped: 0, depth: 0 });
  }, 180_000);
});
