export { createSdNotify, watchdogUsec, type SdNotifier, type SdNotifyOptions } from '../../shared/systemd/sd-notify.js';
export { StatusPublisher, statusPayload, lastWill, AGENT, EDGE_CAPABILITIES, statusExtension, statusFieldsFor, type RunningRelease, type StatusExtension, type StatusPublisherDeps } from './status.js';
export { readAgentVersion, agentPlatform, UNKNOWN_VERSION } from './agent-version.js';
export { CloudInfoWatcher, type CloudInfoWatcherDeps } from './cloud-info.js';
export { InferenceStats, TelemetryPublisher, buildTelemetry, type InferenceStatsOptions, type TelemetrySources, type TelemetryPublisherDeps } from './telemetry.js';
