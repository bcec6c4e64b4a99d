export * from './broker.js';
export * from './mqtt.js';
export * from './publisher.js';
export * from './ingest.js';
export * from './device-compat.js';
export * from './ingest-quota.js';
