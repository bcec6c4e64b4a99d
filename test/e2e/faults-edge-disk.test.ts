/**
 * Issue 9 drills: the edge's disk full, and its data dir read-only, under a running daemon. Real
 * file systems (a size-limited tmpfs; a loop-mounted ext4 that the kernel switches to emergency
 * read-only), real daemons, real Mosquitto and cloud. Each drill first proves that a write fails with
 * ENOSPC / EROFS. The promise: predictions keep being answered, the examples that could not be stored
 * are counted and reported in telemetry (selected and dropped), and once the disk is usable again new
 * examples are stored and delivered, with nothing stored on the device ever lost.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devices, examples } from '../../cloud/registry/schema.js';
import { skipWithoutMosquitto, waitFor } from '../helpers/broker.js';
import { Ext4Loop, fillDisk, mountSupport, mountTmpfs, probeWrite, unmountQuietly } from '../helpers/mounts.js';
import { FaultWorld } from './fault-harness.js';

const noMounts = skipWithoutMosquitto() ? 'no Mosquitto' : mountSupport(join(tmpdir(), `apprentice-mount-probe-${process.pid}`));
if (noMounts) console.warn(`skipping the edge disk drills: ${noMounts}`);

describe.skipIf(noMounts !== undefined)('fault drill: edge disk full and data dir read-only', () => {
  let w: FaultWorld;
  let fullDir: string;
  let loop: Ext4Loop;
  let seq: number;

  beforeAll(async () => {
    w = await FaultWorld.create();
    fullDir = join(w.dir, 'full');
    // 4 MiB: the release (~50 KB), the outbox and its WAL fit; a filler takes the rest.
    mountTmpfs(fullDir, 4 * 1024 * 1024);
    loop = new Ext4Loop(join(w.dir, 'ro.img'), join(w.dir, 'ro'));
    loop.create();
    mkdirSync(join(loop.dir, 'data'));
    await w.startDevice('dev-full', { dataDir: join(fullDir, 'data') });
    await w.startDevice('dev-ro', { dataDir: join(loop.dir, 'data') });
    seq = w.addRelease({ seed: 1 }).seq;
    await w.rollout(seq, { canaryShare: 0.5, soakSeconds: 0 });
    await w.waitConverged(seq, 60_000);
  }, 120_000);

  afterAll(async () => {
    for (const id of ['dev-full', 'dev-ro']) await w?.stopDevice(id).catch(() => undefined);
    if (fullDir) unmountQuietly(fullDir);
    loop?.dispose();
    await w?.dispose();
  }, 60_000);

  const storedOf = (id: string) => w.registry.db.select({ id: examples.id }).from(examples).where(eq(examples.deviceId, id)).all().length;
  const cloudTelemetry = (id: string) => w.registry.db.select({ t: devices.lastTelemetry }).from(devices).where(eq(devices.id, id)).get()?.t as { outbox: { selected: number; dropped: number } } | null;

  it('disk full: predictions answered, lost examples counted and reported, stored again once space returns', async () => {
    const d = w.daemons.get('dev-full')!;
    expect(await w.predict('dev-full', 5)).toBe(5);
    await w.waitNoExampleLost();
    expect(storedOf('dev-full')).toBe(5);

    expect(fillDisk(join(fullDir, 'filler'))).toBe('ENOSPC');
    expect(probeWrite(fullDir)).toBe('ENOSPC');

    // Every prediction is answered although its example cannot be stored.
    expect(await w.predict('dev-full', 40)).toBe(40);
    await waitFor(() => d.snapshot().writer.pending === 0, 10_000);
    const { writer, outbox } = d.snapshot();
    // SQLite may still fit a few rows into WAL space it holds; most of 40 × ~1.5 KB cannot.
    expect(writer.writeFailed).toBeGreaterThan(0);
    const lost = writer.writeFailed;
    expect(outbox.selected + writer.unrecorded).toBe(45);
    // Telemetry counts them as selected and dropped, and the cloud hears it.
    const t = d.snapshot().telemetry.outbox;
    expect(t.selected).toBe(45);
    expect(t.dropped).toBe(lost);
    await waitFor(() => cloudTelemetry('dev-full')?.outbox.dropped === lost, 10_000, { message: 'telemetry with the lost examples at the cloud' });

    // Space returns: new examples are stored and delivered, the loss is recorded on disk.
    // The filler is an ordinary file: removing it is "space returns".
    rmSync(join(fullDir, 'filler'), { force: true });
    expect(probeWrite(fullDir)).toBe('ok');
    expect(await w.predict('dev-full', 10)).toBe(10);
    await w.waitNoExampleLost(30_000);
    expect(storedOf('dev-full')).toBe(55 - lost);
    expect(d.snapshot().writer.unrecorded).toBe(0);
    expect(d.snapshot().outbox).toMatchObject({ selected: 55, lost, dropped: lost, evicted: 0, depth: 0, published: 55 - lost });
  }, 120_000);

  it('data dir read-only: predictions answered, lost examples reported; after repair the daemon stores and delivers again', async () => {
    const d = w.daemons.get('dev-ro')!;
    expect(await w.predict('dev-ro', 5)).toBe(5);
    await w.waitNoExampleLost();
    expect(storedOf('dev-ro')).toBe(5);

    loop.goReadOnly();
    expect(loop.readOnly()).toBe(true);
    expect(probeWrite(join(loop.dir, 'data'))).toBe('EROFS');

    expect(await w.predict('dev-ro', 10)).toBe(10);
    await waitFor(() => d.snapshot().writer.pending === 0, 10_000);
    const { writer } = d.snapshot();
    expect(writer.writeFailed).toBe(10);
    expect(writer.unrecorded).toBe(10);
    const t = d.snapshot().telemetry.outbox;
    expect(t).toMatchObject({ selected: 15, dropped: 10, depth: 0 });
    await waitFor(() => cloudTelemetry('dev-ro')?.outbox.dropped === 10, 10_000, { message: 'telemetry with the lost examples at the cloud' });

    // An emergency read-only file system needs a repair (fsck) and a fresh mount: the daemon stops
    // (cleanly, on a read-only disk), the host repairs it, the daemon starts again from what it stored.
    await w.stopDevice('dev-ro');
    loop.unmount();
    loop.mount();
    expect(probeWrite(join(loop.dir, 'data'))).toBe('ok');
    await w.startDevice('dev-ro');
    // It serves the release it had installed, straight from its repaired data dir.
    await w.waitConverged(seq, 30_000);
    expect(await w.predict('dev-ro', 5)).toBe(5);
    await w.waitNoExampleLost(30_000);
    expect(storedOf('dev-ro')).toBe(10);
    expect(w.daemons.get('dev-ro')!.snapshot().outbox).toMatchObject({ evicted: 0, depth: 0, dropped: 0 });
  }, 120_000);
});

