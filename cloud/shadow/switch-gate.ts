import type { ShadowDeviceRow, ShadowRunRow } from '../registry/schema.js';
import { REJECT_CLASSES } from '../rollouts/policy.js';
import type { NewShadowEval } from './store.js';

/**
 * Whether a shadow run switches (issue 13 item 4): THE SEAM. `ShadowRollouts` calls one
 * `ShadowSwitchGate` at the window's end (auto-switch) and shows its answer in the rollout view; an
 * operator's `apprentice rollout switch ID` overrides it. The default is {@link agreementGate}, on the
 * devices' own agreement figures. The teacher-labelled gate (teacher-gate.ts: the paired bound of
 * candidate − running accuracy with the disagreements labelled by the teacher) is combined with it by
 * {@link allGates} in cloud/server.ts, through `ShadowRolloutsDeps.gate`.
 */

export interface ShadowSwitchInput {
  run: ShadowRunRow;
  devices: readonly ShadowDeviceRow[];
  now: Date;
}

export type DeviceVerdict = 'pass' | 'fail' | 'no_evidence';

export interface ShadowSwitchDecision {
  switch: boolean;
  /** One line for the operator (the run's `reason`, the transition log). */
  reason: string;
  devices: { deviceId: string; verdict: DeviceVerdict; agreement: number | null; detail?: string }[];
  /**
   * Per-device figures recorded for the release the switch re-issues (shadow_evals rows of that release):
   * the switch rollout's agreement gate holds back the devices they show the candidate is worse for.
   */
  evidence?: NewShadowEval[];
}

export type ShadowSwitchGate = (input: ShadowSwitchInput) => Promise<ShadowSwitchDecision>;

/** Agreement of a device's report, or null with no shadowed example. */
export function agreementOf(d: Pick<ShadowDeviceRow, 'requests' | 'agreements'>): number | null {
  return d.requests > 0 ? d.agreements / d.requests : null;
}

/** A refusal the candidate is to blame for (load or self-test failure…: REJECT_CLASSES `failure`). */
function refusedForCause(d: ShadowDeviceRow): boolean {
  return d.state === 'refused' && (REJECT_CLASSES as Record<string, string>)[d.reason ?? ''] === 'failure';
}

/**
 * Passes when at least one device shadowed `minRequests` examples and every such device agreed on at
 * least `minAgreement` of them; devices with fewer are `no_evidence` and decide nothing. A device that
 * refused the candidate for a failure (load_failed, self_test_failed…) fails it.
 */
export const agreementGate: ShadowSwitchGate = async ({ run, devices }) => {
  const verdicts = devices
    .filter((d) => d.state !== 'incompatible' && d.state !== 'pending' && (d.state !== 'refused' || refusedForCause(d)))
    .map((d) => {
      if (d.state === 'refused') return { deviceId: d.deviceId, verdict: 'fail' as DeviceVerdict, agreement: null, detail: `refused: ${d.reason}` };
      const agreement = agreementOf(d);
      const verdict: DeviceVerdict = d.requests < run.minRequests ? 'no_evidence' : agreement! >= run.minAgreement ? 'pass' : 'fail';
      return { deviceId: d.deviceId, verdict, agreement };
    });
  const failed = verdicts.filter((v) => v.verdict === 'fail');
  const passed = verdicts.filter((v) => v.verdict === 'pass');
  const pct = (x: number) => `${Math.round(x * 1000) / 10}%`;
  const refused = failed.filter((v) => v.agreement === null);
  if (refused.length) return { switch: false, reason: `refused by ${refused.length} device(s) (${refused[0]!.deviceId}: ${refused[0]!.detail})`, devices: verdicts };
  if (failed.length) {
    const worst = failed.reduce((a, b) => (a.agreement! <= b.agreement! ? a : b));
    return { switch: false, reason: `agreement below ${pct(run.minAgreement)} on ${failed.length} device(s) (lowest ${worst.deviceId}: ${pct(worst.agreement!)})`, devices: verdicts };
  }
  if (!passed.length) return { switch: false, reason: `no evidence: no device shadowed ${run.minRequests} examples`, devices: verdicts };
  return { switch: true, reason: `agreement ≥ ${pct(run.minAgreement)} on ${passed.length} device(s) with ≥ ${run.minRequests} examples`, devices: verdicts };
};

const VERDICT_RANK: Record<DeviceVerdict, number> = { no_evidence: 0, pass: 1, fail: 2 };

/**
 * Switches only when every gate does; the reasons of those that refuse are joined. Each device's verdict
 * is the worst of the gates' that judged it (fail over pass over no evidence), their details joined; the
 * evidence rows of every gate are kept.
 */
export function allGates(...gates: ShadowSwitchGate[]): ShadowSwitchGate {
  return async (input) => {
    const out = await Promise.all(gates.map((g) => g(input)));
    const refused = out.filter((d) => !d.switch);
    const byDevice = new Map<string, ShadowSwitchDecision['devices'][number]>();
    for (const d of out.flatMap((o) => o.devices)) {
      const prev = byDevice.get(d.deviceId);
      if (!prev) {
        byDevice.set(d.deviceId, { ...d });
        continue;
      }
      if (VERDICT_RANK[d.verdict] > VERDICT_RANK[prev.verdict]) prev.verdict = d.verdict;
      prev.agreement ??= d.agreement;
      if (d.detail) prev.detail = prev.detail ? `${prev.detail}; ${d.detail}` : d.detail;
    }
    const evidence = out.flatMap((o) => o.evidence ?? []);
    return {
      switch: refused.length === 0,
      reason: (refused.length ? refused : out).map((d) => d.reason).join('; '),
      devices: [...byDevice.values()].sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0)),
      ...(evidence.length ? { evidence } : {}),
    };
  };
}
