export * from './errors.js';
export * from './session.js';
export * from './host.js';
export * from './health.js';
export * from './batcher.js';
