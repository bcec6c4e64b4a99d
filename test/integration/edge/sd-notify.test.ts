/**
 * shared/systemd/sd-notify: a no-op without NOTIFY_SOCKET, and the real `systemd-notify` helper delivering
 * to a unix datagram socket standing in for systemd's (python3 listener) when both exist.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createSdNotify, watchdogUsec } from '../../../edge/status/index.js';
import { findExecutable, sleep, waitFor } from '../../helpers/broker.js';
import { python3, startNotifyListener, tempDir, type NotifyListener } from './harness.js';

const hasRealPath = Boolean(findExecutable('systemd-notify') && python3());
if (!hasRealPath) console.warn('[sd-notify] skipping the real-socket tests: systemd-notify or python3 is not installed');

describe('sdNotify without NOTIFY_SOCKET', () => {
  it('is disabled and never spawns anything', async () => {
    const spawn = (() => {
      throw new Error('must not spawn');
    }) as never;
    const sd = createSdNotify({ env: { WATCHDOG_USEC: '1000' }, spawn });
    expect(sd.enabled).toBe(false);
    expect(sd.watchdogIntervalMs).toBeUndefined();
    expect(await sd.ready('x')).toBe(false);
    expect(await sd.watchdog()).toBe(false);
    expect(await sd.stopping()).toBe(false);
    sd.startWatchdog();
    sd.stopWatchdog();
  });

  it('reads the watchdog interval as sd_watchdog_enabled(3) does', () => {
    expect(watchdogUsec({ WATCHDOG_USEC: '30000000' }, 42)).toBe(30_000_000);
    expect(watchdogUsec({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42)).toBe(30_000_000);
    expect(watchdogUsec({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '7' }, 42)).toBeUndefined(); // meant for another process
    expect(watchdogUsec({ WATCHDOG_USEC: 'soon' }, 42)).toBeUndefined();
    expect(watchdogUsec({}, 42)).toBeUndefined();
    expect(createSdNotify({ env: { NOTIFY_SOCKET: '/nonexistent', WATCHDOG_USEC: '30000000' } }).watchdogIntervalMs).toBe(15_000);
  });

  it('reports a missing helper as a failure without throwing', async () => {
    const sd = createSdNotify({ env: { NOTIFY_SOCKET: '/tmp/none.sock' }, command: 'apprentice-no-such-helper' });
    expect(sd.enabled).toBe(true);
    expect(await sd.ready()).toBe(false);
    expect(await sd.watchdog()).toBe(false);
  });
});

describe.skipIf(!hasRealPath)('sdNotify through systemd-notify to a notify socket', () => {
  let listener: NotifyListener | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await listener?.stop();
    await cleanup?.();
  });

  it('delivers READY with STATUS, STATUS, WATCHDOG pings at half the interval, and STOPPING', async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    listener = await startNotifyListener(t.dir);
    const sd = createSdNotify({ env: { ...process.env, NOTIFY_SOCKET: listener.path, WATCHDOG_USEC: '400000' } });
    expect(sd.watchdogIntervalMs).toBe(200);
    expect(await sd.ready('serving mnist-student release 3')).toBe(true);
    expect(await sd.status('line one\nline two')).toBe(true);
    sd.startWatchdog();
    await sleep(1_000);
    sd.stopWatchdog();
    expect(await sd.stopping()).toBe(true);
    await waitFor(() => listener!.messages.includes('STOPPING=1'), 2_000, { message: 'STOPPING=1' });
    const got = listener.messages.filter((m) => m !== 'BARRIER=1');
    expect(got[0]).toBe('READY=1\nSTATUS=serving mnist-student release 3');
    expect(got[1]).toBe('STATUS=line one line two'); // a newline cannot split an assignment
    const pings = got.filter((m) => m === 'WATCHDOG=1').length;
    // The interval (half of WATCHDOG_USEC) is asserted above; here the timer really pings, ~5 in 1 s.
    expect(pings).toBeGreaterThanOrEqual(2);
    expect(pings).toBeLessThanOrEqual(5);
    expect(got[got.length - 1]).toBe('STOPPING=1');
  });
});
