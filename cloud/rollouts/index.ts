export * from './policy.js';
export * from './store.js';
export * from './steps.js';
export * from './engine.js';
export * from './keyset.js';
