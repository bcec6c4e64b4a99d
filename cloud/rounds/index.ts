/** Distillation rounds: transfer set → distil → evaluate → gate → export → sign → store → publish → roll out. */
export { RoundRunner, type RoundRunnerDeps, type RoundRunnerOptions } from './runner.js';
export { Scheduler, type SchedulerDeps } from './scheduler.js';
export { runRound, type RoundDeps } from './round.js';
export { allocateReleaseSeq, currentRelease, reissueRelease, releaseBySeq, signShadowManifest, RELEASE_SEQ_HIGH, ReleaseError, type ReissueOptions } from './releases.js';
export { gate, type GateDecision, type GateInput } from './gate.js';
export { hardRepeatFactor, mixTransferSet, type MixStats } from './mix.js';
export { buildReleaseManifest, releaseArtifactUrl, type ReleaseManifestInput } from './manifest.js';
export { distillSettingsSchema, scheduleSchema, parseRoundModel, RoundConfigError, type DistillSettings, type Schedule, type RoundModel } from './settings.js';
export { storeArtifact, readArtifact, writeFileAtomic, artifactRelPath } from './store.js';
export * from './types.js';
