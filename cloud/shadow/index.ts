export { ShadowRollouts, DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_REQUESTS, type ShadowRolloutsDeps, type ShadowStartRequest, type ShadowView } from './service.js';
export { agreementGate, agreementOf, allGates, type DeviceVerdict, type ShadowSwitchDecision, type ShadowSwitchGate, type ShadowSwitchInput } from './switch-gate.js';
export { SHADOW_DEVICE_STATES, SHADOW_RUN_STATES, type ShadowDeviceState, type ShadowRunState } from './run-store.js';
export { teacherSwitchGate, modelTeacher, DEFAULT_SWITCH_MARGIN, type ModelTeacher, type TeacherGateDeps } from './teacher-gate.js';
