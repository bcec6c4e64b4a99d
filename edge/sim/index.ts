export { SharedSessions, FAULT_OFFSET } from './sessions.js';
export { SimDevice, type SimDeviceOptions } from './device.js';
export { SimFleet, cloudCredentials, fetchTrustedKeys, type SimFleetOptions, type SimFleetStats, type SimCredentials } from './fleet.js';
export { SimPool, type SimPoolOptions } from './pool.js';
export { pickedByShare, planDevice, simPlan, parseShare, type SimShares } from './shares.js';
