import type { MqttClient } from 'mqtt';
import type { Logger } from '../../shared/log/index.js';
import { parseTopic, topics } from '../../shared/protocol/index.js';
import type { PartialDownload } from './partial.js';
import { UpdateError } from './types.js';

/**
 * Downloads the missing chunks of an artifact from its retained MQTT chunk topics
 * (`apprentice/v1/artifacts/{sha}/{i}`) with the daemon's existing client. Retained messages are
 * redelivered on every (re)subscribe, so a reconnect resumes by itself: chunks already verified are
 * counted as duplicates and skipped.
 */

export interface MqttSourceOptions {
  client: MqttClient;
  partial: PartialDownload;
  /** Fail with `download_failed` when no new chunk arrived for this long (a stalled or missing artifact). */
  idleTimeoutMs: number;
  signal?: AbortSignal;
  log: Logger;
  onChunk?: (index: number, status: 'written' | 'duplicate') => void;
}

export interface MqttSourceStats {
  received: number;
  written: number;
  duplicates: number;
}

export function downloadFromMqtt({ client, partial, idleTimeoutMs, signal, log, onChunk }: MqttSourceOptions): Promise<MqttSourceStats> {
  const sha = partial.artifact.sha256;
  const filter = topics.artifactChunks(sha);
  const stats: MqttSourceStats = { received: 0, written: 0, duplicates: 0 };
  if (partial.complete) return Promise.resolve(stats);
  signal?.throwIfAborted();

  return new Promise<MqttSourceStats>((resolve, reject) => {
    let done = false;
    let idle: NodeJS.Timeout | undefined;

    const finish = (err?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(idle);
      client.removeListener('message', onMessage);
      client.removeListener('connect', onConnect);
      signal?.removeEventListener('abort', onAbort);
      // Leave no subscription behind: the broker would keep pushing this artifact's retained chunks.
      client.unsubscribe(filter, (e?: Error) => {
        if (e) log.debug({ err: e, filter }, 'updates/mqtt-unsubscribe-failed');
      });
      if (err === undefined) resolve(stats);
      else reject(err);
    };

    const armIdle = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        finish(new UpdateError('download_failed', `no new artifact chunk over MQTT for ${idleTimeoutMs} ms (${partial.verified}/${partial.total} chunks)`));
      }, idleTimeoutMs);
    };

    const onMessage = (topic: string, payload: Buffer): void => {
      if (done) return;
      const t = parseTopic(topic);
      if (!t || t.type !== 'artifact' || t.sha256 !== sha) return;
      // An empty retained publish clears a chunk ([MQTT-3.3.1-10]); current subscribers still see it. Not data.
      if (payload.length === 0) return;
      stats.received++;
      partial.accept(t.index, payload).then(
        (status) => {
          if (done) return;
          if (status === 'written') {
            stats.written++;
            armIdle();
          } else {
            stats.duplicates++;
          }
          onChunk?.(t.index, status);
          if (partial.complete) finish();
        },
        (err: unknown) => finish(err),
      );
    };

    const subscribe = (): void => {
      client.subscribe(filter, { qos: 1 }, (err, granted) => {
        if (done) return;
        // "Connection closed" while the SUBSCRIBE was in flight is normal: the reconnect resubscribes.
        if (err) return log.debug({ err, filter }, 'updates/mqtt-subscribe-interrupted');
        if (granted?.some((g) => g.qos === 128)) finish(new UpdateError('download_failed', `broker refused the subscription to ${filter}`));
      });
    };

    // MQTT.js resubscribes on reconnect by itself (option `resubscribe`, default true); only a client
    // built without it needs our help. Subscribing twice would only cost duplicate deliveries.
    const onConnect = (): void => {
      if (client.options.resubscribe === false) subscribe();
    };

    const onAbort = (): void => finish(signal?.reason ?? new Error('aborted'));

    client.on('message', onMessage);
    client.on('connect', onConnect);
    signal?.addEventListener('abort', onAbort, { once: true });
    armIdle();
    subscribe();
  });
}
