/**
 * The only place MQTT topic strings are built or parsed (DESIGN.md "Protocol").
 * Call sites never concatenate topics themselves.
 */
export const TOPIC_PREFIX = 'apprentice/v1';

export const DEVICE_TOPIC_KINDS = ['desired', 'status', 'telemetry', 'events', 'examples'] as const;
export type DeviceTopicKind = (typeof DEVICE_TOPIC_KINDS)[number];

/** Device ids become topic levels, so they must not contain `/`, `+`, `#` or NUL ([MQTT-4.7.1]). */
export const DEVICE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const SHA256_RE = /^[0-9a-f]{64}$/;

export class TopicError extends Error {
  override readonly name = 'TopicError';
}

function checkDeviceId(id: string): string {
  if (!DEVICE_ID_RE.test(id)) throw new TopicError(`invalid device id "${id}" (allowed: ${DEVICE_ID_RE.source})`);
  return id;
}

export const topics = {
  device(id: string, kind: DeviceTopicKind): string {
    return `${TOPIC_PREFIX}/devices/${checkDeviceId(id)}/${kind}`;
  },
  desired: (id: string) => topics.device(id, 'desired'),
  status: (id: string) => topics.device(id, 'status'),
  telemetry: (id: string) => topics.device(id, 'telemetry'),
  events: (id: string) => topics.device(id, 'events'),
  examples: (id: string) => topics.device(id, 'examples'),
  artifactChunk(sha256: string, index: number): string {
    if (!SHA256_RE.test(sha256)) throw new TopicError(`invalid sha256 "${sha256}"`);
    if (!Number.isSafeInteger(index) || index < 0) throw new TopicError(`invalid chunk index ${index}`);
    return `${TOPIC_PREFIX}/artifacts/${sha256}/${index}`;
  },
  /** Filter matching every chunk of one artifact. */
  artifactChunks(sha256: string): string {
    if (!SHA256_RE.test(sha256)) throw new TopicError(`invalid sha256 "${sha256}"`);
    return `${TOPIC_PREFIX}/artifacts/${sha256}/+`;
  },
  /**
   * Filter for one kind of device topic across the fleet. With `share`, a shared subscription
   * (`$share/{group}/...`) so several cloud replicas split the work; Mosquitto and EMQX accept it
   * on MQTT 3.1.1 too, aedes does not.
   */
  allDevices(kind: DeviceTopicKind, share?: string): string {
    const filter = `${TOPIC_PREFIX}/devices/+/${kind}`;
    return share ? `$share/${share}/${filter}` : filter;
  },
};

export type ParsedTopic =
  | { type: 'device'; deviceId: string; kind: DeviceTopicKind }
  | { type: 'artifact'; sha256: string; index: number };

/** Parses a concrete (non-wildcard) topic received from the broker; undefined when it is not ours. */
export function parseTopic(topic: string): ParsedTopic | undefined {
  const parts = topic.split('/');
  if (parts.length < 4 || `${parts[0]}/${parts[1]}` !== TOPIC_PREFIX) return undefined;
  if (parts[2] === 'devices' && parts.length === 5) {
    const [, , , id, kind] = parts;
    if (!id || !DEVICE_ID_RE.test(id)) return undefined;
    if (!(DEVICE_TOPIC_KINDS as readonly string[]).includes(kind!)) return undefined;
    return { type: 'device', deviceId: id, kind: kind as DeviceTopicKind };
  }
  if (parts[2] === 'artifacts' && parts.length === 5) {
    const sha = parts[3]!;
    const idx = parts[4]!;
    if (!SHA256_RE.test(sha) || !/^\d{1,9}$/.test(idx)) return undefined;
    return { type: 'artifact', sha256: sha, index: Number(idx) };
  }
  return undefined;
}

/** Publishing to a filter is a bug, never a broadcast: refuse it ([MQTT-3.3.2-2]). */
export function assertPublishable(topic: string): string {
  if (topic.includes('+') || topic.includes('#') || topic.includes('\u0000') || topic.length === 0) {
    throw new TopicError(`refusing to publish to "${topic}": wildcards and empty topics are not allowed`);
  }
  return topic;
}
