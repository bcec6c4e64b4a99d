/**
 * Names devices may not take (issue 10, client identity). A device's MQTT client id is its device id,
 * so a device named like the cloud's client id, or like another device's legacy client id, could take
 * over that session on a broker that checks only client id = username.
 */
export const CLOUD_CLIENT_PREFIX = 'apprentice-cloud';
/** The daemon's client id before protocol revision 2; still accepted by the embedded broker for one release. */
export const LEGACY_EDGE_CLIENT_PREFIX = 'apprentice-edge-';

/** Why `id` cannot be a device id, or undefined when it can. Case-insensitive: brokers differ. */
export function reservedDeviceId(id: string): string | undefined {
  const lower = id.toLowerCase();
  if (lower.startsWith(CLOUD_CLIENT_PREFIX)) return `device ids starting with "${CLOUD_CLIENT_PREFIX}" are reserved for the cloud`;
  if (lower.startsWith(LEGACY_EDGE_CLIENT_PREFIX)) return `device ids starting with "${LEGACY_EDGE_CLIENT_PREFIX}" are reserved (legacy daemon client ids)`;
  return undefined;
}
