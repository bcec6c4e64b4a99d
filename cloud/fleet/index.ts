export * from './broker.js';
export * from './mqtt.js';
export * from './publisher.js';
export * from './ingest.js';
export * from './rollout-store.js';
export * from './rollout-steps.js';
export * from './rollouts.js';
export * from './device-compat.js';
