export { createSdNotify, watchdogUsec, type SdNotifier, type SdNotifyOptions } from '../../shared/systemd/sd-notify.js';
export { StatusPublisher, statusPayload, lastWill, AGENT, type RunningRelease, type StatusPublisherDeps } from './status.js';
export { InferenceStats, TelemetryPublisher, buildTelemetry, type InferenceStatsOptions, type TelemetrySources, type TelemetryPublisherDeps } from './telemetry.js';
