export * from './keys.js';
export * from './canonical.js';
export * from './sign.js';
export * from './artifact.js';
export * from './keyset.js';
export * from './assignment.js';
export * from './agent.js';
