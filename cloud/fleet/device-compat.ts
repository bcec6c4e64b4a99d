import { eq } from 'drizzle-orm';
import { deviceCompat, type DeviceCompat } from '../../shared/protocol/index.js';
import type { StoreRegistry } from '../registry/open.js';

/**
 * Store access for the compatibility policy (shared/protocol/compat.ts): what a device said it
 * understands in its last online status. An unknown device, or one that never sent protocol-2
 * fields, is protocol 1 with no capabilities, and gets only today's fields and message kinds.
 */
export async function deviceCompatOf(registry: StoreRegistry, deviceId: string): Promise<DeviceCompat> {
  const { devices } = registry.t;
  const [row] = await registry.q.select({ protocolVersion: devices.protocolVersion, capabilities: devices.capabilities }).from(devices).where(eq(devices.id, deviceId));
  return deviceCompat(row ?? null);
}
