export { SELECTION_REASONS, DEFAULT_SELECTION_CONFIG, selectionConfigSchema } from './config.js';
export type { SelectionConfig, SelectionConfigInput, SelectionReason } from './config.js';
export { scoreOutput, uncertaintyReason } from './policies.js';
export type { OutputScores } from './policies.js';
export { SlidingWindowCap, DedupeWindow } from './limits.js';
export { createSelector } from './selector.js';
export type { Selector, SelectorDeps, SelectInput, Selection, SelectorCounters, ReasonCounts } from './selector.js';
