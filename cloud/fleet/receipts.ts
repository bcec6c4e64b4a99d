import type { Counter } from 'prom-client';
import type { Logger } from '../../shared/log/index.js';
import { cloudMaySend, encodePayload, receiptSchema, topics, type Receipt } from '../../shared/protocol/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { deviceCompatOf } from './device-compat.js';
import type { MqttPublisher } from './mqtt.js';

/** Sends one receipt; never throws and never waits (see `createReceiptSender`). */
export type ReceiptSender = (deviceId: string, receipt: Receipt) => void;

/**
 * Publishes receipts on `devices/{id}/receipts` (QoS 1, not retained) to devices that declared the
 * `receipts` capability (shared/protocol/compat.ts); others delete on PUBACK and get none.
 *
 * Fire and forget on purpose: ingest sends a receipt from inside the MQTT message handler, whose
 * PUBACK MQTT.js holds until the handler is done, and MQTT.js reads no other packet meanwhile, so
 * waiting here for the receipt's own PUBACK would deadlock. A receipt lost in a crash costs a resend
 * (the device's receipt timeout), never data: the rows were committed first.
 *
 * @example
 * const send = createReceiptSender({ registry, mqtt, log, counter });
 * send('pi-1', { v: 1, deviceId: 'pi-1', at, batchId, kind: 'examples', stored: ids, refused: [], deferred: [] });
 */
export function createReceiptSender({ registry, mqtt, log, counter }: { registry: StoreRegistry; mqtt: MqttPublisher; log: Logger; counter?: Counter<'result'> }): ReceiptSender {
  return function sendReceipt(deviceId, receipt) {
    void (async () => {
      if (!cloudMaySend(await deviceCompatOf(registry, deviceId), 'receipts')) return void counter?.inc({ result: 'not_capable' });
      await mqtt.publish(topics.receipts(deviceId), encodePayload(receiptSchema, receipt), { qos: 1, retain: false });
      counter?.inc({ result: 'sent' });
    })().catch((err: unknown) => {
      counter?.inc({ result: 'failed' });
      log.warn({ err, deviceId, batchId: receipt.batchId }, 'ingest/receipt-failed');
    });
  };
}
