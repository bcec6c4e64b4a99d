import type { IPublishPacket, MqttClient } from 'mqtt';

/** What the queue needs from MQTT.js beyond its public API: the packet writer (MQTT.js 5, `client.ts`). */
interface PacketWriter {
  connected: boolean;
  _sendPacket(packet: { cmd: 'puback'; messageId: number; reasonCode?: number }, cb?: () => void): void;
}

interface Held {
  messageId: number;
  done: boolean;
}

/**
 * Deferred PUBACKs for QoS 1 messages whose handling is still in progress (issue 9: PUBACK only after
 * the rows are committed), without stopping MQTT.js from reading the next message meanwhile.
 *
 * MQTT.js (`handlers/publish.ts`) calls `handleMessage(packet, cb)` and reads the next packet only
 * after `cb`; `cb()` writes the PUBACK, `cb(err)` skips it and reads on. So for a message with work
 * pending we call `cb(err)` at once and write its PUBACK ourselves when the work is done, in arrival
 * order ([MQTT-4.6.0-2]). At most `max` messages are held; past that the message takes the plain path
 * (its `cb()` waits for its work), which stops reading: the broker keeps the rest. Held PUBACKs belong to
 * one connection: after a close they are forgotten, and the broker redelivers those messages to our
 * persistent session (ingest is idempotent by example id).
 */
export class AckQueue {
  private held: Held[] = [];
  private generation = 0;
  /** False if this MQTT.js has no packet writer we can use: then every message takes the plain path. */
  private readonly canDefer: boolean;

  constructor(
    private readonly client: MqttClient,
    private readonly max: number,
    /** Called when a message had to wait because `max` were held (counted and logged by the owner). */
    private readonly onFull: () => void,
  ) {
    this.canDefer = typeof (client as unknown as Partial<PacketWriter>)._sendPacket === 'function';
  }

  /** PUBACKs held and not yet written. */
  get size(): number {
    return this.held.length;
  }

  /** The connection closed: its held PUBACKs are void (the broker resends those messages). */
  reset(): void {
    this.generation++;
    this.held = [];
  }

  handle(packet: IPublishPacket, pending: Promise<void> | undefined, callback: (err?: Error) => void): void {
    if (!pending) {
      if (this.held.length === 0 || packet.qos !== 1) return callback();
      // Behind held ones: keep the order.
      this.held.push({ messageId: packet.messageId!, done: true });
      return callback(DEFERRED);
    }
    if (!this.canDefer || packet.qos !== 1 || packet.messageId === undefined || this.held.length >= this.max) {
      if (this.canDefer && packet.qos === 1) this.onFull();
      void pending.then(() => callback());
      return;
    }
    const entry: Held = { messageId: packet.messageId, done: false };
    const generation = this.generation;
    this.held.push(entry);
    callback(DEFERRED);
    void pending.then(() => {
      if (generation !== this.generation) return;
      entry.done = true;
      this.drain();
    });
  }

  private drain(): void {
    const writer = this.client as unknown as PacketWriter;
    while (this.held.length > 0 && this.held[0]!.done) {
      const { messageId } = this.held.shift()!;
      // Not connected: the broker will redeliver after the reconnect (and reset() runs on close).
      if (writer.connected) writer._sendPacket({ cmd: 'puback', messageId });
    }
  }
}

/** Tells MQTT.js to read on without writing the PUBACK (we write it later). */
const DEFERRED = new Error('PUBACK deferred until the handler is done');
