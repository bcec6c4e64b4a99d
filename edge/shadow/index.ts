export { ShadowRunner, SHADOW_DROP_REASONS, type ShadowDisagreement, type ShadowDropReason, type ShadowRunnerDeps } from './runner.js';
export { disagreementsToOutbox } from './examples.js';
