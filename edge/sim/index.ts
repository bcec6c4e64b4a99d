export { SharedSessions } from './sessions.js';
export { SimDevice, type SimDeviceOptions } from './device.js';
export { SimFleet, cloudCredentials, fetchTrustedKeys, type SimFleetOptions, type SimFleetStats, type SimCredentials } from './fleet.js';
