export * from './topics.js';
export * from './schemas.js';
export * from './codec.js';
export * from './receipts.js';
export * from './keyset.js';
export * from './compat.js';
export * from './agent.js';
