/**
 * The only place MQTT topic strings are built or parsed (DESIGN.md "Protocol").
 * Call sites never concatenate topics themselves.
 */
export const TOPIC_PREFIX = 'apprentice/v1';

export const DEVICE_TOPIC_KINDS = ['desired', 'status', 'telemetry', 'events', 'examples', 'receipts', 'agent'] as const;
export type DeviceTopicKind = (typeof DEVICE_TOPIC_KINDS)[number];
/**
 * The read/write rules of every broker (deploy/mosquitto/acl, the generated ACL, the embedded
 * broker's authorizer): a device writes only these of its own topics...
 */
export const DEVICE_WRITABLE_KINDS = ['status', 'telemetry', 'events', 'examples'] as const satisfies readonly DeviceTopicKind[];
/** ...and reads only these of its own (plus the global keyset, cloud info and artifact topics). */
export const DEVICE_READABLE_KINDS = ['desired', 'receipts', 'agent'] as const satisfies readonly DeviceTopicKind[];

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
  /** cloud → device, QoS 1, not retained: per-example `stored` / `refused` / `deferred` (receiptSchema). */
  receipts: (id: string) => topics.device(id, 'receipts'),
  /**
   * cloud → device, QoS 1, retained: the signed agent manifest (signedAgentManifestSchema, issue 14),
   * only to devices declaring `agent-update`. Apart from `desired`, so an agent update never replaces
   * the model's manifest.
   */
  agent: (id: string) => topics.device(id, 'agent'),
  /** cloud → every device, retained: the root-signed key set (signedKeySetSchema). */
  keyset: (): string => `${TOPIC_PREFIX}/trust/keyset`,
  /**
   * cloud → every device, retained: the cloud's protocol version and what it accepts from devices
   * (cloudInfoSchema). A device sends new fields only when this says the cloud understands them.
   */
  cloudInfo: (): string => `${TOPIC_PREFIX}/cloud`,
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
  | { type: 'artifact'; sha256: string; index: number }
  | { type: 'keyset' }
  | { type: 'cloud' };

/** Parses a concrete (non-wildcard) topic received from the broker; undefined when it is not ours. */
export function parseTopic(topic: string): ParsedTopic | undefined {
  if (topic === topics.keyset()) return { type: 'keyset' };
  if (topic === topics.cloudInfo()) return { type: 'cloud' };
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
