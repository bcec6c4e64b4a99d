export * from './types.js';
export { UpdateManager } from './manager.js';
export { ArtifactFetcher, type ArtifactFetcherDeps, type FetchOptions, type FetchProgress, type FetchResult } from './fetch.js';
export { SlotStore, type SlotStoreDeps } from './slots.js';
export { UpdateStateStore, UpdateStateError, type UpdateState, type UpdateStateDeps } from './state.js';
export { PartialDownload } from './partial.js';
export { TrustStore, KeySetFollower, TrustStoreError, TRUST_FILE, KEYSET_WAIT_MS, type ApplyOutcome, type TrustStoreOptions } from './trust.js';
export { TimeFloor, TIME_FLOOR_FILE } from './time-floor.js';
