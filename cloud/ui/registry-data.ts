import { listAudit, recordAudit } from '../audit/store.js';
import { fleetSummary, queryDevices } from '../fleet/device-query.js';
import { listDeviceEvents } from '../fleet/events-store.js';
import { telemetrySeries } from '../fleet/telemetry-history.js';
import type { Registry } from '../registry/db.js';
import type { ConsoleData } from './data.js';

/** The console's data from the registry's stores (cloud/fleet, cloud/audit). */
export function registryConsoleData(reg: Registry): ConsoleData {
  return {
    fleetSummary: () => fleetSummary(reg),
    queryDevices: (q) => queryDevices(reg, q),
    deviceEvents: (deviceId, limit) => listDeviceEvents(reg, { deviceId, limit }),
    telemetry: (deviceId, resolution) => telemetrySeries(reg, deviceId, { resolution }),
    recordAudit: (e) => recordAudit(reg, e),
    listAudit: (o) => listAudit(reg, o),
  };
}
