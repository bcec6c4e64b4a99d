export { createCloudApi, MIN_ADMIN_TOKEN_LENGTH } from './app.js';
export { startCloudServer, DEFAULT_CLOUD_HOST, DEFAULT_CLOUD_PORT, type CloudServer, type CloudServerOptions } from './server.js';
export {
  RoundInProgressError,
  RolloutNotFoundError,
  RolloutConflictError,
  RolloutRequestError,
  type CloudApiDeps,
  type CloudApiLimits,
  type RoundsService,
  type RolloutsService,
  type FleetHooks,
  type RolloutTarget,
  type CreateRolloutInput,
} from './types.js';
export { ApiError, errorBody, errorBodySchema, type ErrorBody } from './errors.js';
export { buildOpenApi } from './openapi.js';
export { modelBodySchema, distillSettingsSchema, scheduleSchema, type ModelBody } from './models.js';
export { createRolloutBodySchema } from './rollouts.js';
export { rolloutTargetSchema } from './schemas.js';
