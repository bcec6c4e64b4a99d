/**
 * Issue 10: after a rotation a returning device may get its retained `desired` before the new key set. A
 * manifest signed by an unknown key waits up to 30 s after connect for a key set before it is refused.
 * Fake timers; a real TrustStore on disk; the MQTT client is an EventEmitter (only connect/message matter).
 */
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { MqttClient } from 'mqtt';
import { KEYSET_WAIT_MS, KeySetFollower, TrustStore } from '../../../edge/updates/index.js';
import { generateSigningKey, toTrustedKey } from '../../../shared/manifest/index.js';
import { topics } from '../../../shared/protocol/index.js';
import { tempDir } from '../updates/fixtures.js';

class FakeClient extends EventEmitter {
  connected = false;
  subscribe(_t: string, _o: unknown, cb?: (err: Error | null, granted: unknown[]) => void): void {
    cb?.(null, [{ qos: 1 }]);
  }
}

let cleanup: () => Promise<void>;
let follower: KeySetFollower;
let client: FakeClient;
beforeEach(async () => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const t = await tempDir();
  cleanup = t.cleanup;
  const trust = await TrustStore.open({ dataDir: t.dir, trustedKeys: [toTrustedKey(generateSigningKey())] });
  client = new FakeClient();
  follower = new KeySetFollower({ client: client as unknown as MqttClient, trust });
  follower.start();
});
afterEach(async () => {
  follower.stop();
  vi.useRealTimers();
  await cleanup();
});

const settledAfter = async (p: Promise<void>) => {
  let done = false;
  void p.then(() => (done = true));
  await vi.advanceTimersByTimeAsync(0);
  return () => done;
};

describe('KeySetFollower.keySetSettled', () => {
  it('before any connect there is nothing to wait for', async () => {
    expect((await settledAfter(follower.keySetSettled()))()).toBe(true);
  });

  it('waits 30 s after connect when no key set comes, then lets the refusal happen', async () => {
    client.emit('connect');
    await vi.advanceTimersByTimeAsync(10_000);
    const done = await settledAfter(follower.keySetSettled());
    await vi.advanceTimersByTimeAsync(KEYSET_WAIT_MS - 10_000 - 1);
    expect(done()).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done()).toBe(true);
    expect((await settledAfter(follower.keySetSettled()))()).toBe(true); // past the window: no wait at all
  });

  it('a key set message (even a refused one) ends the wait at once; a reconnect opens a new window', async () => {
    client.emit('connect');
    const done = await settledAfter(follower.keySetSettled());
    expect(done()).toBe(false);
    client.emit('message', topics.keyset(), Buffer.from('{"not":"a key set"}'));
    await vi.advanceTimersByTimeAsync(0);
    expect(done()).toBe(true);
    client.emit('connect');
    const again = await settledAfter(follower.keySetSettled());
    expect(again()).toBe(false);
    await vi.advanceTimersByTimeAsync(KEYSET_WAIT_MS);
    expect(again()).toBe(true);
  });
});
