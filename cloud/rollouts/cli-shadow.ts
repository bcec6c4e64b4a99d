import { z } from 'zod';
import { parseNumber, parsePositiveInt } from '../../shared/cli/errors.js';

/**
 * The CLI's side of on-device shadow runs (issue 13 item 4): `rollout create --shadow MINUTES`, `rollout
 * status|abort shadow-…` and `rollout switch ID` print a run with this summary.
 */

/** What the CLI reads of a shadow run (`GET /v1/rollouts/shadow-…`); loose: a newer cloud may add fields. */
export const shadowRunSchema = z.object({
  id: z.string(),
  kind: z.literal('shadow'),
  model: z.string(),
  release: z.number(),
  shadowRelease: z.number(),
  until: z.string(),
  state: z.string(),
  reason: z.string().nullable(),
  autoSwitch: z.boolean(),
  minAgreement: z.number(),
  minRequests: z.number(),
  switchedRelease: z.number().nullable(),
  rolloutId: z.string().nullable(),
  gate: z.object({ switch: z.boolean(), reason: z.string() }),
  devices: z.array(
    z.object({
      deviceId: z.string(),
      state: z.string(),
      requests: z.number(),
      agreement: z.number().nullable(),
      latencyMs: z.object({ p50: z.number().nullable(), p95: z.number().nullable() }),
      verdict: z.string().nullable(),
      /** The gate's figures for the device (the teacher-labelled disagreements); absent from older clouds. */
      detail: z.string().nullable().optional(),
    }),
  ),
});
export type ShadowRun = z.infer<typeof shadowRunSchema>;

export const isShadowRunId = (id: string): boolean => id.startsWith('shadow-');

const pct = (x: number | null): string => (x === null ? '—' : `${(x * 100).toFixed(1)}%`);
const ms = (x: number | null): string => (x === null ? '—' : `${x.toFixed(2)} ms`);

export function shadowSummary(r: ShadowRun): string {
  const head = `shadow ${r.id}: model ${r.model} release ${r.release} (shadow manifest ${r.shadowRelease}), ${r.state}${r.reason ? ` — ${r.reason}` : ''}`;
  const auto = r.autoSwitch ? `switches by itself at the end when every device with ≥ ${r.minRequests} examples agrees ≥ ${pct(r.minAgreement)}` : 'no automatic switch';
  const lines = [head, `  window until ${r.until} (${auto}); gate: ${r.gate.switch ? 'pass' : 'not passed'} (${r.gate.reason})`];
  if (r.switchedRelease !== null) lines.push(`  switched: release ${r.switchedRelease}, rollout ${r.rolloutId}`);
  for (const d of r.devices) lines.push(`  ${d.deviceId}: ${d.state}, ${d.requests} shadowed, agreement ${pct(d.agreement)}, p50 ${ms(d.latencyMs.p50)}, p95 ${ms(d.latencyMs.p95)}${d.verdict ? `, ${d.verdict}` : ''}${d.detail ? ` (${d.detail})` : ''}`);
  return lines.join('\n') + '\n';
}

/** `--shadow`, `--shadow-min-agreement`, `--shadow-min-requests`, `--no-auto-switch` → the API's `shadow` option. */
export function shadowOption(f: { shadow?: number; shadowMinAgreement?: number; shadowMinRequests?: number; autoSwitch?: boolean }): Record<string, unknown> | undefined {
  if (f.shadow === undefined) return undefined;
  return {
    minutes: f.shadow,
    ...(f.shadowMinAgreement !== undefined ? { minAgreement: f.shadowMinAgreement } : {}),
    ...(f.shadowMinRequests !== undefined ? { minRequests: f.shadowMinRequests } : {}),
    ...(f.autoSwitch === false ? { autoSwitch: false } : {}),
  };
}

export const shadowFlags = {
  minutes: (v: string) => parsePositiveInt('--shadow', v),
  agreement: (v: string) => parseNumber('--shadow-min-agreement', v, { min: 0, max: 1 }),
  requests: (v: string) => parsePositiveInt('--shadow-min-requests', v),
};
