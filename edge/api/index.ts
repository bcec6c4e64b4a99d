export { createLocalApi, DEFAULT_BATCHING, type LocalApiDeps } from './app.js';
export { startLocalServer, type LocalServer, type LocalServerOptions } from './server.js';
export { DEFAULT_LIMITS, type FeedbackEvent, type FeedbackSink, type LocalApiLimits, type PredictionEvent, type ServingHost } from './context.js';
export { ApiError, errorBody, type ErrorBody } from './errors.js';
export { predictBodySchema, decodePredict, decodePredictBody, type DecodedPredict } from './decode.js';
export { feedbackBodySchema } from './feedback.js';
