import type { z } from 'zod';
import type { shadowRowSchema } from '../../api/rounds.js';
import type { DeviceShadowView } from '../../rollouts/agreement.js';

/** Shadow evaluation in the console (issue 13 item 6): a round's figures per cohort and device, a rollout device's evidence. */

type ShadowRow = z.infer<typeof shadowRowSchema>;

/** Devices listed on a round page: the worst upper bounds first (the ones a rollout would hold back). */
export const SHADOW_DEVICES_SHOWN = 200;

const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)}%`);
const pts = (v: number | null | undefined): string => (v === null || v === undefined ? '—' : `${v >= 0 ? '+' : '−'}${Math.abs(v * 100).toFixed(1)}`);
const interval = (lo: number | null | undefined, hi: number | null | undefined): string => (lo === null || lo === undefined || hi === null || hi === undefined ? '' : ` [${pts(lo)}, ${pts(hi)}]`);

/** "−8.0 pts [−14.6, −1.4]": the change vs the running release with its paired 95% interval. */
export function deltaText(f: { delta?: number | null; deltaLow?: number | null; deltaHigh?: number | null }): string {
  return f.delta === null || f.delta === undefined ? '—' : `${pts(f.delta)} pts${interval(f.deltaLow, f.deltaHigh)}`;
}

/** A round's shadow evaluation: cohorts (pooled), then devices, worst upper bound first. */
export function ShadowTable({ rows }: { rows: ShadowRow[] }) {
  if (rows.length === 0) return <p class="muted" id="shadow">No shadow evaluation: no audit samples and no device running a release of this model.</p>;
  const cohorts = rows.filter((r) => r.scope === 'cohort');
  const devices = rows.filter((r) => r.scope === 'device').sort((a, b) => (a.deltaHigh ?? Infinity) - (b.deltaHigh ?? Infinity) || (a.deviceId! < b.deviceId! ? -1 : 1));
  const shown = devices.slice(0, SHADOW_DEVICES_SHOWN);
  return (
    <div id="shadow">
      <p class="muted">Candidate vs the release each device runs, on its newest audit samples, with the teacher as the label. Change: candidate − running accuracy, paired 95% interval.</p>
      <table>
        <thead>
          <tr><th style="width:28%">Device / cohort</th><th class="hide-sm">Samples</th><th>Candidate</th><th>Running</th><th class="hide-sm">Agreement</th><th style="width:22%">Change</th><th class="hide-sm">Judged by</th></tr>
        </thead>
        <tbody>
          {[...cohorts, ...shown].map((r) => (
            <tr data-shadow={r.scope === 'cohort' ? `cohort:${r.cohort ?? 'base'}` : `device:${r.deviceId}`}>
              <td class="id">{r.scope === 'cohort' ? <strong>cohort {r.cohort ?? 'base'}</strong> : <a href={`/ui/devices/${encodeURIComponent(r.deviceId!)}`}>{r.deviceId}</a>}</td>
              <td class="hide-sm">{r.samples}</td>
              <td>{pct(r.candidateAccuracy)}</td>
              <td>{r.runningSeq !== null ? `#${r.runningSeq} ` : ''}{pct(r.runningAccuracy)}</td>
              <td class="hide-sm">{pct(r.agreement)}</td>
              <td>{deltaText(r)}</td>
              <td class="hide-sm">{r.scope === 'cohort' ? '' : r.judgedBy === 'none' ? 'no evidence' : (r.judgedBy ?? '')}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {devices.length > shown.length ? <p class="muted">{shown.length} of {devices.length} devices (lowest upper bound first).</p> : null}
    </div>
  );
}

/** A rollout device's shadow cell: its figures and where they come from, or "no evidence". */
export function ShadowCell({ v }: { v: DeviceShadowView | undefined }) {
  if (!v || v.evidence === 'none') return <span class="muted" title={v?.reason ?? 'no shadow evaluation'} data-evidence="none">no evidence</span>;
  return (
    <span title={v.reason} data-evidence={v.evidence} class={v.hold ? 'error' : ''}>
      {deltaText(v)} on {v.samples} {v.evidence === 'cohort' ? '(cohort)' : ''}
    </span>
  );
}
