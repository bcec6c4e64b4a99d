import type { RolloutEngine } from '../rollouts/engine.js';
import type { RoundRunner } from '../rounds/runner.js';
import type { RolloutsService, RoundsService } from './types.js';

/**
 * Compile-time checks (type-only imports: nothing is loaded at run time) that the real services plug
 * into `createCloudApi` without adapters. If one of these lines fails to compile, a module changed
 * the signature the API relies on: fix the service or the interface in types.ts, not this file.
 */
type Fits<Impl, Iface> = Impl extends Iface ? true : never;

export const roundRunnerFitsRoundsService: Fits<RoundRunner, RoundsService> = true;
export const rolloutEngineFitsRolloutsService: Fits<RolloutEngine, RolloutsService> = true;
