export { edgeConfigSchema, EDGE_DEFAULTS, EDGE_CONFIG_VERSION, BIND_RE, parseBind, isLoopbackHost, type EdgeConfig, type EdgeConfigInput } from './schema.js';
export { EDGE_ENV, ENV_PREFIX, envName, envHelp, applyEnv, type EnvEntry } from './env.js';
export { loadEdgeConfig, parseEdgeConfig, ConfigError, type LoadEdgeConfigOptions } from './load.js';
export { mqttClientOptions, type MqttWill } from './mqtt-options.js';
export { endClient, jitterReconnects } from './reconnect.js';
export { readApiToken } from './api-token.js';
